"""Boxes as a diffusion signal (DiffusionDet, Chen et al. 2023, Sec. 4.2).

A box set is a tensor ``(B, N, 4)`` of normalised ``cxcywh`` (fractions of the padded input)
mapped affinely to ``[-scale, scale]`` (the *signal scale*; 2.0 in the paper): the same range
as the standard normal noise it is mixed with, so that the noise really destroys it at large
``t``. Training pads each image's ground truths with random boxes to a fixed count ``N``
(the head works on a fixed-size set); inference drops low-scoring boxes and refills the set
with fresh noise (*box renewal*) so that the count stays ``N``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scaledet.ops import box_convert

PAD_STD = 1 / 6  # padding boxes: cx, cy, w, h ~ N(0.5, 1/6), so 99.7 % fall inside the image
MIN_SIZE = 1e-4  # smallest normalised width/height of a padding box
DELTA_WEIGHTS = (2.0, 2.0, 1.0, 1.0)  # Sparse R-CNN's (wx, wy, ww, wh)
MAX_LOG_SCALE = math.log(1000.0 / 16)  # clamp of dw, dh: a stage grows a box at most ~60x


def box_to_signal(cxcywh: Tensor, scale: float) -> Tensor:
    """Normalised ``cxcywh`` in ``[0, 1]`` -> signal ``(2 b - 1) scale``, same shape."""
    return (cxcywh * 2 - 1) * scale


def signal_to_box(x: Tensor, scale: float) -> Tensor:
    """Signal -> normalised ``cxcywh``: clamped to ``[-scale, scale]`` first, so the head
    always sees boxes whose centre lies in the image and whose size is at most the image's."""
    return (x.clamp(-scale, scale) / scale + 1) / 2


def pad_boxes(gt: Tensor, num_boxes: int, generator: torch.Generator | None = None) -> Tensor:
    """DiffusionDet's ``prepare_diffusion_concat``: a fixed-size box set holding the ground truths.

    Args:
        gt: ``(M, 4)`` ground truths of one image, normalised ``cxcywh``.
        num_boxes: ``N``, the size of the set.
        generator: for the padding boxes and the subset (global RNG if None).

    Returns:
        ``(N, 4)`` normalised ``cxcywh``: the ``M`` ground truths first, then ``N - M``
        Gaussian boxes (centre and size ~ ``N(0.5, 1/6)``, sizes at least ``MIN_SIZE``);
        ``N`` randomly chosen ground truths when ``M > N``.
    """
    m = gt.shape[0]
    if m > num_boxes:
        keep = torch.randperm(m, generator=generator, device="cpu")[:num_boxes]
        return gt[keep.to(gt.device)]
    pad = torch.randn(num_boxes - m, 4, generator=generator, device="cpu").to(gt) * PAD_STD + 0.5
    pad[:, 2:] = pad[:, 2:].clamp(min=MIN_SIZE)
    return torch.cat([gt, pad])  # (N, 4)


def renew_boxes(x: Tensor, scores: Tensor, threshold: float, noise: Tensor) -> Tensor:
    """Box renewal: boxes whose best class score is at most ``threshold`` restart from noise.

    Args:
        x: ``(B, N, 4)`` box signals after a sampler step.
        scores: ``(B, N, C)`` class probabilities of the prediction that step used.
        threshold: the renewal score threshold (the paper's 0.5).
        noise: ``(B, N, 4)`` standard normal signals to refill with.

    Returns:
        ``(B, N, 4)``: the kept boxes in place and fresh noise elsewhere; the count stays ``N``.
    """
    keep = scores.max(-1).values > threshold  # (B, N)
    return torch.where(keep[..., None], x, noise)


def apply_deltas(deltas: Tensor, boxes: Tensor) -> Tensor:
    """Refine ``boxes`` ``(..., 4)`` xyxy pixels by R-CNN deltas ``(..., 4)`` (``dx, dy`` in
    box sizes, ``dw, dh`` log-scales, divided by :data:`DELTA_WEIGHTS`); xyxy pixels."""
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    cx, cy = boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h
    wx, wy, ww, wh = DELTA_WEIGHTS
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=MAX_LOG_SCALE)
    dh = (deltas[..., 3] / wh).clamp(max=MAX_LOG_SCALE)
    cx, cy = cx + dx * w, cy + dy * h
    w, h = w * dw.exp(), h * dh.exp()
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def to_pixels(cxcywh: Tensor, size: Tensor) -> Tensor:
    """Normalised ``cxcywh`` ``(..., 4)`` -> xyxy pixels; ``size`` is ``(W, H, W, H)``."""
    return box_convert(cxcywh, "cxcywh", "xyxy") * size


def to_normalised(xyxy: Tensor, size: Tensor) -> Tensor:
    """xyxy pixels ``(..., 4)`` -> normalised ``cxcywh``; ``size`` is ``(W, H, W, H)``."""
    return box_convert(xyxy.float(), "xyxy", "cxcywh") / size
