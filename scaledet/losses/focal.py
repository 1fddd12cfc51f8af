"""Sigmoid focal loss (Lin et al., RetinaNet, ICCV 2017) and varifocal loss (Zhang et al.,
VarifocalNet, CVPR 2021), one function each, on per-class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")


def _check(logits: Tensor, targets: Tensor, reduction: str) -> None:
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise ValueError("logits and targets must be torch.Tensor")
    if logits.shape != targets.shape:
        raise ValueError(f"logits and targets must have the same shape, got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    return loss


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "sum") -> Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log(p_t)`` on independent sigmoid outputs.

    Args:
        logits: ``(..., C)`` raw scores (any shape).
        targets: same shape, 1 for the true class and 0 elsewhere (soft values allowed: then
            ``p_t = p*t + (1-p)*(1-t)`` as in torchvision).
        alpha: weight of positives (``1 - alpha`` for negatives); ``< 0`` disables it.
        gamma: focusing exponent.
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (detectors divide the sum by #positives).
    """
    _check(logits, targets, reduction)
    targets = targets.to(logits.dtype)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return _reduce(loss, reduction)


def varifocal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.75, gamma: float = 2.0,
                   weight: Tensor | None = None, reduction: str = "sum") -> Tensor:
    """Varifocal loss on an IoU-aware classification target ``q``::

        VFL(p, q) = -q (q log p + (1 - q) log(1 - p))   if q > 0   (positives, weighted by q)
                  = -alpha p^gamma log(1 - p)            if q = 0   (negatives, down-weighted)

    Positives are not down-weighted (they are rare), and a positive with a high IoU counts more,
    so the score learns to rank well-localised boxes first.

    Args:
        logits: ``(..., C)`` raw scores, ``p = sigmoid(logits)``.
        targets: same shape, ``q`` in ``[0, 1]``: the IoU of the predicted box with its ground
            truth at the true class of a positive location, 0 elsewhere.
        alpha, gamma: negative weighting (the paper's 0.75 and 2).
        weight: optional per-element weights broadcastable to ``logits``.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
    """
    _check(logits, targets, reduction)
    targets = targets.to(logits.dtype)
    p = logits.sigmoid()
    positive = targets > 0
    focal_weight = torch.where(positive, targets, alpha * p.pow(gamma))
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * focal_weight
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
