"""Non-maximum suppression on xyxy boxes: greedy NMS, Soft-NMS, DIoU-NMS, and class-aware forms.

Every function returns kept indices (int64) into the input, in selection order, which is
descending score order. Tie rule (all functions, CPU and CUDA): among equal scores the box with
the lower index is taken first. A box is suppressed when its criterion is strictly greater
than the threshold (as in torchvision).

``nms``/``batched_nms`` run torchvision's compiled kernel. That kernel sorts the scores with an
unstable sort, so ties are made deterministic by sorting stably first and handing the kernel
strictly decreasing rank scores ``N, N-1, ..., 1`` instead of the scores themselves.
Soft-NMS and DIoU-NMS have no torchvision kernel; they are written here as a Python loop over
*selected* boxes, each step vectorised over all boxes (``O(N)`` tensor work per kept box).
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor

from scaledet.ops.boxes import all_finite, check_boxes

# batched_nms: below this many boxes one kernel call on class-offset boxes is fastest,
# above it one call per class (the kernel is O(N^2) in the worst case).
_OFFSET_TRICK_MAX = {"cpu": 1000, "cuda": 25000}


def _check_inputs(boxes: Tensor, scores: Tensor, idxs: Tensor | None = None) -> None:
    check_boxes(boxes, "boxes", ndim=2)
    n = boxes.shape[0]
    if not isinstance(scores, Tensor) or scores.shape != (n,):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a ({n},) tensor matching boxes (N={n}), got {shape}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got {scores.dtype}")
    if not all_finite(scores):
        raise ValueError("scores contains NaN or inf")
    if scores.device != boxes.device:
        raise ValueError(f"scores is on {scores.device} but boxes is on {boxes.device}")
    if idxs is None:
        return
    if not isinstance(idxs, Tensor) or idxs.shape != (n,):
        shape = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f"idxs must be a ({n},) tensor matching boxes (N={n}), got {shape}")
    if idxs.is_floating_point() or idxs.dtype == torch.bool or idxs.is_complex():
        raise ValueError(f"idxs must be an integer tensor of class indices, got {idxs.dtype}")
    if idxs.device != boxes.device:
        raise ValueError(f"idxs is on {idxs.device} but boxes is on {boxes.device}")


def _check_threshold(value: float, name: str) -> float:
    value = float(value)
    if value != value:
        raise ValueError(f"{name} must be a number, got NaN")
    return value


def _empty_keep(boxes: Tensor) -> Tensor:
    return torch.empty((0,), dtype=torch.int64, device=boxes.device)


def _kernel_inputs(boxes: Tensor, order: Tensor, dtype: torch.dtype | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Boxes in rank order and strictly decreasing rank scores for torchvision's kernel."""
    n = boxes.shape[0]
    if dtype is None:  # float32 ranks are exact integers up to 2**24
        dtype = torch.float64 if boxes.dtype == torch.float64 or n > 2**24 else torch.float32
    ranks = torch.arange(n, 0, -1, dtype=dtype, device=boxes.device)
    return boxes.index_select(0, order).to(dtype), ranks


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: drop every box whose IoU with a higher-ranked kept box is > ``iou_threshold``.

    Args:
        boxes: ``(N, 4)`` xyxy boxes.
        scores: ``(N,)`` scores.
        iou_threshold: IoU above which the lower-ranked box is suppressed.

    Returns:
        ``(K,)`` int64 kept indices, descending score, ties -> lower index first.
    """
    _check_inputs(boxes, scores)
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    if boxes.shape[0] == 0:
        return _empty_keep(boxes)
    order = scores.argsort(descending=True, stable=True)
    sorted_boxes, ranks = _kernel_inputs(boxes, order)
    return order[torchvision.ops.nms(sorted_boxes, ranks, iou_threshold)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware greedy NMS: boxes with different ``idxs`` never suppress each other.

    Args:
        boxes: ``(N, 4)`` xyxy boxes.
        scores: ``(N,)`` scores.
        idxs: ``(N,)`` integer class (or image) indices.
        iou_threshold: IoU above which the lower-ranked box is suppressed.

    Returns:
        ``(K,)`` int64 kept indices, descending score, ties -> lower index first.

    Small inputs use one kernel call on boxes shifted by ``class * (span + 1)`` (shifted in
    float64, so the shift does not round coordinates, and correct for negative coordinates);
    large inputs call the kernel once per class on a class-grouped, rank-sorted copy.
    """
    _check_inputs(boxes, scores, idxs)
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    n = boxes.shape[0]
    if n == 0:
        return _empty_keep(boxes)
    order = scores.argsort(descending=True, stable=True)
    if n <= _OFFSET_TRICK_MAX.get(boxes.device.type, 1000):
        return _batched_nms_offset(boxes, idxs, order, iou_threshold)
    return _batched_nms_per_class(boxes, idxs, order, iou_threshold)


def _batched_nms_offset(boxes: Tensor, idxs: Tensor, order: Tensor, iou_threshold: float
                        ) -> Tensor:
    sorted_boxes, ranks = _kernel_inputs(boxes, order, torch.float64)
    lo, hi = sorted_boxes.min(), sorted_boxes.max()
    shift = idxs[order].to(torch.float64) * (hi - lo + 1)
    keep = torchvision.ops.nms(sorted_boxes + shift[:, None], ranks, iou_threshold)
    return order[keep]


def _batched_nms_per_class(boxes: Tensor, idxs: Tensor, order: Tensor, iou_threshold: float
                           ) -> Tensor:
    # group by class, keeping rank order inside each class: rank_of[i] = rank of the i-th box
    rank_of = idxs.index_select(0, order).argsort(stable=True)
    grouped = order.index_select(0, rank_of)
    sorted_boxes, _ = _kernel_inputs(boxes, grouped)
    ranks = (len(order) - rank_of).to(sorted_boxes.dtype)  # decreasing inside each class
    counts = torch.unique_consecutive(idxs.index_select(0, grouped), return_counts=True)[1]
    kept = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)  # indexed by rank
    start = 0
    for b, r in zip(sorted_boxes.split(counts.tolist()), ranks.split(counts.tolist())):
        keep = torch.ops.torchvision.nms(b, r, iou_threshold)
        kept[rank_of[start:start + len(r)].index_select(0, keep)] = True
        start += len(r)
    return order[kept]


class _RowIoU:
    """IoU (and DIoU's centre penalty) of box ``m`` against all boxes, in float64.

    float64 so that decisions and decayed scores match a pure-Python (double) reference;
    box ``m``'s coordinates are Python floats, so ``minimum(x2, x2[m])`` is a scalar clamp.
    """

    def __init__(self, boxes: Tensor):
        b = boxes.to(torch.float64)
        self.x1, self.y1, self.x2, self.y2 = b.t().contiguous().unbind(0)
        self.area = (self.x2 - self.x1).clamp(min=0) * (self.y2 - self.y1).clamp(min=0)
        self.py_boxes = b.tolist()
        self.py_area = self.area.tolist()
        self.cx, self.cy = (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2
        self.tiny = torch.finfo(torch.float64).tiny

    def iou(self, m: int) -> Tensor:
        x1, y1, x2, y2 = self.py_boxes[m]
        iw = (self.x2.clamp(max=x2) - self.x1.clamp(min=x1)).clamp_(min=0)
        ih = (self.y2.clamp(max=y2) - self.y1.clamp(min=y1)).clamp_(min=0)
        inter = iw.mul_(ih)
        union = (self.area + self.py_area[m]).sub_(inter).clamp_(min=self.tiny)  # empty: IoU 0
        return inter.div_(union)

    def center_penalty(self, m: int) -> Tensor:
        """rho^2 / c^2: squared centre distance over squared enclosing-box diagonal."""
        x1, y1, x2, y2 = self.py_boxes[m]
        dx = self.cx - (x1 + x2) / 2
        dy = self.cy - (y1 + y2) / 2
        cw = self.x2.clamp(min=x2) - self.x1.clamp(max=x1)
        ch = self.y2.clamp(min=y2) - self.y1.clamp(max=y1)
        c2 = (cw * cw + ch * ch).clamp_(min=self.tiny)
        return (dx * dx + dy * dy) / c2


def soft_nms(boxes: Tensor, scores: Tensor, method: str = "gaussian", sigma: float = 0.5,
             iou_threshold: float = 0.3, score_threshold: float = 0.001) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., ICCV 2017): decay overlapping scores instead of dropping boxes.

    Each step selects the remaining box M with the highest current (decayed) score, then
    multiplies every remaining score s_i by f(IoU(M, b_i)):

    - ``"linear"``: ``f = 1 - iou`` if ``iou > iou_threshold`` else 1,
    - ``"gaussian"``: ``f = exp(-iou^2 / sigma)`` for every remaining box (``iou_threshold``
      unused), the paper's and its reference code's convention.

    Boxes whose score falls below ``score_threshold`` are discarded (since scores only decay, this
    is the same as stopping when the best remaining score is below it). Continuous coordinates,
    no legacy "+1" in widths.

    Args:
        boxes: ``(N, 4)`` xyxy boxes.
        scores: ``(N,)`` scores.
        method: ``"linear"`` or ``"gaussian"``.
        sigma: gaussian width (the paper uses 0.5).
        iou_threshold: linear method's N_t.
        score_threshold: minimum decayed score to keep.

    Returns:
        ``keep``: ``(K,)`` int64 indices in selection order (non-increasing decayed score, ties
        -> lower index first); ``decayed_scores``: ``(K,)`` their scores when selected, in the
        dtype of ``scores``.
    """
    return _soft_nms(boxes, scores, None, method, sigma, iou_threshold, score_threshold)


def batched_soft_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, method: str = "gaussian",
                     sigma: float = 0.5, iou_threshold: float = 0.3,
                     score_threshold: float = 0.001) -> tuple[Tensor, Tensor]:
    """Class-aware :func:`soft_nms`: only boxes with the same ``idxs`` decay each other.

    ``idxs`` is ``(N,)`` integer classes; other arguments and the result as in :func:`soft_nms`
    (kept boxes of all classes merged in selection order).
    """
    return _soft_nms(boxes, scores, idxs, method, sigma, iou_threshold, score_threshold)


def _soft_nms(boxes: Tensor, scores: Tensor, idxs: Tensor | None, method: str, sigma: float,
              iou_threshold: float, score_threshold: float) -> tuple[Tensor, Tensor]:
    _check_inputs(boxes, scores, idxs)
    if method not in ("linear", "gaussian"):
        raise ValueError(f"method must be 'linear' or 'gaussian', got {method!r}")
    sigma = _check_threshold(sigma, "sigma")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    score_threshold = _check_threshold(score_threshold, "score_threshold")
    if not score_threshold > 0:
        raise ValueError(f"score_threshold must be > 0 (soft-NMS only decays scores), "
                         f"got {score_threshold}")
    if bool((scores < 0).any()):
        raise ValueError("scores must be >= 0 for soft-NMS (decay multiplies them)")
    rows = _RowIoU(boxes)
    same_class = (lambda m: idxs == idxs[m]) if idxs is not None else None
    step = _gaussian_steps if method == "gaussian" else _linear_steps
    keep, kept_scores = step(rows, scores.to(torch.float64), same_class, sigma, iou_threshold,
                             score_threshold)
    device = boxes.device
    return (torch.tensor(keep, dtype=torch.int64, device=device),
            torch.tensor(kept_scores, dtype=torch.float64, device=device).to(scores.dtype))


def _linear_steps(rows, scores, same_class, sigma, iou_threshold, score_threshold):
    """Soft-NMS loop for the linear decay: multiply scores by (1 - iou) where iou > N_t."""
    current = scores.clone()
    taken = torch.zeros_like(current, dtype=torch.bool)
    keep, kept_scores = [], []
    for _ in range(len(current)):
        remaining = current.masked_fill(taken, -1.0)  # scores are >= 0
        m = int(remaining.argmax())  # the first maximum: ties -> lower index
        score = float(remaining[m])
        if score < score_threshold:  # also when every box is taken (-1)
            break
        keep.append(m)
        kept_scores.append(score)
        taken[m] = True
        iou = rows.iou(m)
        decay = torch.where(iou > iou_threshold, 1 - iou, 1.0)
        if same_class is not None:
            decay = torch.where(same_class(m), decay, 1.0)
        current.mul_(decay)
    return keep, kept_scores


def _gaussian_steps(rows, scores, same_class, sigma, iou_threshold, score_threshold):
    """Soft-NMS loop for the gaussian decay, in the log domain.

    s_i * prod_k exp(-iou_ik^2 / sigma) = s_i * exp(-sum_k iou_ik^2 / sigma): the loop only
    accumulates iou^2 and selects the max of log(s_i) - acc_i / sigma (one exp per kept box
    instead of N per step; torch.exp is the slowest op of the step otherwise).
    """
    key = scores.log()  # -inf for zero scores: never selected (score_threshold > 0)
    acc = torch.zeros_like(scores)
    keep, kept_scores = [], []
    for _ in range(len(key)):
        m = int(key.argmax())  # the first maximum: ties -> lower index
        if float(key[m]) == -math.inf:  # every box taken
            break
        score = float(scores[m]) * math.exp(-float(acc[m]) / sigma)
        if score < score_threshold:
            break
        keep.append(m)
        kept_scores.append(score)
        iou2 = rows.iou(m).square_()
        if same_class is not None:
            iou2.masked_fill_(~same_class(m), 0.0)
        acc.add_(iou2)
        key.sub_(iou2, alpha=1 / sigma)
        key[m] = -math.inf
    return keep, kept_scores


def diou_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, beta: float = 1.0) -> Tensor:
    """DIoU-NMS (Zheng et al., AAAI 2020): greedy NMS whose criterion also looks at centres.

    A box b is suppressed by a higher-ranked kept box M when
    ``IoU(M, b) - (rho^2 / c^2) ** beta > iou_threshold`` (rho: distance between the centres,
    c: diagonal of the enclosing box), so overlapping boxes with distant centres (often
    different, occluded objects) survive.

    Args:
        boxes: ``(N, 4)`` xyxy boxes.
        scores: ``(N,)`` scores.
        iou_threshold: criterion above which the lower-ranked box is suppressed.
        beta: exponent of the centre penalty (1 in the paper's main experiments).

    Returns:
        ``(K,)`` int64 kept indices, descending score, ties -> lower index first.
    """
    return _diou_nms(boxes, scores, None, iou_threshold, beta)


def batched_diou_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                     beta: float = 1.0) -> Tensor:
    """Class-aware :func:`diou_nms`: boxes with different ``idxs`` never suppress each other."""
    return _diou_nms(boxes, scores, idxs, iou_threshold, beta)


def _diou_nms(boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float,
              beta: float) -> Tensor:
    _check_inputs(boxes, scores, idxs)
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    beta = _check_threshold(beta, "beta")
    if boxes.shape[0] == 0:
        return _empty_keep(boxes)
    order = scores.argsort(descending=True, stable=True)
    rows = _RowIoU(boxes[order])
    classes = idxs[order] if idxs is not None else None
    alive = torch.ones(len(order), dtype=torch.uint8, device=boxes.device)
    keep = []
    while True:
        i = int(alive.argmax())  # first alive box in rank order
        if not alive[i]:
            break
        keep.append(i)
        penalty = rows.center_penalty(i)
        if beta != 1.0:
            penalty = penalty.pow(beta)
        suppress = (rows.iou(i) - penalty) > iou_threshold
        if classes is not None:
            suppress &= classes == classes[i]
        alive.masked_fill_(suppress, 0)
        alive[i] = 0
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]
