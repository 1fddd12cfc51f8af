"""Label assignment for dense (point-based) detectors: which ground-truth box, if any, each
location is responsible for.

Every assigner, static or dynamic, has one method the heads call,
``assigner.assign(points, strides, level_sizes, gt_boxes, gt_labels, gt_valid, pred_boxes,
pred_scores) -> Assignment`` (see :class:`Assigner`): the geometric assigners here ignore the
predictions, the dynamic ones (:class:`~scaledet.models.tal.TaskAlignedAssigner`,
:class:`~scaledet.models.simota.SimOTAAssigner`) rank candidates by them and also return a
soft target per positive. The geometric assigners are also plain callables
``assigner(points, strides, level_sizes, gt_boxes, gt_valid=None) -> matched`` where

- ``points``: ``(P, 2)`` xy pixel centres of all locations, levels concatenated finest first;
- ``strides``: ``(P,)`` stride (pixels) of each location's level;
- ``level_sizes``: number of locations per level (sums to ``P``);
- ``gt_boxes``: ``(N, 4)`` xyxy pixels of one image, or ``(B, N, 4)`` for a batch padded to a
  common ``N``, with ``gt_valid`` ``(B, N)`` bool marking the real boxes;
- ``matched``: ``(P,)`` (or ``(B, P)``) int64 index into ``gt_boxes``, ``-1`` for background.

A location inside several boxes takes the smallest one (FCOS) or the best-overlapping one
(ATSS). The whole batch is assigned at once on ``(B, P, N)`` tensors: a few dozen tensor ops
per batch rather than per image, which matters on a busy CPU where every op can wait for a
thread. Memory is ``O(B P N)``; ``assign`` splits big batches into chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from scaledet.ops import box_iou

INF = math.inf
# Elements of the largest (B, P, N, 4) temporaries per chunk of images (float32: 64 MB).
_ASSIGN_BUDGET = 2**24


@dataclass
class Assignment:
    """An assigner's decision for a padded batch of ``B`` images and ``P`` locations.

    Attributes:
        matched: ``(B, P)`` int64 index into each image's ``N`` padded boxes, ``-1`` for
            background.
        quality: ``(B, P)`` float soft target of each positive computed by the assigner
            from the predictions (TOOD's normalised alignment, SimOTA's IoU; 0 elsewhere),
            or None when the head computes its own (the geometric assigners).
    """

    matched: Tensor
    quality: Tensor | None = None


class Assigner(Protocol):
    """What a dense head asks of its assigner."""

    def assign(self, points: Tensor, strides: Tensor, level_sizes: Sequence[int],
               gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor, pred_boxes: Tensor,
               pred_scores: Tensor) -> Assignment:
        """Args: ``points (P, 2)`` xy pixels, ``strides (P,)``, ``level_sizes`` locations per
        level, ``gt_boxes (B, N, 4)`` xyxy pixels, ``gt_labels (B, N)`` int64, ``gt_valid
        (B, N)`` bool, ``pred_boxes (B, P, 4)`` xyxy pixels (detached), ``pred_scores
        (B, P, C)`` probabilities (detached)."""
        ...


def _distances_to_sides(points: Tensor, gt_boxes: Tensor) -> Tensor:
    """``(B, P, N, 4)`` ltrb distances from each point ``(P, 2)`` to each box ``(B, N, 4)``
    (negative outside)."""
    x, y = points[None, :, 0, None], points[None, :, 1, None]  # (1, P, 1)
    g = gt_boxes[:, None]  # (B, 1, N, 4)
    return torch.stack([x - g[..., 0], y - g[..., 1], g[..., 2] - x, g[..., 3] - y], dim=-1)


class _BatchedAssigner:
    """Accepts one image's ``(N, 4)`` boxes or a padded batch; subclasses implement
    ``_assign(points, strides, level_sizes, gt_boxes (B, N, 4), gt_valid (B, N)) -> (B, P)``
    for ``N >= 1``."""

    def __call__(self, points: Tensor, strides: Tensor, level_sizes: Sequence[int],
                 gt_boxes: Tensor, gt_valid: Tensor | None = None) -> Tensor:
        single = gt_boxes.dim() == 2
        if single:
            gt_boxes = gt_boxes[None]
        if gt_valid is None:
            gt_valid = torch.ones(gt_boxes.shape[:2], dtype=torch.bool, device=gt_boxes.device)
        if sum(level_sizes) != points.shape[0]:
            raise ValueError(f"level_sizes sum to {sum(level_sizes)} but there are "
                             f"{points.shape[0]} points")
        if gt_boxes.shape[1] == 0:
            matched = torch.full((gt_boxes.shape[0], points.shape[0]), -1, dtype=torch.int64,
                                 device=points.device)
        else:
            matched = self._assign(points, strides, level_sizes, gt_boxes.to(points.dtype),
                                   gt_valid)
        return matched[0] if single else matched

    def assign(self, points: Tensor, strides: Tensor, level_sizes: Sequence[int],
               gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor, pred_boxes: Tensor,
               pred_scores: Tensor) -> Assignment:
        """:class:`Assigner` interface: geometry only, in chunks of images whose
        ``(B, P, N, 4)`` temporaries stay under ~64 MB (many boxes per image)."""
        per_image = points.shape[0] * max(gt_boxes.shape[1], 1) * 4
        chunk = max(1, _ASSIGN_BUDGET // per_image)
        return Assignment(torch.cat([self(points, strides, level_sizes, g, v) for g, v in
                                     zip(gt_boxes.split(chunk), gt_valid.split(chunk))]))

    def _assign(self, points: Tensor, strides: Tensor, level_sizes: Sequence[int],
                gt_boxes: Tensor, gt_valid: Tensor) -> Tensor:
        raise NotImplementedError


class FCOSAssigner(_BatchedAssigner):
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

    def _assign(self, points: Tensor, strides: Tensor, level_sizes: Sequence[int],
                gt_boxes: Tensor, gt_valid: Tensor) -> Tensor:
        if len(level_sizes) != len(self.regress_ranges):
            raise ValueError(f"FCOSAssigner has {len(self.regress_ranges)} regress_ranges but the "
                             f"head has {len(level_sizes)} levels")
        ltrb = _distances_to_sides(points, gt_boxes)  # (B, P, N, 4)
        ok = (ltrb.amin(dim=-1) > 0) & gt_valid[:, None, :]
        if self.center_sampling:
            ok &= self._in_center_region(points, strides, gt_boxes)
        ranges = torch.tensor([r for r, n in zip(self.regress_ranges, level_sizes)
                               for _ in range(n)], dtype=ltrb.dtype, device=points.device)
        max_side = ltrb.amax(dim=-1)
        ok &= (max_side >= ranges[None, :, :1]) & (max_side <= ranges[None, :, 1:])
        area = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])
        area = torch.where(ok, area[:, None, :], INF)  # (B, P, N)
        min_area, matched = area.min(dim=2)
        return torch.where(torch.isinf(min_area), -1, matched)

    def _in_center_region(self, points: Tensor, strides: Tensor, gt_boxes: Tensor) -> Tensor:
        centers = (gt_boxes[..., :2] + gt_boxes[..., 2:])[:, None] / 2  # (B, 1, N, 2)
        r = (self.radius * strides)[None, :, None, None]  # (1, P, 1, 1)
        lo = torch.maximum(centers - r, gt_boxes[:, None, :, :2])  # clipped to the box
        hi = torch.minimum(centers + r, gt_boxes[:, None, :, 2:])
        p = points[None, :, None, :]
        return ((p > lo) & (p < hi)).all(dim=-1)  # (B, P, N)


class ATSSAssigner(_BatchedAssigner):
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

    def _assign(self, points: Tensor, strides: Tensor, level_sizes: Sequence[int],
                gt_boxes: Tensor, gt_valid: Tensor) -> Tensor:
        half = (self.anchor_scale * strides / 2)[:, None]
        anchors = torch.cat([points - half, points + half], dim=1)
        ious = box_iou(anchors, gt_boxes)  # (B, P, N)
        centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
        dist = torch.cdist(points[None].expand(len(gt_boxes), -1, -1), centers)  # (B, P, N)
        cand = self._candidates(dist, level_sizes)  # (B, K, N) location indices
        cand_iou = ious.gather(1, cand)
        threshold = cand_iou.mean(dim=1) + cand_iou.std(dim=1).nan_to_num(0.0)  # K=1: std NaN
        inside = _distances_to_sides(points, gt_boxes).amin(dim=-1) > 0  # (B, P, N)
        keep = (cand_iou >= threshold[:, None]) & inside.gather(1, cand)
        if self.min_one_positive:
            best = cand_iou.argmax(dim=1, keepdim=True)  # (B, 1, N)
            orphan = ~keep.any(dim=1, keepdim=True)
            keep |= torch.zeros_like(keep).scatter_(1, best, orphan)
        keep &= gt_valid[:, None, :]
        score = torch.full_like(ious, -INF)
        score.scatter_(1, cand, torch.where(keep, cand_iou, -INF))
        best_iou, matched = score.max(dim=2)
        return torch.where(torch.isinf(best_iou), -1, matched)

    def _candidates(self, dist: Tensor, level_sizes: Sequence[int]) -> Tensor:
        """The ``topk`` nearest locations of every level, as ``(B, K, N)`` indices."""
        out, start = [], 0
        for level_dist in dist.split(list(level_sizes), dim=1):
            k = min(self.topk, level_dist.shape[1])
            out.append(level_dist.topk(k, dim=1, largest=False).indices + start)
            start += level_dist.shape[1]
        return torch.cat(out, dim=1)
