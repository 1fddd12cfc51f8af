"""Multi-scale RoIAlign of a batch of fixed-size box sets, traceable with a free batch size.

The pooling is ``torchvision.ops.MultiScaleRoIAlign``'s (same numbers): each box is read
from the pyramid level of the FPN heuristic ``floor(4 + log2(sqrt(area) / 224))``, clamped
to the levels there are, with ``roi_align`` (``aligned=False``). Unlike that module, it
takes the boxes as one ``(B, N, 4)`` tensor rather than a Python list of per-image tensors
and the strides rather than sizes inferred from the image shape: a list is unrolled to the
example's batch size and the image shape is baked in as a constant when the head is traced
for ONNX, so a graph exported with a free batch or image size read the wrong boxes at other
shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

CANONICAL_SCALE, CANONICAL_LEVEL, LEVEL_EPS = 224.0, 4, 1e-6  # torchvision's LevelMapper


def box_levels(boxes: Tensor, strides: Sequence[int]) -> Tensor:
    """Index into ``strides`` of the level each box ``(..., 4)`` xyxy pixels is read from:
    ``floor(4 + log2(sqrt(area) / 224) + 1e-6)`` clamped to ``[log2 s_min, log2 s_max]``,
    minus ``log2 s_min``; int64, shape ``(...)``."""
    k_min, k_max = round(math.log2(strides[0])), round(math.log2(strides[-1]))
    wh = boxes[..., 2:] - boxes[..., :2]
    size = (wh[..., 0] * wh[..., 1]).sqrt()
    level = torch.floor(CANONICAL_LEVEL + torch.log2(size / CANONICAL_SCALE)
                        + torch.tensor(LEVEL_EPS, dtype=size.dtype))
    return (level.clamp(min=k_min, max=k_max).to(torch.int64) - k_min)


def multiscale_roi_align(feats: Sequence[Tensor], boxes: Tensor, strides: Sequence[int],
                         output_size: int, sampling_ratio: int) -> Tensor:
    """RoI features of every box of every image.

    Args:
        feats: per level ``(B, C, H_l, W_l)``, finest first, at ``strides`` (powers of two,
            consecutive levels).
        boxes: ``(B, N, 4)`` xyxy pixels of the input.
        output_size: ``S`` of the ``S x S`` crops; ``sampling_ratio``: samples per bin side.

    Returns:
        ``(B * N, C, S, S)`` in ``feats``' dtype, image-major (box ``n`` of image ``b`` at
        ``b * N + n``).
    """
    b, n = boxes.shape[:2]
    flat = boxes.reshape(-1, 4).to(feats[0].dtype)
    image = torch.arange(b, device=boxes.device).repeat_interleave(n)
    rois = torch.cat([image[:, None].to(flat.dtype), flat], dim=1)  # (B*N, 5)
    if len(feats) == 1:
        return roi_align(feats[0], rois, output_size, 1.0 / strides[0], sampling_ratio)
    levels = box_levels(flat, strides)
    out = flat.new_zeros((rois.shape[0], feats[0].shape[1], output_size, output_size))
    for level, (f, s) in enumerate(zip(feats, strides)):
        idx = torch.where(levels == level)[0]
        out = out.index_put((idx,), roi_align(f, rois[idx], output_size, 1.0 / s,
                                              sampling_ratio).to(out.dtype))
    return out


__all__ = ["box_levels", "multiscale_roi_align"]
