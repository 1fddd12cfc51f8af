"""The numeric core of COCO bbox evaluation: IoU, greedy matching and accumulation in numpy.

It reproduces pycocotools' ``COCOeval`` (``evaluate`` + ``accumulate`` + ``summarize``) to the
last bit, without its per-(image, category) Python loops:

* detections are grouped by (image, category) with one ``lexsort``; ``rank`` is a detection's
  position in its group after the stable sort by score (pycocotools' ``mergesort`` over
  ``-score``), and ranks ``>= maxDets[-1]`` are dropped as pycocotools does before matching;
* IoUs are computed only for (detection, ground truth) pairs of the same group, and pairs below
  the lowest IoU threshold are dropped: they can never match;
* the greedy matching is sequential only within a group, so it runs rank by rank over *all*
  groups at once, for all 4 area ranges x 10 IoU thresholds (40 "channels") at once;
* accumulation sorts the detections once by (category, -score) and handles all categories
  together: the interpolated precision needs the precision only at TPs, the recall thresholds
  become integer TP counts, and the envelope is a block maximum; every float is computed with
  the same operations as in pycocotools;
* categories are independent, so they go through all this in cache-sized runs.

Boxes here are COCO ``xywh`` float64 in pixels. Written in numpy because torchvision has no COCO
evaluator and pycocotools' C code covers only the IoU.

The same machinery serves keypoints (:mod:`scaledet.evaluation.keypoints`): pycocotools'
``evaluateImg`` and ``accumulate`` are the same for every ``iouType``; only the similarity of a
(detection, gt) pair (IoU or OKS), the area ranges and maxDets, and which gts are ignored differ.
:func:`evaluate_arrays` takes these as ``params``, ``pair_score`` and
:attr:`GroundTruthArrays.ignore`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0.0, 1e10), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e10))
AREA_NAMES = ("all", "small", "medium", "large")


@dataclass(frozen=True)
class EvalParams:
    """pycocotools' ``Params`` that differ between iou types (bbox, keypoints).

    ``area_ranges``: inclusive ``(lo, hi)`` ranges of the annotation ``area`` in square pixels,
    ``area_names`` their labels; ``max_dets``: detections per (image, category) counted, sorted
    ascending (the last one also caps the matching).
    """

    area_ranges: tuple[tuple[float, float], ...] = AREA_RANGES
    area_names: tuple[str, ...] = AREA_NAMES
    max_dets: tuple[int, ...] = MAX_DETS


BBOX_PARAMS = EvalParams()
"""``iouType="bbox"``: 4 area ranges, maxDets 1, 10, 100."""

PairScore = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``score(det_rows, gt_rows) -> (P,) float64``: the similarity of paired detections and gts,
given as rows of the :class:`DetectionArrays` / :class:`GroundTruthArrays` passed to
:func:`evaluate_arrays` (e.g. OKS); the default is :func:`coco_pair_iou` of their boxes."""


@dataclass
class GroundTruthArrays:
    """``G`` ground-truth boxes, in the order of the annotation list.

    ``img``/``cat`` are indices into the sorted image / category ids; ``boxes`` ``(G, 4)`` xywh;
    ``area`` the annotation's ``area`` field; ``crowd`` the ``iscrowd`` flag; ``id_is_zero``
    marks annotation id 0, which pycocotools cannot tell from "unmatched"; ``ignore`` (optional)
    marks gts ignored in every area range besides the crowd ones (keypoints: ``num_keypoints``
    0). Ignored gts can still be matched; their detections then count neither way.
    """

    img: np.ndarray
    cat: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    crowd: np.ndarray
    id_is_zero: np.ndarray
    ignore: np.ndarray | None = None

    def take(self, rows: np.ndarray | slice) -> GroundTruthArrays:
        """The gts at ``rows`` (an index array or a slice), every field alike."""
        return _take(self, rows)


@dataclass
class DetectionArrays:
    """``D`` detections in input order: ``img``/``cat`` indices, ``boxes`` ``(D, 4)`` xywh, ``score``."""

    img: np.ndarray
    cat: np.ndarray
    boxes: np.ndarray
    score: np.ndarray

    def take(self, rows: np.ndarray | slice) -> DetectionArrays:
        """The detections at ``rows`` (an index array or a slice), every field alike."""
        return _take(self, rows)


def _take(arrays, rows):
    return replace(arrays, **{f.name: getattr(arrays, f.name)[rows] for f in fields(arrays)
                              if getattr(arrays, f.name) is not None})


def evaluate_arrays(gt: GroundTruthArrays, dt: DetectionArrays, num_categories: int,
                    chunk_detections: int = 50_000, *, params: EvalParams = BBOX_PARAMS,
                    pair_score: PairScore | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Match and accumulate; returns pycocotools' ``precision`` ``(T, R, K, A, M)`` and
    ``recall`` ``(T, K, A, M)`` (-1 where a category has no non-ignored ground truth), with
    ``A``/``M`` the area ranges / maxDets of ``params``.

    ``pair_score`` replaces the box IoU as the similarity of a (detection, gt) pair (OKS for
    keypoints); it is called only for pairs of the same image and category, with detections
    among the top ``params.max_dets[-1]`` of theirs.

    Categories are independent, so they are evaluated in runs of about ``chunk_detections``
    detections: the arrays then stay in the CPU cache and memory stays bounded.
    """
    T, R = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    A, M = len(params.area_ranges), len(params.max_dets)
    K = num_categories
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    # stable sorts by category keep the input order within a category (it breaks score ties)
    d_order = np.argsort(dt.cat, kind="stable")
    g_order = np.argsort(gt.cat, kind="stable")
    dt, gt = dt.take(d_order), gt.take(g_order)
    d_end = np.searchsorted(dt.cat, np.arange(1, K + 1))
    g_start = np.searchsorted(gt.cat, np.arange(K))
    g_end = np.searchsorted(gt.cat, np.arange(1, K + 1))
    k0 = 0
    while k0 < K:
        d0 = d_end[k0 - 1] if k0 else 0
        k1 = max(k0 + 1, int(np.searchsorted(d_end, d0 + chunk_detections, side="right")))
        d, g = slice(d0, d_end[k1 - 1]), slice(g_start[k0], g_end[k1 - 1])
        dt_k, gt_k = dt.take(d), gt.take(g)
        dt_k, gt_k = replace(dt_k, cat=dt_k.cat - k0), replace(gt_k, cat=gt_k.cat - k0)
        score_k = None if pair_score is None else _on_rows(pair_score, d_order[d], g_order[g])
        precision[:, :, k0:k1], recall[:, k0:k1] = _evaluate_categories(gt_k, dt_k, k1 - k0,
                                                                        params, score_k)
        k0 = k1
    return precision, recall


def _on_rows(score: PairScore, det_rows: np.ndarray, gt_rows: np.ndarray) -> PairScore:
    """``score`` for arrays that are ``det_rows``/``gt_rows`` of the ones it was written for."""
    return lambda d, g: score(det_rows[d], gt_rows[g])


def _evaluate_categories(gt: GroundTruthArrays, dt: DetectionArrays, K: int, params: EvalParams,
                         pair_score: PairScore | None) -> tuple[np.ndarray, np.ndarray]:
    """``evaluate_arrays`` for categories ``0..K-1`` at once."""
    d = _sort_and_truncate(dt, K, params.max_dets[-1])
    g_order = np.argsort(gt.img * K + gt.cat, kind="stable")
    g = gt.take(g_order)
    if pair_score is None:
        def score(i: np.ndarray, j: np.ndarray) -> np.ndarray:
            return coco_pair_iou(d.boxes[i], g.boxes[j], g.crowd[j])
    else:
        score = _on_rows(pair_score, d.row, g_order)
    gt_ignored = _outside(g.area, params.area_ranges) | g.crowd[None, :]  # (A, G)
    if g.ignore is not None:
        gt_ignored |= g.ignore[None, :]
    det_outside = _outside(d.area, params.area_ranges)  # (A, D)
    pair_det, pair_gt, pair_iou = _candidate_pairs(d, g, K, score)
    # only detections with a candidate pair can ever match: the rest are plain FPs (or ignored)
    cand, pair_cand = np.unique(pair_det, return_inverse=True)
    match = _greedy_match(pair_cand, pair_gt, pair_iou, d.rank[pair_det], g.crowd, gt_ignored,
                          len(cand))
    tp, fp = _true_false_positives(match, gt_ignored, g.id_is_zero, det_outside[:, cand])
    npig = np.stack([np.bincount(g.cat[~ign], minlength=K) for ign in gt_ignored], axis=1)
    return _accumulate(d, cand, tp, fp, det_outside, npig, params.max_dets)


@dataclass
class _SortedDetections:
    img: np.ndarray
    cat: np.ndarray
    boxes: np.ndarray
    score: np.ndarray
    area: np.ndarray
    rank: np.ndarray  # position within its (image, category) group, by score
    row: np.ndarray  # the detection's row in the arrays it was sorted from


def _sort_and_truncate(dt: DetectionArrays, K: int, max_det: int) -> _SortedDetections:
    """Sort by (image, category, -score), stable in input order; keep ranks < ``max_det``."""
    key = dt.img * K + dt.cat
    order = np.lexsort((-dt.score, key))
    key = key[order]
    new_group = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, bool)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(key)), 0))
    rank = np.arange(len(key)) - group_start
    keep = order[rank < max_det]
    boxes = dt.boxes[keep]
    # loadRes sets a detection's area to w * h of its bbox
    return _SortedDetections(dt.img[keep], dt.cat[keep], boxes, dt.score[keep],
                             boxes[:, 2] * boxes[:, 3], rank[rank < max_det], keep)


def _outside(area: np.ndarray, area_ranges: tuple[tuple[float, float], ...]) -> np.ndarray:
    """``(A, N)`` bool: area outside each area range (the ranges are inclusive)."""
    lo = np.array([r[0] for r in area_ranges])[:, None]
    hi = np.array([r[1] for r in area_ranges])[:, None]
    return (area[None, :] < lo) | (area[None, :] > hi)


def _candidate_pairs(d: _SortedDetections, g: GroundTruthArrays, K: int,
                     score: PairScore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All same-group (detection, gt) pairs with ``score`` (IoU) >= the lowest threshold.

    Returned sorted by (detection rank, detection, gt) so that each matching round is a slice.
    """
    g_key = g.img * K + g.cat
    d_key = d.img * K + d.cat
    lo = np.searchsorted(g_key, d_key, side="left")
    n = np.searchsorted(g_key, d_key, side="right") - lo
    pair_det = np.repeat(np.arange(len(d_key)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    pair_gt = lo[pair_det] + np.arange(len(pair_det)) - first
    iou = score(pair_det, pair_gt)
    keep = np.flatnonzero(iou >= _thresholds()[0])
    keep = keep[np.argsort(d.rank[pair_det[keep]], kind="stable")]
    return pair_det[keep], pair_gt[keep], iou[keep]


def coco_pair_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired xywh boxes ``(P, 4)``, ``(P, 4)``, as pycocotools' ``maskUtils.iou``.

    For a crowd gt the union is the detection's area (the fraction of the detection inside the
    crowd region). The operations follow pycocotools' C code so the floats are identical.
    """
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    overlap = (w > 0) & (h > 0)
    inter = np.where(overlap, w * h, 0.0)
    dt_area = dt[:, 2] * dt[:, 3]
    union = np.where(crowd, dt_area, dt_area + gt[:, 2] * gt[:, 3] - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=overlap)


def _thresholds() -> np.ndarray:
    """The IoU thresholds as pycocotools compares them: ``min(t, 1 - 1e-10)``."""
    return np.minimum(IOU_THRESHOLDS, 1 - 1e-10)


def _greedy_match(pair_det: np.ndarray, pair_gt: np.ndarray, pair_iou: np.ndarray,
                  pair_rank: np.ndarray, crowd: np.ndarray, gt_ignored: np.ndarray,
                  num_dets: int) -> np.ndarray:
    """pycocotools' greedy matching for every (area range, IoU threshold) channel at once.

    Detections are visited by score within their group, so all detections of the same rank (one
    per group at most, groups never share gts) are matched together. A detection takes, among
    the gts still free (crowd gts are never used up) with IoU >= the threshold, a non-ignored gt
    if there is one, else an ignored one; the highest IoU, and on ties the later gt in
    annotation order (pycocotools' loop keeps the last ``>=``).

    Pairs come sorted by (rank, detection, gt). Returns ``(A * T, num_dets)`` int32: the matched
    gt index per channel (channel ``a * T + t``), -1 if unmatched.
    """
    T = len(IOU_THRESHOLDS)
    thr = np.tile(_thresholds(), len(gt_ignored))[:, None]  # (C, 1)
    ign = np.repeat(gt_ignored, T, axis=0)  # (C, G)
    used = np.zeros_like(ign)
    match = np.full((len(thr), num_dets), -1, dtype=np.int32)
    if len(pair_det) == 0:
        return match
    bounds = np.flatnonzero(np.r_[True, pair_rank[1:] != pair_rank[:-1], True])
    for s, e in zip(bounds[:-1], bounds[1:]):
        det, gts, iou = pair_det[s:e], pair_gt[s:e], pair_iou[s:e]
        new_det = np.r_[True, det[1:] != det[:-1]]
        starts, seg = np.flatnonzero(new_det), np.cumsum(new_det) - 1
        ok = (~used[:, gts] | crowd[gts]) & (iou >= thr)
        priority = ok * (2 - ign[:, gts])  # 2: free non-ignored, 1: free ignored, 0: not allowed
        best = np.maximum.reduceat(priority, starts, axis=1)
        cand = (priority == best[:, seg]) & (priority > 0)
        cand_iou = np.where(cand, iou, -1.0)
        cand &= cand_iou == np.maximum.reduceat(cand_iou, starts, axis=1)[:, seg]
        pick = np.maximum.reduceat(np.where(cand, np.arange(len(det)), -1), starts, axis=1)
        c, k = np.nonzero(pick >= 0)
        chosen = gts[pick[c, k]]
        used[c, chosen] = True
        match[c, det[starts[k]]] = chosen
    return match


def _true_false_positives(match: np.ndarray, gt_ignored: np.ndarray, id_is_zero: np.ndarray,
                          det_outside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A * T, D)`` bool TP and FP flags; ignored detections are neither.

    A detection is ignored if matched to an ignored gt, or unmatched with its area outside the
    range. pycocotools stores the matched gt *id* and tests it for non-zero, so a match to an
    annotation with id 0 counts as unmatched; that is kept for identical numbers.
    """
    T = len(IOU_THRESHOLDS)
    matched = match >= 0
    gt = np.where(matched, match, 0)
    ign = np.repeat(gt_ignored, T, axis=0)
    matched_ign = matched & np.take_along_axis(ign, gt, axis=1) if ign.size else matched
    counted = matched & ~id_is_zero[gt] if len(id_is_zero) else matched
    det_ign = matched_ign | (~counted & np.repeat(det_outside, T, axis=0))
    return counted & ~det_ign, ~counted & ~det_ign


def _accumulate(d: _SortedDetections, cand: np.ndarray, tp: np.ndarray, fp: np.ndarray,
                outside: np.ndarray, npig: np.ndarray,
                max_dets: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Precision ``(T, R, K, A, M)`` and recall ``(T, K, A, M)``.

    ``cand`` indexes the detections that have candidate pairs, ``tp``/``fp`` ``(A * T, Nc)`` are
    their flags; every other detection is a FP unless its area is ``outside`` the range.
    Per category, pycocotools concatenates the images' top-``maxDet`` detections (in image id
    order) and stable-sorts them by -score: the same order as a stable sort of our (image,
    category, rank) order by (category, -score).
    """
    T, R, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(outside), len(max_dets)
    K = len(npig)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    order = np.lexsort((-d.score, d.cat))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    corder = np.argsort(position[cand])
    cpos, tp, fp = position[cand][corder], tp[:, corder], fp[:, corder]
    cat, rank, inside = d.cat[order], d.rank[order], ~outside[:, order]
    ccat = cat[cpos]
    start_all, _ = _segments(cat, K)
    for m, max_det in enumerate(max_dets):
        # running count of FPs if every detection were unmatched, read at the candidates
        plain_fp = inside & (rank < max_det)  # (A, N)
        plain_sum = np.cumsum(plain_fp, axis=1, dtype=np.int32)
        before = np.concatenate([np.zeros((A, 1), np.int32), plain_sum], axis=1)[:, start_all]
        plain_at = plain_sum[:, cpos] - before[:, ccat]  # (A, Nc)
        included = rank[cpos] < max_det
        for a in range(A):
            rows = slice(a * T, (a + 1) * T)
            is_tp = tp[rows] & included
            # the candidates' corrections to the plain count; other columns change nothing
            fix = (fp[rows] & included).astype(np.int8) - plain_fp[a, cpos]
            cols = np.flatnonzero((is_tp | (fix != 0)).any(axis=0))
            fp_sum = plain_at[a, cols] + _segment_cumsum(fix[:, cols], *_segments(ccat[cols], K))
            p, r = _precision_recall(is_tp[:, cols], fp_sum, ccat[cols], npig[:, a])
            precision[:, :, :, a, m] = p
            recall[:, :, a, m] = r
    return precision, recall


def _segments(cat: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of each category's run in a category-sorted array."""
    n = np.bincount(cat, minlength=K)
    return np.cumsum(n) - n, n


def _segment_cumsum(x: np.ndarray, start: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``(T, N)`` inclusive cumsum along axis 1, restarting at each segment start, int32."""
    c = np.cumsum(x, axis=1, dtype=np.int32)
    before = np.concatenate([np.zeros((len(c), 1), np.int32), c], axis=1)[:, start]
    return c - np.repeat(before, n, axis=1)


def _precision_recall(is_tp: np.ndarray, fp_sum: np.ndarray, cat: np.ndarray,
                      npig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision ``(T, R, K)`` and recall ``(T, K)`` for one (area, maxDet).

    ``is_tp``, ``fp_sum`` ``(T, Nc)``: TP flag and running FP count at candidate detections
    sorted by (category ``cat``, -score); ``npig`` ``(K,)`` non-ignored gt counts.

    pycocotools takes ``q[r] = max(pr[i:])`` at ``i`` = the first detection whose recall
    ``tp / npig`` reaches threshold r. Precision rises only at TPs and ``tp`` counts 1, 2, ...
    there, so this is the max of ``pr`` over the TPs from the c-th on, c the smallest count
    whose ``c / npig`` reaches the threshold: only TPs are needed, and every ``pr`` value is
    the float pycocotools computes.
    """
    T = len(is_tp)
    K, R = len(npig), len(RECALL_THRESHOLDS)
    t, j = np.nonzero(is_tp)  # row-major: segments (t, k) come out in order
    seg = t * K + cat[j]
    n_tp = np.bincount(seg, minlength=T * K)
    start = np.cumsum(n_tp) - n_tp
    tp_at = np.arange(len(seg)) - start[seg] + 1  # the running TP count at each TP
    fp_at = fp_sum[t, j]
    pr = tp_at / (fp_at + tp_at + np.spacing(1))  # same float ops as pycocotools
    n_tp, start = n_tp.reshape(T, K), start.reshape(T, K)
    has_gt = npig > 0
    recall = np.where(has_gt, n_tp / np.maximum(npig, 1), -1.0)
    first = np.maximum(_counts_reaching(npig), 1) - 1  # (K, R) index of that TP in the segment
    b = start[:, :, None] + np.minimum(first[None], n_tp[:, :, None])
    bounds = np.concatenate([b, (start + n_tp)[:, :, None]], axis=2).ravel()
    # max of pr over [b_r, b_r+1), then the running max from the right
    block = np.maximum.reduceat(np.r_[pr, 0.0], bounds)
    block = np.where(bounds[:-1] < bounds[1:], block[:-1], 0.0)
    block = np.r_[block, 0.0].reshape(T, K, R + 1)[:, :, :R]
    q = np.maximum.accumulate(block[:, :, ::-1], axis=2)[:, :, ::-1]
    q = np.where(has_gt[None, :, None], q, -1.0)
    return q.transpose(0, 2, 1), recall


def _counts_reaching(npig: np.ndarray) -> np.ndarray:
    """``(K, R)`` smallest integer c with ``c / npig >= recThr`` in float64."""
    n = np.maximum(npig, 1).astype(np.float64)[:, None, None]
    guess = np.floor(RECALL_THRESHOLDS[None, :] * n[..., 0]).astype(np.int64) - 1
    cands = np.maximum(guess[:, :, None] + np.arange(4), 0)  # (K, R, 4), ascending
    ok = cands / n >= RECALL_THRESHOLDS[None, :, None]  # the last candidate always is
    return np.take_along_axis(cands, ok.argmax(axis=2)[..., None], axis=2)[..., 0]


BBOX_STATS = ((1, None, 0, 2), (1, 0.5, 0, 2), (1, 0.75, 0, 2), (1, None, 1, 2),
              (1, None, 2, 2), (1, None, 3, 2), (0, None, 0, 0), (0, None, 0, 1),
              (0, None, 0, 2), (0, None, 1, 2), (0, None, 2, 2), (0, None, 3, 2))
"""pycocotools' ``_summarizeDets``: ``(is AP, IoU threshold or None for all, area index, maxDets
index)`` of AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl."""


def summarize(precision: np.ndarray, recall: np.ndarray,
              specs: tuple[tuple[int, float | None, int, int], ...] = BBOX_STATS) -> np.ndarray:
    """The COCO stats from ``precision``/``recall``, as pycocotools' ``summarize``.

    ``specs``: one ``(is AP, IoU threshold or None, area index, maxDets index)`` per stat; the
    default gives the 12 bbox stats (:data:`BBOX_STATS`). -1 when no category has ground truth
    for a stat.
    """
    stats = np.zeros(len(specs))
    for i, (ap, iou, a, m) in enumerate(specs):
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[..., a, m]
        stats[i] = np.mean(s[s > -1]) if np.any(s > -1) else -1
    return stats
