"""Label assignment for dense (point-based) detectors: which ground-truth box, if any, each
location is responsible for.

An assigner is a callable
``assigner(points, strides, level_sizes, gt_boxes) -> matched`` where

- ``points``: ``(P, 2)`` xy pixel centres of all locations, levels concatenated finest first;
- ``strides``: ``(P,)`` stride (pixels) of each location's level;
- ``level_sizes``: number of locations per level (sums to ``P``);
- ``gt_boxes``: ``(N, 4)`` xyxy pixels;
- ``matched``: ``(P,)`` int64 index into ``gt_boxes``, ``-1`` for background.

A location inside several boxes takes the smallest one (FCOS) or the best-overlapping one
(ATSS). Both work on ``(P, N)`` matrices, so many boxes per image cost memory ``O(P N)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from scaledet.ops import box_iou

INF = math.inf


def _distances_to_sides(points: Tensor, gt_boxes: Tensor) -> Tensor:
    """``(P, N, 4)`` ltrb distances from each point to each box (negative outside)."""
    x, y = points[:, 0, None], points[:, 1, None]
    return torch.stack([x - gt_boxes[:, 0], y - gt_boxes[:, 1],
                        gt_boxes[:, 2] - x, gt_boxes[:, 3] - y], dim=-1)


def _background(points: Tensor) -> Tensor:
    return torch.full((points.shape[0],), -1, dtype=torch.int64, device=points.device)


class FCOSAssigner:
    """FCOS assignment (Tian et al., ICCV 2019) with centre sampling.

    A location is a candidate for a box when (1) it lies inside the box, (2) with centre
    sampling, it also lies within ``radius * stride`` of the box centre (the region clipped to
    the box), and (3) the largest of its four distances to the box sides falls in its level's
    ``regress_ranges`` (so each level handles one range of object sizes). Among candidate boxes
    the one with the smallest area wins.

    Args:
        regress_ranges: ``(low, high)`` pixels per level, finest first; FCOS's are
            ``(0, 64), (64, 128), (128, 256), (256, 512), (512, inf)`` for P3-P7.
        center_sampling: use condition (2).
        radius: centre-sampling radius in strides (1.5 in FCOS).
    """

    def __init__(self, *, regress_ranges: Sequence[Sequence[float]] = ((0, 64), (64, 128),
                                                                        (128, INF)),
                 center_sampling: bool = True, radius: float = 1.5) -> None:
        self.regress_ranges = [tuple(float(v) for v in r) for r in regress_ranges]
        self.center_sampling = center_sampling
        self.radius = radius

    def __call__(self, points: Tensor, strides: Tensor, level_sizes: Sequence[int],
                 gt_boxes: Tensor) -> Tensor:
        if len(level_sizes) != len(self.regress_ranges):
            raise ValueError(f"FCOSAssigner has {len(self.regress_ranges)} regress_ranges but the "
                             f"head has {len(level_sizes)} levels")
        if gt_boxes.shape[0] == 0:
            return _background(points)
        ltrb = _distances_to_sides(points, gt_boxes)
        ok = ltrb.amin(dim=-1) > 0
        if self.center_sampling:
            ok &= self._in_center_region(points, strides, gt_boxes)
        ranges = torch.tensor([r for r, n in zip(self.regress_ranges, level_sizes)
                               for _ in range(n)], dtype=ltrb.dtype, device=points.device)
        max_side = ltrb.amax(dim=-1)
        ok &= (max_side >= ranges[:, :1]) & (max_side <= ranges[:, 1:])
        area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
        area = torch.where(ok, area.expand_as(ok), torch.full_like(ltrb[..., 0], INF))
        min_area, matched = area.min(dim=1)
        return torch.where(torch.isinf(min_area), -1, matched)

    def _in_center_region(self, points: Tensor, strides: Tensor, gt_boxes: Tensor) -> Tensor:
        centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # (N, 2)
        r = (self.radius * strides)[:, None, None]  # (P, 1, 1)
        lo = torch.maximum(centers - r, gt_boxes[:, :2])  # (P, N, 2), clipped to the box
        hi = torch.minimum(centers + r, gt_boxes[:, 2:])
        p = points[:, None, :]
        return ((p > lo) & (p < hi)).all(dim=-1)


class ATSSAssigner:
    """Adaptive training sample selection (Zhang et al., CVPR 2020), for anchor-free points.

    Each location carries a square "anchor" of side ``anchor_scale * stride``. For each box:
    take on every level the ``topk`` locations whose centres are closest to the box centre,
    compute the IoU of their anchors with the box, and keep those with IoU
    ``>= mean + std`` (of the candidates' IoUs) whose centre lies inside the box. A location
    kept by several boxes takes the one of highest IoU. The threshold adapts to each object's
    size and shape, with no per-level size ranges to tune.

    With ``min_one_positive`` (default), a box left without any location (a box smaller than
    the finest stride may contain no location centre) gets its best-IoU candidate (the nearest
    one on ties), so tiny objects are still learned; that location's predicted box then cannot
    fit exactly, since it always contains its own centre.
    """

    def __init__(self, *, topk: int = 9, anchor_scale: float = 8.0,
                 min_one_positive: bool = True) -> None:
        self.topk = topk
        self.anchor_scale = anchor_scale
        self.min_one_positive = min_one_positive

    def __call__(self, points: Tensor, strides: Tensor, level_sizes: Sequence[int],
                 gt_boxes: Tensor) -> Tensor:
        if gt_boxes.shape[0] == 0:
            return _background(points)
        half = (self.anchor_scale * strides / 2)[:, None]
        anchors = torch.cat([points - half, points + half], dim=1)
        ious = box_iou(anchors, gt_boxes)  # (P, N)
        centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        dist = torch.cdist(points, centers)  # (P, N)
        candidates = []
        start = 0
        for n in level_sizes:
            k = min(self.topk, n)
            candidates.append(dist[start:start + n].topk(k, dim=0, largest=False).indices + start)
            start += n
        cand = torch.cat(candidates, dim=0)  # (K, N) location indices
        cand_iou = ious.gather(0, cand)
        threshold = cand_iou.mean(dim=0) + cand_iou.std(dim=0).nan_to_num(0.0)  # K=1: std NaN
        inside = _distances_to_sides(points, gt_boxes).amin(dim=-1) > 0  # (P, N)
        keep = (cand_iou >= threshold) & inside.gather(0, cand)
        if self.min_one_positive:
            orphans = ~keep.any(dim=0)  # (N,)
            best = cand_iou.argmax(dim=0)
            keep[best[orphans], orphans.nonzero().squeeze(1)] = True
        score = torch.full_like(ious, -INF)
        cols = torch.arange(gt_boxes.shape[0], device=points.device).expand_as(cand)
        score[cand[keep], cols[keep]] = ious[cand[keep], cols[keep]]
        best, matched = score.max(dim=1)
        return torch.where(torch.isinf(best), -1, matched)
