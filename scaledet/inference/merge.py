"""Merging detections of one image that come from several passes (TTA) or tiles (slicing).

* :func:`nms_merge`: the NMS family of :mod:`scaledet.ops` (hard, Soft-NMS, DIoU), class-aware.
* :func:`weighted_boxes_fusion`: WBF (Solovyev, Wang & Gabruseva, 2019). Written here: neither
  torchvision nor our ops have it.
* :func:`greedy_nmm`: greedy non-maximum *merging* as in SAHI (Akyon et al., 2022): instead of
  dropping the lower-ranked boxes that match a kept box, their union is taken, so the pieces of an
  object cut by tile edges become one box. Written here for the same reason.

Every function takes and returns a detections dict: ``"boxes"`` ``(N, 4)`` float32 xyxy,
``"scores"`` ``(N,)``, ``"labels"`` ``(N,)`` int64; outputs are sorted by descending score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from scaledet.inference.results import empty_detections
from scaledet.ops import batched_diou_nms, batched_nms, batched_soft_nms

Detections = dict[str, Tensor]
NMS_METHODS = ("hard", "soft-linear", "soft-gaussian", "diou")


def concat(dets: Sequence[Detections]) -> Detections:
    """All detections of several dicts in one dict (in the given order)."""
    if not dets:
        return empty_detections()
    return {k: torch.cat([d[k] for d in dets]) for k in ("boxes", "scores", "labels")}


def select(det: Detections, index: Tensor) -> Detections:
    """The detections at ``index`` (bool mask or int64 indices)."""
    return {k: det[k][index] for k in ("boxes", "scores", "labels")}


def sort_and_cap(det: Detections, min_score: float, max_det: int) -> Detections:
    """Scores >= ``min_score``, sorted by descending score (stable), at most ``max_det``."""
    det = select(det, det["scores"] >= min_score)
    order = det["scores"].argsort(descending=True, stable=True)[:max_det]
    return select(det, order)


def nms_merge(det: Detections, method: str = "hard", iou: float = 0.6, min_score: float = 1e-3,
              sigma: float = 0.5) -> Detections:
    """Class-aware NMS of ``method`` (see ``NMS_METHODS``) over all the detections.

    ``min_score`` is Soft-NMS's score floor (boxes decayed below it are dropped). ``"none"`` (the
    setting of NMS-free heads such as CenterNet) still needs a merge across passes, so it means hard NMS.
    """
    if method == "none":
        method = "hard"
    if method not in NMS_METHODS:
        raise ValueError(f"nms must be one of {NMS_METHODS}, got {method!r}")
    boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
    if method == "hard":
        return select(det, batched_nms(boxes, scores, labels, iou))
    if method == "diou":
        return select(det, batched_diou_nms(boxes, scores, labels, iou))
    keep, decayed = batched_soft_nms(boxes, scores, labels, method=method[len("soft-"):],
                                     sigma=sigma, iou_threshold=iou,
                                     score_threshold=max(min_score, 1e-6))
    return {"boxes": boxes[keep], "scores": decayed, "labels": labels[keep]}


def wbf_clusters(det: Detections, iou: float = 0.55) -> tuple[Detections, Tensor]:
    """The clustering step of WBF, class by class.

    Boxes are visited by descending score; each joins the fused box of its class it overlaps
    most if that IoU is ``> iou``, else starts a new cluster. A fused box is the score-weighted
    mean of its members' coordinates, its score the mean of their scores.

    Returns:
        ``(fused, counts)``: fused detections (scores = mean member score, not yet rescaled)
        and ``(M,)`` int64 the number of members of each cluster.
    """
    if not 0 < iou <= 1:
        raise ValueError(f"WBF iou must be in (0, 1], got {iou}")
    fused, counts = [], []
    for c in det["labels"].unique().tolist():
        members = det["labels"] == c
        f, n = _wbf_one_class(det["boxes"][members].double(), det["scores"][members].double(),
                              iou)
        fused.append({"boxes": f[0].float(), "scores": f[1].float(),
                      "labels": torch.full((len(n),), c, dtype=torch.int64)})
        counts.append(n)
    if not fused:
        return empty_detections(), torch.zeros(0, dtype=torch.int64)
    return concat(fused), torch.cat(counts)


def _wbf_one_class(boxes: Tensor, scores: Tensor, iou: float
                   ) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """WBF of one class. The loop is sequential (each fused box moves as members join), so it
    runs on numpy float64 arrays: per-step tensor calls cost ~10x more at these sizes."""
    b, s = boxes.numpy(), scores.numpy()
    order = np.argsort(-s, kind="stable")
    fused = np.zeros((len(b), 4))     # current fused boxes
    weighted = np.zeros((len(b), 4))  # sum of score * box
    score_sum = np.zeros(len(b))
    counts = np.zeros(len(b), dtype=np.int64)
    area = np.zeros(len(b))
    m = 0
    for i in order:
        j = m
        if m:
            lt = np.maximum(fused[:m, :2], b[i, :2])
            rb = np.minimum(fused[:m, 2:], b[i, 2:])
            inter = np.clip(rb - lt, 0, None).prod(axis=1)
            own = max(b[i, 2] - b[i, 0], 0) * max(b[i, 3] - b[i, 1], 0)
            overlaps = inter / np.maximum(area[:m] + own - inter, 1e-12)
            best = int(overlaps.argmax())
            j = best if overlaps[best] > iou else m
        m += j == m
        weighted[j] += s[i] * b[i]
        score_sum[j] += s[i]
        counts[j] += 1
        fused[j] = weighted[j] / score_sum[j]
        area[j] = np.clip(fused[j, 2:] - fused[j, :2], 0, None).prod()
    return ((torch.from_numpy(fused[:m]), torch.from_numpy(score_sum[:m] / counts[:m])),
            torch.from_numpy(counts[:m]))


def weighted_boxes_fusion(det: Detections, num_sources: int, iou: float = 0.55) -> Detections:
    """Weighted boxes fusion of detections pooled from ``num_sources`` passes / models.

    :func:`wbf_clusters`, then :func:`wbf_rescale`: a fused score is the mean member score times
    ``min(count, T) / T`` with ``T = num_sources``, so a box only some passes found is
    down-weighted.
    """
    fused, counts = wbf_clusters(det, iou)
    return wbf_rescale(fused, counts, num_sources)


def wbf_rescale(fused: Detections, counts: Tensor, num_sources: int | Tensor) -> Detections:
    """Scale fused scores by ``min(count, T) / T`` and sort them; ``num_sources`` ``T`` is a
    number or a ``(M,)`` tensor with one ``T`` per fused box (TTA with SNIP ranges counts only
    the passes whose range holds that box's size)."""
    t = torch.as_tensor(num_sources, dtype=torch.float32).clamp(min=1)
    if t.dim() == 0:
        t = t.expand(len(counts))
    if t.shape != counts.shape:
        raise ValueError(f"num_sources must be a number or one per fused box ({len(counts)}), "
                         f"got shape {tuple(t.shape)}")
    scores = fused["scores"] * torch.minimum(counts.float(), t) / t
    return sort_and_cap({**fused, "scores": scores}, 0.0, len(counts))


def greedy_nmm(det: Detections, threshold: float = 0.5, metric: str = "ios", *,
               sources: Tensor | None = None, cut: Tensor | None = None,
               duplicate_iou: float = 0.6, piece_ratio: float = 0.0) -> Detections:
    """Greedy non-maximum merging, class-aware: SAHI's GREEDYNMM, optionally tile-aware.

    Boxes are visited by descending score; an unmerged box becomes a keeper and absorbs the
    remaining unmerged boxes of its class that match its group box (the enclosing box of the
    group so far, grown until nothing more matches); the result is the group box with the
    keeper's score. Matching against the grown box lets the pieces of an object cut by several
    tile edges join through the whole box that another tile or the full-image pass saw.

    Plain (``cut`` None): a box matches if ``metric`` (``"ios"``: intersection over the smaller
    area, a piece cut by a tile edge lies inside the whole box; or ``"iou"``) is ``> threshold``.

    Tile-aware (``cut`` given, ``(N,)`` bool: the box touches an inner tile edge): only pieces
    grow the group box - a box matches by IoS ``> threshold`` only if it or the group holds a
    cut box; otherwise it is a duplicate if IoU ``> duplicate_iou`` (the same object seen whole
    by two tiles), absorbed without growing the group. ``sources`` ``(N,)`` int (tile index):
    a box never joins a group that already holds a box of its tile (the detector's own NMS
    separated those: they are different objects). Why: with a low score threshold, plain IoS
    merging lets a confident large box swallow every small box of its class inside it, and the
    union then swallows its neighbours.

    ``piece_ratio``: a matching box scoring below ``piece_ratio`` x the keeper's score is
    absorbed without growing the group (a weak false box at a tile edge must not stretch a
    confident one).
    """
    if metric not in ("ios", "iou"):
        raise ValueError(f"metric must be 'ios' or 'iou', got {metric!r}")
    out = []
    for c in det["labels"].unique().tolist():
        idx = (det["labels"] == c).nonzero().flatten()
        src = sources[idx].numpy() if sources is not None else None
        cuts = cut[idx].numpy() if cut is not None else None
        rule = _NMMRule(threshold, metric, cuts, duplicate_iou, piece_ratio)
        keep, boxes = _nmm_one_class(det["boxes"][idx].double().numpy(),
                                     det["scores"][idx].double().numpy(), src, rule)
        keep = torch.from_numpy(keep)
        out.append({"boxes": torch.from_numpy(boxes).float(), "scores": det["scores"][idx][keep],
                    "labels": det["labels"][idx][keep]})
    if not out:
        return empty_detections()
    return sort_and_cap(concat(out), float("-inf"), len(det["scores"]))


class _NMMRule:
    """Which candidates join a group: ``(grow, absorb)`` masks (see :func:`greedy_nmm`)."""

    def __init__(self, threshold: float, metric: str, cut: np.ndarray | None,
                 duplicate_iou: float, piece_ratio: float) -> None:
        self.threshold, self.metric, self.cut = threshold, metric, cut
        self.duplicate_iou, self.piece_ratio = duplicate_iou, piece_ratio

    def __call__(self, box: np.ndarray, others: np.ndarray, cand: np.ndarray,
                 group_cut: bool, weak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inter, small, union = _overlaps(box, others)
        if self.cut is None:
            grow = (inter / small if self.metric == "ios" else inter / union) > self.threshold
            return grow & ~weak, grow & weak
        piece = (self.cut[cand] | group_cut) & (inter / small > self.threshold)
        duplicate = ~piece & (inter / union > self.duplicate_iou)
        return piece & ~weak, duplicate | (piece & weak)


def _nmm_one_class(boxes: np.ndarray, scores: np.ndarray, sources: np.ndarray | None,
                   rule: _NMMRule) -> tuple[np.ndarray, np.ndarray]:
    """Greedy loop of :func:`greedy_nmm` for one class (numpy: the loop is sequential)."""
    order = np.argsort(-scores, kind="stable")
    free = np.ones(len(boxes), dtype=bool)
    keepers, merged = [], []
    for i in order:
        if not free[i]:
            continue
        free[i] = False
        box = boxes[i].copy()
        group_cut = bool(rule.cut[i]) if rule.cut is not None else False
        used = [sources[i]] if sources is not None else []
        while True:
            cand = np.flatnonzero(free)
            if used:
                cand = cand[~np.isin(sources[cand], used)]
            weak = scores[cand] < rule.piece_ratio * scores[i]
            grow, absorb = rule(box, boxes[cand], cand, group_cut, weak)
            joined = cand[grow | absorb]
            if len(joined) == 0:
                break
            free[joined] = False
            if used:
                used += sources[joined].tolist()
            if rule.cut is not None:
                group_cut = group_cut or bool(rule.cut[cand[grow]].any())
            group = np.concatenate([box[None], boxes[cand[grow]]])
            box = np.concatenate([group[:, :2].min(0), group[:, 2:].max(0)])
        keepers.append(i)
        merged.append(box)
    return np.array(keepers, dtype=np.int64), np.array(merged).reshape(-1, 4)


def _overlaps(box: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Intersection, smaller area and union of ``box`` ``(4,)`` with ``others`` ``(M, 4)``."""
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    areas = np.clip(others[:, 2:] - others[:, :2], 0, None).prod(axis=1)
    return (inter, np.maximum(np.minimum(area, areas), 1e-12),
            np.maximum(area + areas - inter, 1e-12))
