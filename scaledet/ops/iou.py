"""The IoU family on xyxy boxes: IoU, GIoU, DIoU, CIoU, EIoU, pairwise or aligned.

One entry point, :func:`box_iou`. torchvision has pairwise IoU/GIoU/DIoU/CIoU as four functions
but no aligned (N vs N) form, no EIoU and no half-precision policy; the losses need all three,
so the family is written once here and tested against torchvision.

Definitions (B, G two boxes, C their smallest enclosing box, rho the distance between centres,
c the diagonal of C, w/h widths and heights):

- IoU   = |B & G| / |B | G|                                        in [0, 1]
- GIoU  = IoU - |C \\ (B | G)| / |C|         (Rezatofighi et al. 2019) in [-1, 1]
- DIoU  = IoU - rho^2 / c^2                  (Zheng et al. 2020)       in [-1, 1]
- CIoU  = DIoU - alpha * v, v = 4/pi^2 (atan(w_G/h_G) - atan(w_B/h_B))^2,
  alpha = v / (1 - IoU + v), alpha treated as a constant in backward (as in torchvision)
- EIoU  = IoU - rho^2/c^2 - (w_B-w_G)^2/C_w^2 - (h_B-h_G)^2/C_h^2 (Zhang et al. 2022) in [-3, 1]

eps policy: every ratio here has ``0 <= numerator <= denominator`` (inter/union,
union/|C|, rho^2/c^2, dw^2/C_w^2, ...). A denominator ``<= eps`` (default 1e-7) only occurs for
degenerate boxes (zero area, identical points), and there the ratio divides by
``denominator + 1`` instead: the value is ~0 and the gradient ~1, where ``0/0`` would be NaN
and ``x / max(den, eps)`` would give gradients of 1/eps (inf once cast back to float16). Values
for non-degenerate boxes are exact (no eps added). CIoU's atan(w/h) is computed as
``atan2(w, h)``, finite at h = 0. In the aligned form both boxes are first translated and
scaled so that their enclosing box has side <= 1 (every kind is invariant to a common
translation and isotropic scaling), which keeps huge coordinates from overflowing and makes
``eps`` relative to the pair's size; in the pairwise form ``eps`` is in pixels^2. So two empty
boxes have IoU 0, and a pair whose union is below 1e-7 of its enclosing box counts as empty.
Boxes with x2 < x1 (or y2 < y1) count as empty (width clamped to 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scaledet.ops.boxes import check_boxes

IOU_KINDS = ("iou", "giou", "diou", "ciou", "eiou")


def box_iou(boxes1: Tensor, boxes2: Tensor, kind: str = "iou", aligned: bool = False,
            eps: float = 1e-7) -> Tensor:
    """IoU-family overlap between xyxy boxes.

    Args:
        boxes1: ``(..., N, 4)`` xyxy boxes (aligned: ``(..., 4)``).
        boxes2: ``(..., M, 4)`` xyxy boxes (aligned: ``(..., 4)``, broadcastable with boxes1).
        kind: ``"iou"``, ``"giou"``, ``"diou"``, ``"ciou"`` or ``"eiou"``.
        aligned: ``False``: every box of boxes1 against every box of boxes2, leading dimensions
            broadcast, result ``(..., N, M)``. ``True``: element-wise pairs, result ``(...)``.
        eps: denominators <= eps mark degenerate boxes (see the module docstring).

    Returns:
        The overlap, in the dtype of the inputs (computed in float32 for float16/bfloat16 and
        integer inputs; integer inputs give float32).
    """
    if kind not in IOU_KINDS:
        raise ValueError(f"kind must be one of {IOU_KINDS}, got {kind!r}")
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    if boxes1.device != boxes2.device:
        raise ValueError(f"boxes1 is on {boxes1.device} but boxes2 is on {boxes2.device}")
    out_dtype = torch.result_type(boxes1, boxes2)
    if not out_dtype.is_floating_point:
        out_dtype = torch.float32
    work = torch.float64 if out_dtype == torch.float64 else torch.float32
    a, b = boxes1.to(work), boxes2.to(work)
    if aligned:
        _check_broadcast(a.shape[:-1], b.shape[:-1], "aligned boxes1 and boxes2 must have "
                         "broadcastable shapes")
        a, b = _normalise_pair(a, b)
        out = _overlap(_coords(a), _coords(b), kind, eps)
    else:
        if a.dim() < 2 or b.dim() < 2:
            raise ValueError("pairwise box_iou needs boxes1 (..., N, 4) and boxes2 (..., M, 4), "
                             f"got {tuple(a.shape)} and {tuple(b.shape)}")
        _check_broadcast(a.shape[:-2], b.shape[:-2], "leading dimensions of boxes1 and boxes2 "
                         "must broadcast")
        ca = [c.unsqueeze(-1) for c in _coords(a)]  # (..., N, 1)
        cb = [c.unsqueeze(-2) for c in _coords(b)]  # (..., 1, M)
        out = _overlap(ca, cb, kind, eps)
    return out.to(out_dtype)


def _check_broadcast(s1: torch.Size, s2: torch.Size, msg: str) -> None:
    try:
        torch.broadcast_shapes(s1, s2)
    except RuntimeError:
        raise ValueError(f"{msg}, got {tuple(s1)} and {tuple(s2)}") from None


def _coords(boxes: Tensor) -> list[Tensor]:
    """x1, y1, x2, y2 as four contiguous ``(...)`` tensors (faster to broadcast than strided)."""
    return list(boxes.movedim(-1, 0).contiguous().unbind(0))


def _normalise_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Translate/scale each pair so its enclosing box starts at 0 and has max side 1.

    All kinds are invariant to this, so the gradient through the (detached) origin and scale is
    zero anyway; detaching skips it.
    """
    with torch.no_grad():
        lo = torch.minimum(a[..., :2], b[..., :2])
        hi = torch.maximum(a[..., 2:], b[..., 2:])
        scale = (hi - lo).amax(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        origin = torch.cat([lo, lo], -1)
    return (a - origin) / scale, (b - origin) / scale


def _overlap(a: list[Tensor], b: list[Tensor], kind: str, eps: float) -> Tensor:
    """The overlap of broadcastable coordinate lists ``a = [x1, y1, x2, y2]`` and ``b``.

    Out-of-place ops only, so autograd works through every kind.
    """
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    aw, ah = (ax2 - ax1).clamp(min=0), (ay2 - ay1).clamp(min=0)
    bw, bh = (bx2 - bx1).clamp(min=0), (by2 - by1).clamp(min=0)
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    inter = iw * ih
    union = (aw * ah + bw * bh) - inter
    iou = _ratio(inter, union, eps)
    if kind == "iou":
        return iou
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    if kind == "giou":
        # IoU - (|C| - |B u G|) / |C|, written as IoU - 1 + |B u G| / |C| (one op fewer)
        return iou + (_ratio(union, cw * ch, eps) - 1)
    dist = _ratio(_center_dist2(a, b), cw.square() + ch.square(), eps)
    if kind == "diou":
        return iou - dist
    if kind == "ciou":
        v = (_angle(bw, bh, eps) - _angle(aw, ah, eps)).square() * (4 / math.pi**2)
        with torch.no_grad():
            alpha = _ratio(v, 1 - iou + v, eps)
        return iou - dist - alpha * v
    # eiou
    dw2 = _ratio((aw - bw).square(), cw.square(), eps)
    dh2 = _ratio((ah - bh).square(), ch.square(), eps)
    return iou - dist - dw2 - dh2


def _ratio(num: Tensor, den: Tensor, eps: float) -> Tensor:
    """``num / den`` for ``0 <= num <= den``; where ``den <= eps`` (degenerate boxes) it divides
    by ``den + 1`` instead, giving ~0 with a gradient of ~1 rather than 0/0 or 1/eps."""
    return num / (den + (den <= eps))


def _angle(w: Tensor, h: Tensor, eps: float) -> Tensor:
    """atan(w / h) as atan2, bounded for h = 0; a point box (w + h <= eps) gets ~0."""
    return torch.atan2(w, h + (w + h <= eps))


def _center_dist2(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Squared distance between box centres, broadcast."""
    acx, acy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    bcx, bcy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return (acx - bcx).square() + (acy - bcy).square()
