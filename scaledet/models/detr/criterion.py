"""The set loss of DETR-style detectors: one-to-one targets from the Hungarian matcher (or the
known pairs of denoising queries), varifocal classification with the IoU as the target
(RT-DETR's IoU-aware score), L1 and GIoU on normalised ``cxcywh`` boxes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scaledet.losses.focal import varifocal_loss
from scaledet.ops import box_convert, box_iou


def mean_over_ranks(count: float, device: torch.device) -> float:
    """A per-batch count (objects, matched pairs) averaged over the data-parallel ranks, at
    least 1: the set loss's normaliser, alike on every rank as DETR's (a rank with few objects
    would otherwise weigh each of them more). Every rank must call it (an all-reduce)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        total = torch.tensor([float(count)], device=device)
        torch.distributed.all_reduce(total)
        count = float(total) / torch.distributed.get_world_size()
    return max(float(count), 1.0)


@dataclass
class SetLossWeights:
    """Weights of the set loss terms (RT-DETR's: 1, 5, 2)."""

    vfl: float = 1.0
    l1: float = 5.0
    giou: float = 2.0


def set_loss(logits: Tensor, boxes: Tensor, targets: Sequence[dict],
             indices: Sequence[tuple[Tensor, Tensor]], num_boxes: float,
             weights: SetLossWeights, alpha: float = 0.75, gamma: float = 2.0
             ) -> dict[str, Tensor]:
    """Loss of one set of predictions given its matching.

    Args:
        logits: ``(B, Q, C)`` classification logits.
        boxes: ``(B, Q, 4)`` predicted boxes, normalised ``cxcywh``.
        targets: per image ``boxes (N_i, 4)`` normalised ``cxcywh``, ``labels (N_i,)``.
        indices: per image ``(pred_index, gt_index)`` of the matched pairs.
        num_boxes: normaliser (objects in the batch, at least 1).
        weights: term weights; ``alpha, gamma``: varifocal parameters.

    Returns:
        ``vfl``, ``l1`` and ``giou``, each already weighted and divided by ``num_boxes``.
        Unmatched predictions are negatives of every class.
    """
    b = torch.cat([torch.full_like(p, i) for i, (p, _) in enumerate(indices)])
    q = torch.cat([p for p, _ in indices])
    gt_boxes = torch.cat([t["boxes"][g] for t, (_, g) in zip(targets, indices)]).float()
    gt_labels = torch.cat([t["labels"][g] for t, (_, g) in zip(targets, indices)])
    pred = boxes[b, q].float()
    pred_xyxy = box_convert(pred, "cxcywh", "xyxy")
    gt_xyxy = box_convert(gt_boxes, "cxcywh", "xyxy")
    giou = box_iou(pred_xyxy, gt_xyxy, kind="giou", aligned=True)
    iou = box_iou(pred_xyxy.detach(), gt_xyxy, aligned=True)
    target = torch.zeros_like(logits, dtype=torch.float32)
    target[b, q, gt_labels] = iou.clamp(min=1e-6)
    vfl = varifocal_loss(logits.float(), target, alpha, gamma) / num_boxes
    l1 = (pred - gt_boxes).abs().sum() / num_boxes
    giou_loss = (1 - giou).sum() / num_boxes
    zero = 0.0 * boxes.sum()  # keeps the boxes in the graph when nothing is matched
    return {"vfl": weights.vfl * vfl, "l1": weights.l1 * l1 + zero,
            "giou": weights.giou * giou_loss + zero}
