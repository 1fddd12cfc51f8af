"""Multi-scale RoIAlign of a batch of fixed-size box sets, traceable with a free batch size.

The pooling is ``torchvision.ops.MultiScaleRoIAlign``'s (same numbers): each box is read
from the pyramid level of the FPN heuristic ``floor(4 + log2(sqrt(area) / 224))``, clamped
to the levels there are, with ``roi_align`` (``aligned=False``). Unlike that module, it
takes the boxes as one ``(B, N, 4)`` tensor rather than a Python list of per-image tensors
and the strides rather than sizes inferred from the image shape: a list is unrolled to the
example's batch size and the image shape is baked in as a constant when the head is traced
for ONNX, so a graph exported with a free batch or image size read the wrong boxes at other
shapes.

:func:`multiscale_roi_sample` gives the same numbers as one sparse matrix product, for
training and eager inference. Why not ``roi_align`` there: on a CPU its backward scatters one
bilinear sample per channel and costs several times the rest of a DiffusionDet stage, and its
``(K, C, S, S)`` output has to be transposed for the stage's ``(K, S*S, C)`` layout. Here every
level is one table of feature rows ``(B * T, C)`` (``T`` cells over all levels), each RoI cell
a row of a sparse matrix with the bilinear weights of its samples, and the features of all
RoIs one ``torch.sparse.mm`` whose backward is the transposed product. Sparse products do not
export to ONNX, so the exported graph keeps :func:`multiscale_roi_align`.
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


def _axis_samples(start: Tensor, length: Tensor, size: Tensor, output_size: int,
                  sampling_ratio: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``roi_align``'s samples along one axis of boxes starting at ``start`` with ``length``
    (level cells, ``(...)``) on a level of ``size`` cells: ``(lo, hi, w_lo, w_hi)``, each
    ``(..., S * r)``, the two neighbouring cells and their bilinear weights (0 outside
    ``[-1, size]``, clamped to the border within it, as ``roi_align``)."""
    bin_size = length.clamp(min=1.0) / output_size  # (...)
    step = torch.arange(output_size * sampling_ratio, dtype=start.dtype, device=start.device)
    pos = start[..., None] + (step + 0.5) * (bin_size[..., None] / sampling_ratio)
    size = size[..., None].to(start.dtype)
    valid = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    lo = pos.floor().clamp(max=size - 1)
    at_edge = lo >= size - 1
    pos = torch.where(at_edge, lo, pos)
    hi = torch.where(at_edge, lo, lo + 1)
    frac = pos - lo
    return (lo.long(), hi.long(), (1 - frac) * valid, frac * valid)


def feature_table(feats: Sequence[Tensor]) -> Tensor:
    """The rows :func:`multiscale_roi_sample` reads: every cell of every level of every image,
    ``(B * T, C)`` float32 (image-major, then level, then row-major cells). Build it once for
    several samplings of the same features (the stages of a denoising step)."""
    table = torch.cat([f.flatten(2) for f in feats], dim=2)  # (B, C, T)
    return table.transpose(1, 2).reshape(-1, table.shape[1]).float()  # (B*T, C)


def multiscale_roi_sample(feats: Sequence[Tensor], boxes: Tensor, strides: Sequence[int],
                          output_size: int, sampling_ratio: int,
                          table: Tensor | None = None) -> Tensor:
    """:func:`multiscale_roi_align`'s RoI features (same level choice, same samples and
    weights; ``sampling_ratio >= 1``) as one sparse product, cell-major: ``(B * N, S * S, C)``
    float32, box ``n`` of image ``b`` at ``b * N + n``, cell ``(i, j)`` (row, column) at
    ``i * S + j``. ``table``: :func:`feature_table` of ``feats`` if already built. The gradient
    reaches ``feats``, not ``boxes``."""
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be at least 1, got {sampling_ratio}")
    b, n = boxes.shape[:2]
    s, r = output_size, sampling_ratio
    device = boxes.device
    table = feature_table(feats) if table is None else table  # (B*T, C)
    t_cells = table.shape[0] // b
    with torch.no_grad():
        heights = torch.tensor([f.shape[-2] for f in feats], device=device)
        widths = torch.tensor([f.shape[-1] for f in feats], device=device)
        offsets = torch.cumsum(heights * widths, 0) - heights * widths  # first cell per level
        level = box_levels(boxes.float(), strides)  # (B, N)
        scale = 1.0 / torch.tensor([float(st) for st in strides], device=device)[level]
        xyxy = boxes.float() * scale[..., None]
        h, w = heights[level], widths[level]
        y0, y1, wy0, wy1 = _axis_samples(xyxy[..., 1], xyxy[..., 3] - xyxy[..., 1], h, s, r)
        x0, x1, wx0, wx1 = _axis_samples(xyxy[..., 0], xyxy[..., 2] - xyxy[..., 0], w, s, r)
        # (B, N, S*r) per axis -> (B, N, S, r) -> every (row, column) pair of samples
        ys = torch.stack([y0, y1], -1).view(b, n, s, 1, r, 1, 2, 1)
        xs = torch.stack([x0, x1], -1).view(b, n, 1, s, 1, r, 1, 2)
        wys = torch.stack([wy0, wy1], -1).view(b, n, s, 1, r, 1, 2, 1)
        wxs = torch.stack([wx0, wx1], -1).view(b, n, 1, s, 1, r, 1, 2)
        base = (torch.arange(b, device=device) * t_cells)[:, None] + offsets[level]  # (B, N)
        cols = base.view(b, n, 1, 1, 1, 1, 1, 1) + ys * w.view(b, n, 1, 1, 1, 1, 1, 1) + xs
        weights = wys * wxs / (r * r)  # (B, N, S, S, r, r, 2, 2)
        per_row = 4 * r * r
        rows = torch.arange(b * n * s * s, device=device).repeat_interleave(per_row)
        matrix = torch.sparse_coo_tensor(torch.stack([rows, cols.reshape(-1)]),
                                         weights.reshape(-1), (b * n * s * s, b * t_cells),
                                         check_invariants=False)
    with torch.autocast(device.type, enabled=False):  # autocast would cast the table only
        out = torch.sparse.mm(matrix, table)
    return out.view(b * n, s * s, -1)  # (B*N, S*S, C)


__all__ = ["box_levels", "feature_table", "multiscale_roi_align", "multiscale_roi_sample"]
