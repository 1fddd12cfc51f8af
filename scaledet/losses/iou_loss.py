"""IoU-family regression losses on aligned xyxy box pairs: ``1 - box_iou(pred, target, kind)``."""

from __future__ import annotations

import torch
from torch import Tensor

from scaledet.ops.boxes import check_boxes
from scaledet.ops.iou import IOU_KINDS, box_iou

REDUCTIONS = ("none", "mean", "sum")


def iou_loss(pred: Tensor, target: Tensor, kind: str = "giou", reduction: str = "mean",
             weight: Tensor | None = None, eps: float = 1e-7) -> Tensor:
    """IoU loss ``1 - IoU_kind(pred, target)`` for aligned pairs of xyxy boxes.

    kinds: ``"iou"`` (1 - IoU, as in the GIoU paper), ``"giou"`` (Rezatofighi et al. 2019),
    ``"diou"`` / ``"ciou"`` (Zheng et al. 2020), ``"eiou"`` (Zhang et al. 2022). The loss is
    ``>= 0`` (``<= 2`` for giou/diou/ciou, ``<= 4`` for eiou).

    eps policy (see ``scaledet.ops.iou``): each pair is translated and scaled so that its
    enclosing box has side 1; a ratio whose denominator is ``<= eps`` (degenerate boxes only)
    divides by ``denominator + 1`` instead. So the loss and its gradient stay finite and small
    for zero-width, identical, disjoint and huge-coordinate boxes, and ``eps`` is relative to the
    pair's size. Computed in float32 for float16/bfloat16 (float64 stays float64).

    Args:
        pred: ``(..., 4)`` predicted xyxy boxes.
        target: ``(..., 4)`` target xyxy boxes, same shape as ``pred``.
        kind: one of ``"iou"``, ``"giou"``, ``"diou"``, ``"ciou"``, ``"eiou"``.
        reduction: ``"none"`` (shape ``(...)``), ``"mean"`` or ``"sum"``.
        weight: optional per-pair weights broadcastable to ``(...)`` (e.g. FCOS centerness):
            ``"none"`` returns ``w * loss``, ``"sum"`` ``sum(w * loss)``, ``"mean"`` the weighted
            mean ``sum(w * loss) / sum(w)``.
        eps: denominators <= eps mark degenerate boxes (see above).

    Returns:
        The loss in the dtype of ``pred`` (float32 for integer ``pred``); ``"mean"`` over zero
        pairs is 0 (not NaN).
    """
    check_boxes(pred, "pred")
    check_boxes(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if kind not in IOU_KINDS:
        raise ValueError(f"kind must be one of {IOU_KINDS}, got {kind!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    work = torch.float64 if pred.dtype == torch.float64 else torch.float32
    loss = 1 - box_iou(pred.to(work), target.to(work), kind=kind, aligned=True, eps=eps)
    if weight is not None:
        _check_weight(weight, loss.shape)
        weight = weight.to(loss.dtype)
        loss = loss * weight
    if reduction == "none":
        return loss.to(_out_dtype(pred))
    total = loss.sum()
    if reduction == "mean":
        denom = weight.expand_as(loss).sum() if weight is not None else loss.new_tensor(loss.numel())
        total = total / denom.clamp(min=torch.finfo(total.dtype).tiny)
    return total.to(_out_dtype(pred))


def _out_dtype(pred: Tensor) -> torch.dtype:
    return pred.dtype if pred.is_floating_point() else torch.float32


def _check_weight(weight: Tensor, shape: torch.Size) -> None:
    if not isinstance(weight, Tensor):
        raise ValueError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    try:
        ok = torch.broadcast_shapes(weight.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"weight must broadcast to the loss shape {tuple(shape)}, "
                         f"got {tuple(weight.shape)}")
    if weight.is_floating_point() and not bool(torch.isfinite(weight).all()):
        raise ValueError("weight contains NaN or inf")
