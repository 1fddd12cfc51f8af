"""Penalty-reduced pixel-wise focal loss on Gaussian heatmaps (CornerNet, Law & Deng, ECCV
2018; CenterNet, Zhou et al., "Objects as Points", 2019)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from scaledet.losses.focal import _check, _reduce


def penalty_reduced_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 2.0,
                               beta: float = 4.0, reduction: str = "sum") -> Tensor:
    """Focal loss against a heatmap ``Y`` whose peaks (``Y == 1``) are the object centres::

        L = -(1 - p)^alpha log(p)                   where Y == 1
            -(1 - Y)^beta p^alpha log(1 - p)        elsewhere

    Near a centre (``Y`` close to 1) a confident prediction is barely penalised: those
    locations would give almost the right box. ``log p`` and ``log(1 - p)`` are computed as
    ``logsigmoid(x)`` and ``logsigmoid(-x)`` (exact for any logit, where CenterNet clamps ``p``
    to ``[1e-4, 1 - 1e-4]``). Detectors divide the sum by the number of objects.

    Args:
        logits: ``(...)`` raw heatmap scores, ``p = sigmoid(logits)``.
        targets: same shape, ``Y`` in ``[0, 1]``, exactly 1 at object centres.
        alpha, beta: focusing and penalty-reduction exponents (the papers' 2 and 4).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
    """
    _check(logits, targets, reduction)
    targets = targets.to(logits.dtype)
    p = logits.sigmoid()
    positive = targets == 1
    pos_loss = -(1 - p).pow(alpha) * F.logsigmoid(logits)
    neg_loss = -(1 - targets).pow(beta) * p.pow(alpha) * F.logsigmoid(-logits)
    return _reduce(pos_loss.where(positive, neg_loss), reduction)
