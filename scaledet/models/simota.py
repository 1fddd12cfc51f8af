"""SimOTA (Ge et al., YOLOX, 2021): dynamic label assignment from the current predictions.

Unlike the static assigners of :mod:`scaledet.models.assigners` (geometry only), SimOTA ranks
candidate locations of each ground truth by a cost computed from what the model predicts
there, ``cost = cls_cost + iou_weight * (-log IoU)`` (plus a large constant for locations that
are not both inside the box and near its centre), and gives each ground truth its ``k`` cheapest
locations, where ``k`` = the sum of its ``candidate_topk`` best predicted IoUs (at least 1).
Well-localised, large objects thus get more positives than small or poorly predicted ones. A
location chosen by several ground truths keeps the one it is cheapest for. It is the
approximation of optimal transport (OTA) that YOLOX trains with.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scaledet.models.assigners import Assignment
from scaledet.ops import box_iou


class SimOTAAssigner:
    """``assigner(points, strides, gt_boxes, gt_labels, pred_boxes, pred_scores)``.

    Args:
        center_radius: the centre region of a box is ``center_radius`` strides around its
            centre (2.5 in YOLOX); candidates lie inside the box or that region.
        candidate_topk: IoUs summed for the dynamic ``k`` (10 in YOLOX).
        iou_weight: weight of ``-log IoU`` in the cost (3 in YOLOX).
    """

    def __init__(self, *, center_radius: float = 2.5, candidate_topk: int = 10,
                 iou_weight: float = 3.0) -> None:
        self.center_radius = center_radius
        self.candidate_topk = candidate_topk
        self.iou_weight = iou_weight

    def assign(self, points: Tensor, strides: Tensor, level_sizes, gt_boxes: Tensor,
               gt_labels: Tensor, gt_valid: Tensor, pred_boxes: Tensor,
               pred_scores: Tensor) -> Assignment:
        """:class:`~scaledet.models.assigners.Assigner` interface: each image on its own (the
        dynamic k differs per object); the quality of a positive is its predicted IoU."""
        per_image = [self(points, strides, g[v], lab[v], pb, ps) for g, lab, v, pb, ps in
                     zip(gt_boxes, gt_labels, gt_valid, pred_boxes, pred_scores)]
        return Assignment(torch.stack([m for m, _ in per_image]),
                          torch.stack([q for _, q in per_image]))

    @torch.no_grad()
    def __call__(self, points: Tensor, strides: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                 pred_boxes: Tensor, pred_scores: Tensor) -> tuple[Tensor, Tensor]:
        """Assign one image.

        Args:
            points: ``(P, 2)`` xy pixel centres of all locations; strides: ``(P,)``.
            gt_boxes: ``(N, 4)`` xyxy pixels; gt_labels: ``(N,)`` int64.
            pred_boxes: ``(P, 4)`` predicted xyxy pixels.
            pred_scores: ``(P, C)`` predicted probabilities (YOLOX: class times objectness).

        Returns:
            ``matched (P,)`` int64 index into ``gt_boxes`` (``-1``: background) and
            ``iou (P,)`` the predicted box's IoU with its ground truth (0 for background).
        """
        matched = torch.full((points.shape[0],), -1, dtype=torch.int64, device=points.device)
        matched_iou = torch.zeros(points.shape[0], device=points.device)
        if gt_boxes.shape[0] == 0:
            return matched, matched_iou
        p = points[:, None]  # (P, 1, 2)
        inside_box = ((p > gt_boxes[:, :2]) & (p < gt_boxes[:, 2:])).all(dim=-1)  # (P, N)
        centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        radius = (self.center_radius * strides)[:, None, None]
        inside_centre = ((p - centres).abs() < radius).all(dim=-1)
        cand = (inside_box | inside_centre).any(dim=1).nonzero().squeeze(1)  # (K,)
        if cand.numel() == 0:
            return matched, matched_iou
        iou = box_iou(pred_boxes[cand].float(), gt_boxes.float())  # (K, N)
        cost = (self.classification_cost(pred_scores[cand].float(), gt_labels)
                + self.iou_weight * -torch.log(iou + 1e-8)
                + 1e5 * ~(inside_box & inside_centre)[cand])
        match = self._dynamic_k_matching(cost, iou)
        fg = match.any(dim=1)
        gt_index = match.int().argmax(dim=1)
        matched[cand[fg]] = gt_index[fg]
        matched_iou[cand[fg]] = iou[fg, gt_index[fg]]
        return matched, matched_iou

    @staticmethod
    def classification_cost(scores: Tensor, labels: Tensor) -> Tensor:
        """``(K, C)`` probabilities, ``(N,)`` labels -> ``(K, N)`` YOLOX's
        ``binary_cross_entropy(sqrt(scores), one_hot(label)).sum(-1)`` (logs clamped at -100
        as in PyTorch), without the ``(K, N, C)`` tensor: the sum over the negatives' terms is
        shared by all ground truths, only the labelled class differs."""
        q = scores.clamp(min=0).sqrt()
        neg = -torch.log(1 - q).clamp(min=-100)  # (K, C) cost of q where the target is 0
        pos = -torch.log(q).clamp(min=-100)  # where the target is 1
        return neg.sum(dim=1, keepdim=True) + (pos - neg)[:, labels]

    def _dynamic_k_matching(self, cost: Tensor, iou: Tensor) -> Tensor:
        return dynamic_k_matching(cost, iou, self.candidate_topk)


def dynamic_k_matching(cost: Tensor, iou: Tensor, candidate_topk: int) -> Tensor:
    """SimOTA's selection: ``(K, N)`` bool, the ``k_n`` cheapest of the ``K`` candidates for
    each of the ``N`` ground truths, ``k_n`` the integer part of the sum of its
    ``candidate_topk`` largest IoUs (at least 1); a candidate chosen by several ground truths
    is kept for its cheapest only (so a ground truth can end up with none).

    Args:
        cost: ``(K, N)`` matching cost; iou: ``(K, N)`` IoU of the predicted boxes.
    """
    k = min(candidate_topk, iou.shape[0])
    dynamic_k = iou.topk(k, dim=0).values.sum(dim=0).int().clamp(min=1)  # (N,)
    rank = cost.argsort(dim=0, stable=True).argsort(dim=0)
    match = rank < dynamic_k
    shared = match.sum(dim=1) > 1
    if bool(shared.any()):
        cheapest = cost[shared].argmin(dim=1)
        match[shared] = False
        match[shared.nonzero().squeeze(1), cheapest] = True
    return match
