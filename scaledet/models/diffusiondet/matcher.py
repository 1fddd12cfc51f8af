"""DiffusionDet's training matcher: one ground truth to a dynamic number of predictions.

DiffusionDet (Chen et al. 2023) trains its box set with a SimOTA-like matching rather than
DETR's one-to-one Hungarian assignment: every ground truth takes its ``k`` cheapest
predictions, ``k`` the integer part of the sum of its ``candidate_topk`` best IoUs with the
predicted boxes (at least 1; :func:`~scaledet.models.simota.dynamic_k_matching`). A
well-covered object thus gets several positives, which gives the stages more box and class
supervision per image than one positive per object; the duplicates this trains are what the
detector's class-wise NMS removes at inference.

The cost of a (prediction, object) pair is the Hungarian matcher's
(:class:`~scaledet.models.detr.matcher.HungarianMatcher`: focal classification, L1 on
normalised ``cxcywh``, GIoU; the reference takes its L1 on normalised ``xyxy``), plus

- ``+100`` unless the prediction's centre lies both inside the object's box and within
  ``center_radius`` box sizes of its centre;
- ``+10000`` for a prediction whose centre lies in no object's box nor centre region.

A prediction chosen by several objects is kept for its cheapest, and every object left
without a prediction then takes its cheapest still unmatched one, so that no object goes
unsupervised (while there are unmatched predictions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from scaledet.models.detr.matcher import HungarianMatcher
from scaledet.models.simota import dynamic_k_matching
from scaledet.ops import box_convert, box_iou

_OFF_CENTRE, _OUTSIDE = 100.0, 10000.0  # the reference's penalties (cost units)


@dataclass
class DynamicKMatcher:
    """One-to-many matching (see the module docstring); called like
    :class:`~scaledet.models.detr.matcher.HungarianMatcher`.

    Attributes:
        costs: the pair cost's weights (a :class:`HungarianMatcher`, whose ``cost`` it uses).
        candidate_topk: IoUs summed for an object's ``k`` (the reference's ``OTA_K``, 5).
        center_radius: half-side of an object's centre region, in box widths / heights (2.5).
    """

    costs: HungarianMatcher = field(default_factory=HungarianMatcher)
    candidate_topk: int = 5
    center_radius: float = 2.5

    def cost(self, logits: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor
             ) -> tuple[Tensor, Tensor]:
        """Pairwise cost and IoU ``(Q, N)`` of one image (arguments as
        :meth:`HungarianMatcher.cost`: boxes in normalised ``cxcywh``)."""
        boxes, gt_boxes = boxes.float(), gt_boxes.float()
        cost = self.costs.cost(logits, boxes, gt_boxes, gt_labels)
        gt_xyxy = box_convert(gt_boxes, "cxcywh", "xyxy")
        iou = box_iou(box_convert(boxes, "cxcywh", "xyxy"), gt_xyxy)
        centre = boxes[:, None, :2]  # (Q, 1, 2)
        in_box = ((centre > gt_xyxy[:, :2]) & (centre < gt_xyxy[:, 2:])).all(-1)  # (Q, N)
        radius = self.center_radius * gt_boxes[:, 2:]
        in_centre = ((centre - gt_boxes[:, :2]).abs() < radius).all(-1)  # (Q, N)
        candidate = (in_box | in_centre).any(1, keepdim=True)  # (Q, 1)
        cost = cost + _OFF_CENTRE * ~(in_box & in_centre) + _OUTSIDE * ~candidate
        return cost, iou

    @torch.no_grad()
    def __call__(self, logits: Tensor, boxes: Tensor, targets: Sequence[dict]
                 ) -> list[tuple[Tensor, Tensor]]:
        """Match every image of a batch.

        Args:
            logits: ``(B, Q, C)``; ``boxes``: ``(B, Q, 4)`` normalised ``cxcywh``.
            targets: per image ``boxes (N_i, 4)`` normalised ``cxcywh`` and ``labels (N_i,)``.

        Returns:
            Per image ``(pred_index, gt_index)``: int64 tensors of the matched pairs, one
            entry per matched prediction (in increasing prediction order), an object
            appearing once or more.
        """
        out = []
        for i, t in enumerate(targets):
            if len(t["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.int64, device=logits.device)
                out.append((empty, empty))
                continue
            cost, iou = self.cost(logits[i], boxes[i], t["boxes"], t["labels"])
            cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
            match = dynamic_k_matching(cost, iou, self.candidate_topk)  # (Q, N) bool
            for n in (~match.any(0)).nonzero().squeeze(1).tolist():  # objects left without
                free = ~match.any(1)
                if not bool(free.any()):
                    break
                q = int(torch.where(free, cost[:, n], torch.inf).argmin())
                match[q, n] = True
            pred, gt = match.nonzero(as_tuple=True)
            out.append((pred, gt))
        return out


__all__ = ["DynamicKMatcher"]
