"""Hungarian matching of a set of predictions to the ground truths (DETR, Carion et al. 2020).

Each image's ground truths are matched one-to-one to predictions by the minimum-cost assignment
of ``scipy.optimize.linear_sum_assignment`` (a well-kept exact solver; the cost matrices are
small: queries x objects of one image). The cost of a (prediction, object) pair is

    cost_class * focal_cost(p_label) + cost_l1 * |b - b_gt|_1 - cost_giou * GIoU(b, b_gt)

with the focal classification cost of Deformable DETR / RT-DETR (the focal loss of calling the
pair positive minus that of calling it negative) and boxes in normalised ``cxcywh``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scaledet.ops import box_convert, box_iou

_BIG = 1e8  # stands in for non-finite costs so the solver always has an answer


@dataclass
class HungarianMatcher:
    """Minimum-cost one-to-one matching (see the module docstring).

    Attributes:
        cost_class, cost_l1, cost_giou: weights of the three costs.
        alpha, gamma: focal parameters of the classification cost.
    """

    cost_class: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0
    alpha: float = 0.25
    gamma: float = 2.0

    def cost(self, logits: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> Tensor:
        """Pairwise cost ``(Q, N)`` of one image.

        Args:
            logits: ``(Q, C)`` classification logits.
            boxes: ``(Q, 4)`` predicted boxes, normalised ``cxcywh``.
            gt_boxes: ``(N, 4)`` normalised ``cxcywh``; ``gt_labels``: ``(N,)`` int64.
        """
        p = logits.float().sigmoid()[:, gt_labels]  # (Q, N)
        eps = 1e-8
        neg = (1 - self.alpha) * p.pow(self.gamma) * -(1 - p + eps).log()
        pos = self.alpha * (1 - p).pow(self.gamma) * -(p + eps).log()
        l1 = torch.cdist(boxes.float(), gt_boxes.float(), p=1)  # (Q, N)
        giou = box_iou(box_convert(boxes.float(), "cxcywh", "xyxy"),
                       box_convert(gt_boxes.float(), "cxcywh", "xyxy"), kind="giou")
        return self.cost_class * (pos - neg) + self.cost_l1 * l1 - self.cost_giou * giou

    @torch.no_grad()
    def __call__(self, logits: Tensor, boxes: Tensor, targets: Sequence[dict]
                 ) -> list[tuple[Tensor, Tensor]]:
        """Match every image of a batch.

        Args:
            logits: ``(B, Q, C)``; ``boxes``: ``(B, Q, 4)`` normalised ``cxcywh``.
            targets: per image ``boxes (N_i, 4)`` normalised ``cxcywh`` and ``labels (N_i,)``.

        Returns:
            Per image ``(pred_index, gt_index)``, two int64 tensors of length
            ``min(Q, N_i)`` on the inputs' device, ``gt_index`` in increasing order.
        """
        from scipy.optimize import linear_sum_assignment  # imported here: only set heads need it

        counts = [len(t["labels"]) for t in targets]
        costs = None
        if sum(counts):
            # one cost matrix for the whole batch (every query against every object), solved
            # per image on its block: one call instead of one per image
            b, q = logits.shape[:2]
            gt_boxes = torch.cat([t["boxes"] for t in targets])
            gt_labels = torch.cat([t["labels"] for t in targets])
            costs = self.cost(logits.flatten(0, 1), boxes.flatten(0, 1), gt_boxes, gt_labels)
            costs = costs.view(b, q, -1).cpu().double().numpy()  # (B, Q, sum N_i)
            costs = np.nan_to_num(costs, nan=_BIG, posinf=_BIG, neginf=-_BIG)
        out, start = [], 0
        for i, n in enumerate(counts):
            if n == 0:
                empty = torch.zeros(0, dtype=torch.int64, device=logits.device)
                out.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(costs[i, :, start:start + n])
            start += n
            order = np.argsort(cols, kind="stable")
            out.append((torch.as_tensor(rows[order], dtype=torch.int64, device=logits.device),
                        torch.as_tensor(cols[order], dtype=torch.int64, device=logits.device)))
        return out
