"""Task-aligned assignment (Feng et al., TOOD, ICCV 2021), as used by PP-YOLOE and YOLOv8.

A dynamic assigner: it ranks the locations inside each ground truth by how well the current
prediction there does *both* tasks, the alignment metric

    t = s^alpha * u^beta

with ``s`` the predicted score of the ground truth's class and ``u`` the IoU of the predicted
box with the ground truth, and makes the ``topk`` best of them positives. A location chosen by
several ground truths keeps the one its box overlaps most. The classification target of a
positive is not 1 but ``t`` normalised per ground truth, ``t / max(t) * max(u)`` (its best
location gets the best IoU of the object), so scores rank locations by task alignment, and
the box loss is weighted by the same target.

Unlike :class:`~scaledet.models.assigners.ATSSAssigner` (geometry only), the positives follow
what the model learns; unlike :class:`~scaledet.models.simota.SimOTAAssigner`, it is batched
(no per-image loop) and the number of positives per object is fixed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scaledet.models.assigners import Assignment, _distances_to_sides
from scaledet.ops import box_iou


class TaskAlignedAssigner:
    """``assigner(points, gt_boxes, gt_labels, gt_valid, pred_boxes, pred_scores)``.

    Args:
        topk: positives per ground truth (TOOD 13, YOLOv8 10).
        alpha, beta: exponents of score and IoU in the alignment metric (TOOD 1 and 6).
        min_one_positive: a box that contains no location centre (smaller than the finest
            stride) takes the location nearest its centre, so tiny objects are still learned.
    """

    def __init__(self, *, topk: int = 13, alpha: float = 1.0, beta: float = 6.0,
                 min_one_positive: bool = True) -> None:
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.topk, self.alpha, self.beta = topk, alpha, beta
        self.min_one_positive = min_one_positive

    def assign(self, points: Tensor, strides: Tensor, level_sizes, gt_boxes: Tensor,
               gt_labels: Tensor, gt_valid: Tensor, pred_boxes: Tensor,
               pred_scores: Tensor) -> Assignment:
        """:class:`~scaledet.models.assigners.Assigner` interface; the quality of a positive
        is its normalised alignment."""
        return Assignment(*self(points, gt_boxes, gt_labels, gt_valid, pred_boxes, pred_scores))

    @torch.no_grad()
    def __call__(self, points: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor,
                 pred_boxes: Tensor, pred_scores: Tensor) -> tuple[Tensor, Tensor]:
        """Assign a padded batch.

        Args:
            points: ``(P, 2)`` xy pixel centres of all locations.
            gt_boxes: ``(B, N, 4)`` xyxy pixels; gt_labels: ``(B, N)`` int64; gt_valid:
                ``(B, N)`` bool (False for padding).
            pred_boxes: ``(B, P, 4)`` predicted xyxy pixels.
            pred_scores: ``(B, P, C)`` predicted probabilities.

        Returns:
            ``matched (B, P)`` int64 index into the ``N`` boxes (``-1``: background) and
            ``target (B, P)`` float32, the normalised alignment of each positive (0 elsewhere).
        """
        b, p, n = pred_boxes.shape[0], points.shape[0], gt_boxes.shape[1]
        matched = torch.full((b, p), -1, dtype=torch.int64, device=points.device)
        target = torch.zeros(b, p, device=points.device)
        if n == 0 or not bool(gt_valid.any()):
            return matched, target
        gt_boxes = gt_boxes.float()
        candidate = (_distances_to_sides(points, gt_boxes).amin(dim=-1) > 0)  # (B, P, N)
        if self.min_one_positive:
            centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # (B, N, 2)
            nearest = torch.cdist(centres, points[None].expand(b, -1, -1)).argmin(dim=2)  # (B, N)
            orphan = ~candidate.any(dim=1)  # (B, N)
            candidate.scatter_(1, nearest[:, None, :], orphan[:, None, :] | candidate.gather(
                1, nearest[:, None, :]))
        candidate &= gt_valid[:, None, :]
        iou = box_iou(pred_boxes.float(), gt_boxes).clamp(min=0)  # (B, P, N)
        score = pred_scores.float().gather(2, gt_labels[:, None, :].expand(b, p, n))  # (B, P, N)
        align = score.pow(self.alpha) * iou.pow(self.beta) * candidate
        k = min(self.topk, p)
        top = align.topk(k, dim=1).indices  # (B, k, N)
        positive = torch.zeros_like(candidate).scatter_(1, top, True) & candidate
        # A location claimed by several boxes keeps the one its prediction overlaps most.
        claimed = torch.where(positive, iou, -1.0)
        best_iou, gt_index = claimed.max(dim=2)  # (B, P)
        fg = best_iou >= 0
        matched = torch.where(fg, gt_index, -1)
        keep = positive & (torch.arange(n, device=points.device) == gt_index[..., None]) & fg[..., None]
        align, iou = align * keep, iou * keep
        norm = iou.amax(dim=1) / align.amax(dim=1).clamp(min=1e-9)  # (B, N)
        target = (align * norm[:, None, :]).amax(dim=2)  # (B, P): one box per location
        return matched, target
