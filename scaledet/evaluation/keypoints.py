"""COCO keypoint evaluation (OKS) with pycocotools' exact numbers, in numpy.

Use it on files or in-memory lists::

    result = evaluate_keypoints("person_keypoints_val.json", "results.json")
    print(result.summary())        # pycocotools' 10-line layout
    result.stats                    # (10,) AP, AP50, AP75, AP_medium, AP_large, AR, AR50, AR75, ...
    result.metrics["AP"]            # the same stats by name (KEYPOINT_STAT_NAMES)

    evaluate_keypoints(gt, dets, sigmas=[0.025, 0.025, 0.035, 0.035, 0.079])   # K = 5 joints

Ground truth: a COCO json whose annotations carry ``keypoints`` (``[x1, y1, v1, x2, ...]``, K
points, ``v > 0`` labelled), ``num_keypoints``, ``bbox``, ``area`` and ``iscrowd``; a category
may name its joints (``keypoints``) and give its OKS ``sigmas``. Results: a list of
``{image_id, category_id, keypoints [x, y, score] * K, score}``.

The numbers are those of pycocotools' ``COCOeval(iouType="keypoints")``, quirks included:

* OKS (``computeOks``): ``exp(-d^2 / (2 * area * (2 * sigma)^2))`` averaged over the gt's
  labelled points (``v > 0``; ``v = 1`` "labelled but occluded" counts); against a gt without
  labelled points, ``d`` is each detected point's distance to the gt box grown by its width and
  height on every side, averaged over all K points. ``area`` is the gt's ``area`` field.
* a gt is ignored when it is a crowd or its ``num_keypoints`` field is 0 (the field, not the
  flags); ignored gts still absorb the detections that match them;
* area ranges all, medium (32^2..96^2) and large (96^2..), on the gt's ``area`` field and the
  detection's area: the box spanned by all its K points, or ``w * h`` of its ``bbox`` when the
  *first* detection of the file has a non-empty ``bbox`` (pycocotools' ``loadRes`` then treats
  the file as box results);
* at most 20 detections per image and category (the highest scores; ties keep the input
  order, pycocotools' mergesort), greedy matching at OKS 0.50:0.95 as for boxes.

The matching and accumulation are the box evaluator's (:mod:`scaledet.evaluation.coco_engine`),
given OKS as the pair similarity. K = 17 uses COCO's person sigmas; any other K needs sigmas
(``sigmas=`` / ``--sigmas``, or a ``sigmas`` list in the category), else a ``ValueError`` names
the file, the category and K. Unlike pycocotools, ``num_keypoints`` may be absent (it is then
the count of labelled points) and malformed input raises ``ValueError`` naming the file and the
entry. Detections with a ``file_name`` are placed on the ground truth's images by file name, as
for boxes (:func:`~scaledet.evaluation.coco.match_images`). A ``segmentation`` on the results
(without a ``bbox``), which pycocotools would turn into the detection's area, is not read.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from scaledet.evaluation.coco import (
    CocoGroundTruth,
    ImageMatch,
    _box_array,
    _column,
    _float_array,
    _int_array,
    _lookup,
    _read_json,
    load_ground_truth,
    match_images,
)
from scaledet.evaluation.coco_engine import (
    IOU_THRESHOLDS,
    RECALL_THRESHOLDS,
    DetectionArrays,
    EvalParams,
    GroundTruthArrays,
    PairScore,
    evaluate_arrays,
    summarize,
)

COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07,
                        .87, .87, .89, .89]) / 10.0
"""OKS sigmas of COCO's 17 person joints (nose, eyes, ears, shoulders, elbows, wrists, hips,
knees, ankles), computed as pycocotools does so that the floats are the same."""

KEYPOINT_PARAMS = EvalParams(area_ranges=((0.0, 1e10), (32.0**2, 96.0**2), (96.0**2, 1e10)),
                             area_names=("all", "medium", "large"), max_dets=(20,))
"""pycocotools' keypoint ``Params``: areas all, medium, large; 20 detections per image."""

KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "AP_medium", "AP_large",
                       "AR", "AR50", "AR75", "AR_medium", "AR_large")
"""The 10 OKS stats in pycocotools' order (``_summarizeKps``), as named in ``metrics``."""

KEYPOINT_STATS = ((1, None, 0, 0), (1, 0.5, 0, 0), (1, 0.75, 0, 0), (1, None, 1, 0),
                  (1, None, 2, 0), (0, None, 0, 0), (0, 0.5, 0, 0), (0, 0.75, 0, 0),
                  (0, None, 1, 0), (0, None, 2, 0))
"""``(is AP, OKS threshold or None for all, area index, maxDets index)`` of each stat."""


# ---------------------------------------------------------------------------------------------
# OKS


def object_keypoint_similarity(dt_xy: np.ndarray, gt_keypoints: np.ndarray, gt_boxes: np.ndarray,
                               gt_area: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS of ``P`` (detection, ground truth) pairs, bit for bit as pycocotools' ``computeOks``.

    Args:
        dt_xy: ``(P, K, 2)`` detected points in pixels (a third column, e.g. scores, is ignored).
        gt_keypoints: ``(P, K, 3)`` ground-truth ``x, y, v``; points with ``v > 0`` count.
        gt_boxes: ``(P, 4)`` ground-truth boxes ``x, y, w, h``: without labelled points, the
            distance is taken to this box grown by ``w``/``h`` on each side.
        gt_area: ``(P,)`` the ground truth's ``area`` in square pixels (the OKS scale s^2).
        sigmas: ``(K,)`` or ``(P, K)`` per-joint sigmas (fractions of the object scale).

    Returns:
        ``(P,)`` float64 in [0, 1].
    """
    xd, yd = dt_xy[..., 0], dt_xy[..., 1]
    xg, yg, visible = gt_keypoints[..., 0], gt_keypoints[..., 1], gt_keypoints[..., 2] > 0
    labelled = visible.any(axis=1)[:, None]
    bx, by, bw, bh = (gt_boxes[:, i:i + 1] for i in range(4))
    dx = np.where(labelled, xd - xg,
                  np.maximum(0.0, (bx - bw) - xd) + np.maximum(0.0, xd - (bx + bw * 2)))
    dy = np.where(labelled, yd - yg,
                  np.maximum(0.0, (by - bh) - yd) + np.maximum(0.0, yd - (by + bh * 2)))
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    e = (dx**2 + dy**2) / variances / (gt_area[:, None] + np.spacing(1)) / 2
    counted = np.where(labelled, visible, True)
    return _mean_of_counted(np.exp(-e), counted)


def _mean_of_counted(values: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """``(P,)`` mean of each row's ``counted`` entries, summed in numpy's order for a 1-D array
    of those entries (pycocotools sums ``exp(-e)[v > 0]``), so the floats are the same."""
    n = counted.sum(axis=1)
    sums = np.zeros(len(values))
    for count in np.unique(n).tolist():
        rows = np.flatnonzero(n == count)
        sums[rows] = _pairwise_sum(values[rows][counted[rows]].reshape(len(rows), count))
    return sums / np.maximum(n, 1)


def _pairwise_sum(a: np.ndarray) -> np.ndarray:
    """Row sums of ``(P, n)`` in the order of numpy's pairwise summation of one row: under 8
    values left to right; up to 128 in 8 interleaved partial sums, combined as a tree, then the
    rest; longer rows split in two at a multiple of 8."""
    n = a.shape[1]
    if n < 8:
        total = np.zeros(len(a))
        for i in range(n):
            total = total + a[:, i]
        return total
    if n <= 128:
        m = n - n % 8
        r = a[:, :8].copy()
        for i in range(8, m, 8):
            r += a[:, i:i + 8]
        total = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5])
                                                               + (r[:, 6] + r[:, 7]))
        for i in range(m, n):
            total = total + a[:, i]
        return total
    half = n // 2 - (n // 2) % 8
    return _pairwise_sum(a[:, :half]) + _pairwise_sum(a[:, half:])


# ---------------------------------------------------------------------------------------------
# reading input


@dataclass
class KeypointGroundTruth:
    """A validated COCO keypoint ground truth.

    ``coco`` holds images, categories, boxes, areas and crowd flags exactly as for box
    evaluation; ``keypoints`` ``(G, Kmax, 3)`` float64 ``x, y, v`` per annotation (zero-padded
    past its category's K); ``num_keypoints`` ``(G,)`` the field (or the count of ``v > 0``);
    ``joints`` ``(C,)`` K of each category (0: unknown, no names and no annotations);
    ``sigmas`` ``(C, Kmax)`` OKS sigmas per category (NaN where not needed).
    """

    coco: CocoGroundTruth
    keypoints: np.ndarray
    num_keypoints: np.ndarray
    joints: np.ndarray
    sigmas: np.ndarray

    @property
    def source(self) -> str:
        return self.coco.source

    def arrays(self) -> GroundTruthArrays:
        """The box evaluator's arrays, with gts of ``num_keypoints`` 0 ignored."""
        return replace(self.coco.arrays, ignore=self.num_keypoints == 0)


def load_keypoint_ground_truth(gt: str | Path | dict,
                               sigmas: Sequence[float] | None = None) -> KeypointGroundTruth:
    """Read and validate a COCO keypoint ground truth (json path or dict).

    Every annotation needs ``keypoints`` with 3K numbers, K the same within a category (the
    length of the category's ``keypoints`` names when it has them). ``sigmas`` (K values) is
    used for every category with annotations; without it, a category's own ``sigmas`` list,
    else COCO's for K = 17; otherwise ``ValueError`` naming the file, the category and K.
    """
    source = str(gt) if isinstance(gt, (str, Path)) else "ground truth"
    data = _read_json(gt) if isinstance(gt, (str, Path)) else gt
    coco = load_ground_truth(data, source=source)
    anns = data["annotations"]
    flat, lengths = _keypoint_lists(_column(anns, "keypoints", source, "annotation"), source,
                                    "annotation")
    counts = lengths // 3
    cats = {int(c["id"]): c for c in data["categories"]}
    categories = [cats[int(i)] for i in coco.category_ids.tolist()]
    named = np.array([_joint_names(c) for c in categories], np.int64)
    joints = named.copy()
    cat = coco.arrays.cat
    annotated, first = np.unique(cat, return_index=True)  # each category's first annotation
    unnamed = joints[annotated] == 0
    joints[annotated[unnamed]] = counts[first[unnamed]]
    bad = counts != joints[cat]
    if bad.any():
        i = int(np.argmax(bad))
        k = int(cat[i])
        why = ("names" if named[k] else
               f"has, by its first annotation ({int(first[annotated == k][0])}),")
        raise ValueError(f"{source}: annotation {i}: {lengths[i]} keypoint values ({counts[i]} "
                         f"points), but category {_category(coco, k)} {why} {joints[k]} "
                         f"keypoints (expected {3 * joints[k]} values)")
    k_max = int(max(joints.max(initial=0), 1))
    keypoints = _pad(flat, lengths, k_max)
    labelled = (keypoints[:, :, 2] > 0).sum(axis=1)
    given = _column(anns, "num_keypoints", source, "annotation", default=None)
    num = _float_array([labelled[i] if v is None else v for i, v in enumerate(given)], source,
                       "annotation", "num_keypoints")
    has_annotations = np.bincount(cat, minlength=len(categories)) > 0
    table = _sigma_table(sigmas, categories, joints, has_annotations, coco, k_max)
    return KeypointGroundTruth(coco, keypoints, num, joints, table)


def _joint_names(category: dict) -> int:
    names = category.get("keypoints")
    return len(names) if isinstance(names, list) else 0


def _category(coco: CocoGroundTruth, k: int) -> str:
    return f"{coco.category_names[k]!r} (id {int(coco.category_ids[k])})"


def _keypoint_lists(values: list, source: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(flat float64 values, (N,) lengths)`` of N lists of ``[x, y, v] * K`` (K >= 1)."""
    sequence = (list, tuple)
    try:
        ok = all(isinstance(v, sequence) for v in values)
        lengths = np.fromiter(map(len, values), np.int64, len(values)) if ok else None
        ok = ok and bool(((lengths % 3 == 0) & (lengths > 0)).all())
        flat = np.fromiter(itertools.chain.from_iterable(values), np.float64,
                           int(lengths.sum())) if ok else None
    except (TypeError, ValueError):
        ok = False
    if not ok:
        for i, v in enumerate(values):
            if not (isinstance(v, sequence) and len(v) % 3 == 0 and len(v) > 0):
                raise ValueError(f"{source}: {what} {i}: keypoints must be a list of "
                                 f"[x, y, v] * K numbers (K >= 1), got {v!r:.80}") from None
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ValueError(f"{source}: {what} {i}: keypoints must be numbers, "
                                 f"got {v!r:.80}") from None
        raise ValueError(f"{source}: {what}s: unreadable keypoints")
    if not np.isfinite(flat).all():
        i = int(np.searchsorted(np.cumsum(lengths), np.argmax(~np.isfinite(flat)), side="right"))
        raise ValueError(f"{source}: {what} {i}: keypoints have a non-finite value")
    return flat, lengths


def _pad(flat: np.ndarray, lengths: np.ndarray, k_max: int) -> np.ndarray:
    """``(N, k_max, 3)`` from the concatenated lists, zeros past each list's end."""
    out = np.zeros((len(lengths), 3 * k_max))
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = flat
    return out.reshape(len(lengths), k_max, 3)


def _sigma_table(sigmas: Sequence[float] | None, categories: list[dict], joints: np.ndarray,
                 needed: np.ndarray, coco: CocoGroundTruth, k_max: int) -> np.ndarray:
    """``(C, k_max)`` the sigmas of each category that has annotations (NaN elsewhere)."""
    table = np.full((len(categories), k_max), np.nan)
    for k, category in enumerate(categories):
        K = int(joints[k])
        if not needed[k] or K == 0:
            continue
        if sigmas is not None:
            values, origin = sigmas, "sigmas given (--sigmas)"
        elif category.get("sigmas") is not None:
            values, origin = category["sigmas"], "'sigmas' of the category"
        elif K == len(COCO_SIGMAS):
            values, origin = COCO_SIGMAS, "COCO's"
        else:
            raise ValueError(
                f"{coco.source}: category {_category(coco, k)} has K={K} keypoints; OKS needs "
                f"one sigma per keypoint and COCO's sigmas are for K=17: give {K} sigmas "
                f"(scaledet eval --sigmas s1,...,s{K}; Python: sigmas=[...]) or a 'sigmas' list "
                "in the category")
        try:
            arr = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"{coco.source}: category {_category(coco, k)}: the {origin} must "
                             f"be numbers, got {values!r:.80}") from None
        if len(arr) != K:
            raise ValueError(f"{coco.source}: category {_category(coco, k)} has K={K} "
                             f"keypoints but the {origin} are {len(arr)} values")
        if not (np.isfinite(arr).all() and (arr > 0).all()):
            raise ValueError(f"{coco.source}: category {_category(coco, k)}: the {origin} must "
                             f"be positive numbers, got {arr.tolist()}")
        table[k, :K] = arr
    return table


def _keypoint_entries(data: list, gt: KeypointGroundTruth, source: str) -> list:
    """``data`` without the box-only detections of classes that have no keypoints (those of a
    multi-class detector's predictions beside a pose model's people), with a warning that
    counts them; a detection of a keypoint category without keypoints is an error."""
    has = [isinstance(d, dict) and "keypoints" in d for d in data]
    if all(has):
        return data
    missing = [i for i, h in enumerate(has) if not h]
    cats = _int_array(_column([data[i] for i in missing], "category_id", source, "detection"),
                      source, "detection", "category_id")
    ids = gt.coco.category_ids
    known = np.isin(cats, ids)
    joints = np.zeros(len(cats), np.int64)
    joints[known] = gt.joints[np.searchsorted(ids, cats[known])]
    if (joints > 0).any():
        j = int(np.argmax(joints > 0))
        raise ValueError(f"{source}: detection {missing[j]} has no 'keypoints', but category "
                         f"{int(cats[j])} of {gt.source} has {joints[j]} keypoints")
    warnings.warn(f"{source}: {len(missing)} of {len(data)} detections have no keypoints "
                  "(classes without keypoints); left out of the keypoint evaluation",
                  stacklevel=3)
    return [d for d, h in zip(data, has) if h]


def read_keypoint_results(results: list | str | Path, gt: KeypointGroundTruth
                          ) -> tuple[DetectionArrays, np.ndarray, ImageMatch]:
    """Validate keypoint results (``[{image_id, category_id, keypoints, score}, ...]`` or a json
    file of it) against ``gt``.

    Returns ``(arrays, xy, match)``: the detections placed on ``gt``'s images (input order), with
    ``arrays.boxes`` the box whose area decides the area range (see the module notes); ``xy``
    ``(D, Kmax, 2)`` their points; ``match`` how they were placed (:func:`match_images`).
    """
    source = str(results) if isinstance(results, (str, Path)) else "detections"
    data = _read_json(results) if isinstance(results, (str, Path)) else results
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of keypoint detections "
                         "[{image_id, category_id, keypoints, score}, ...]")
    what = "detection"
    data = _keypoint_entries(data, gt, source)
    img = _int_array(_column(data, "image_id", source, what), source, what, "image_id")
    cat = _int_array(_column(data, "category_id", source, what), source, what, "category_id")
    flat, lengths = _keypoint_lists(_column(data, "keypoints", source, what), source, what)
    score = _float_array(_column(data, "score", source, what), source, what, "score")
    names = _column(data, "file_name", source, what, default=None)
    img, keep, match = match_images(img, names, gt.coco)
    if not keep.all():  # left out: any valid id, so that errors name the input's positions
        img = np.where(keep, img, gt.coco.image_ids[0])
    img = _lookup(gt.coco.image_ids, img, source, what, "image_id")
    cat = _lookup(gt.coco.category_ids, cat, source, what, "category_id")
    expected = gt.joints[cat]
    bad = (expected > 0) & (lengths != 3 * expected)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{source}: detection {i}: {lengths[i]} keypoint values, but category "
                         f"{_category(gt.coco, int(cat[i]))} of {gt.source} has "
                         f"{expected[i]} keypoints (expected {3 * expected[i]} values)")
    k_max = max(gt.keypoints.shape[1], int(lengths.max(initial=3)) // 3)
    xy = _pad(flat, lengths, k_max)[:, :, :2]
    if data and isinstance(data[0], dict) and data[0].get("bbox") not in (None, []):
        boxes = _box_array(_column(data, "bbox", source, what), source, what)
    else:
        present = (np.arange(k_max)[None, :] < (lengths // 3)[:, None])[:, :, None]
        lo = np.where(present, xy, np.inf).min(axis=1)
        hi = np.where(present, xy, -np.inf).max(axis=1)
        boxes = np.concatenate([lo, hi - lo], axis=1)
    arrays = DetectionArrays(img, cat, boxes, score)
    if not keep.all():
        arrays, xy = arrays.take(keep), xy[keep]
    return arrays, xy, match


# ---------------------------------------------------------------------------------------------
# results


def format_keypoint_stats(stats: Sequence[float]) -> str:
    """pycocotools' 10-line keypoint summary of the stats (AP, AP50, ..., AR_large)."""
    lines = []
    for value, name in zip(stats, KEYPOINT_STAT_NAMES):
        base, _, area = name.partition("_")
        ap = base.startswith("AP")
        iou = {"50": "0.50", "75": "0.75"}.get(base[2:], "0.50:0.95")
        title = "Average Precision" if ap else "Average Recall"
        kind = "(AP)" if ap else "(AR)"
        lines.append(f" {title:<18} {kind} @[ IoU={iou:<9} | area={area or 'all':>6s} | "
                     f"maxDets={KEYPOINT_PARAMS.max_dets[-1]:>3d} ] = {value:0.3f}")
    return "\n".join(lines)


@dataclass
class KeypointEvalResult:
    """The outcome of a COCO keypoint (OKS) evaluation.

    Attributes:
        stats: ``(10,)`` AP, AP50, AP75, AP_medium, AP_large, AR, AR50, AR75, AR_medium,
            AR_large (-1 where no category has ground truth), pycocotools' ``stats``.
        precision: ``(T, R, K, A, M)`` = (10 OKS thresholds, 101 recall thresholds,
            categories, 3 area ranges, 1 maxDets), pycocotools' ``eval['precision']``.
        recall: ``(T, K, A, M)``, pycocotools' ``eval['recall']``.
        category_ids: ``K`` COCO category ids (sorted), the ``K`` axis.
        category_names: ``K`` names, same order.

    ``result["stats"]``, ``result["metrics"]`` etc. also work, so it can be used like a dict.
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    category_ids: list[int]
    category_names: list[str]

    iou_thresholds = IOU_THRESHOLDS
    recall_thresholds = RECALL_THRESHOLDS
    area_names = KEYPOINT_PARAMS.area_names
    max_dets = KEYPOINT_PARAMS.max_dets

    def __getitem__(self, key: str) -> Any:
        if key not in ("stats", "precision", "recall", "per_category", "metrics",
                       "category_ids", "category_names"):
            raise KeyError(key)
        return getattr(self, key)

    @property
    def metrics(self) -> dict[str, float]:
        """The 10 stats named by :data:`KEYPOINT_STAT_NAMES` (``AP``, ``AP50``, ...)."""
        return {n: float(v) for n, v in zip(KEYPOINT_STAT_NAMES, self.stats)}

    @property
    def per_category(self) -> dict[str, float]:
        """``{category name: AP@[.5:.95]}`` (area all); -1 for no ground truth."""
        return {name: row["AP"] for name, row in self.per_category_stats().items()}

    def per_category_stats(self) -> dict[str, dict[str, float]]:
        """``{name: {"AP", "AP50", "AP75", "AP_medium", "AP_large"}}`` per category."""
        seen: dict[str, int] = {}
        for n in self.category_names:
            seen[n] = seen.get(n, 0) + 1
        out = {}
        for k, (name, cid) in enumerate(zip(self.category_names, self.category_ids)):
            row = {}
            for stat, (_, iou, a, m) in zip(KEYPOINT_STAT_NAMES[:5], KEYPOINT_STATS[:5]):
                p = self.precision[:, :, k, a, m]
                if iou is not None:
                    p = p[np.flatnonzero(IOU_THRESHOLDS == iou)]
                p = p[p > -1]
                row[stat] = float(np.mean(p)) if p.size else -1.0
            out[name if seen[name] == 1 else f"{name} (id {cid})"] = row
        return out

    def summary(self) -> str:
        """pycocotools' 10-line keypoint summary."""
        return format_keypoint_stats(self.stats)

    def per_category_table(self) -> str:
        """A text table of per-category AP, AP50, AP75, AP_medium, AP_large (``-``: no gt)."""
        rows = self.per_category_stats()
        width = max([len(n) for n in rows] + [8])
        cols = KEYPOINT_STAT_NAMES[:5]
        lines = [f"{'category':<{width}} " + " ".join(f"{c:>9}" for c in cols)]
        for name, row in rows.items():
            cells = [f"{row[c]:9.3f}" if row[c] > -1 else f"{'-':>9}" for c in cols]
            lines.append(f"{name:<{width}} " + " ".join(cells))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """``{"stats": [10 floats], "metrics": {name: value}, "per_category": {name: AP}}``."""
        return {"stats": [float(s) for s in self.stats], "metrics": self.metrics,
                "per_category": self.per_category}


# ---------------------------------------------------------------------------------------------
# the evaluator


class KeypointEvaluator:
    """Accumulates keypoint results and evaluates them against a COCO keypoint ground truth.

    Args:
        gt: path to a COCO keypoint ground-truth json, or the same content as a dict.
        sigmas: per-joint OKS sigmas for every category (see
            :func:`load_keypoint_ground_truth`); default the category's or COCO's.

    Add results with :meth:`add_results` (any number of lists or files; for exact score ties
    earlier ones rank first, as in pycocotools), then call :meth:`compute`.
    """

    def __init__(self, gt: str | Path | dict, sigmas: Sequence[float] | None = None) -> None:
        self.gt = load_keypoint_ground_truth(gt, sigmas)
        self.reset()

    def reset(self) -> None:
        """Forget all results (the ground truth stays)."""
        self._chunks: list[tuple[DetectionArrays, np.ndarray]] = []

    def add_results(self, results: list | str | Path) -> ImageMatch:
        """Add ``[{image_id, category_id, keypoints, score}, ...]`` (or a json file of it);
        returns how the detections were placed on the ground truth's images."""
        arrays, xy, match = read_keypoint_results(results, self.gt)
        self._chunks.append((arrays, xy))
        return match

    def compute(self) -> KeypointEvalResult:
        """Evaluate everything added so far (the results are kept; see :meth:`reset`)."""
        dt, xy = self._detections()
        gt = self.gt.arrays()
        precision, recall = evaluate_arrays(gt, dt, len(self.gt.coco.category_ids),
                                            params=KEYPOINT_PARAMS,
                                            pair_score=self._oks(gt, xy))
        coco = self.gt.coco
        return KeypointEvalResult(summarize(precision, recall, KEYPOINT_STATS), precision,
                                  recall, coco.category_ids.tolist(), list(coco.category_names))

    def _detections(self) -> tuple[DetectionArrays, np.ndarray]:
        k_max = max([xy.shape[1] for _, xy in self._chunks] + [self.gt.keypoints.shape[1]])
        arrays = [a for a, _ in self._chunks]
        xy = [np.pad(p, ((0, 0), (0, k_max - p.shape[1]), (0, 0))) for _, p in self._chunks]
        if not arrays:
            return DetectionArrays(np.zeros(0, np.int64), np.zeros(0, np.int64),
                                   np.zeros((0, 4)), np.zeros(0)), np.zeros((0, k_max, 2))
        return (DetectionArrays(*(np.concatenate([getattr(a, f) for a in arrays])
                                  for f in ("img", "cat", "boxes", "score"))),
                np.concatenate(xy))

    def _oks(self, gt: GroundTruthArrays, xy: np.ndarray, block: int = 1 << 15) -> PairScore:
        """OKS of (detection row, gt row) pairs with each category's K and sigmas, ``block``
        pairs at a time (the temporaries are ``(block, K)``)."""
        def score(d: np.ndarray, g: np.ndarray) -> np.ndarray:
            cat = gt.cat[g]
            joints = self.gt.joints[cat]
            out = np.empty(len(d))
            for K in np.unique(joints).tolist():
                rows = np.flatnonzero(joints == K)
                for start in range(0, len(rows), block):
                    s = rows[start:start + block]
                    out[s] = object_keypoint_similarity(
                        xy[d[s], :K], self.gt.keypoints[g[s], :K], gt.boxes[g[s]],
                        gt.area[g[s]], self.gt.sigmas[cat[s], :K])
            return out

        return score


def evaluate_keypoints(gt: str | Path | dict, dt: list | str | Path, *,
                       sigmas: Sequence[float] | None = None) -> KeypointEvalResult:
    """Evaluate keypoint results ``dt`` (list or json path) against ground truth ``gt`` (dict or
    json path) with OKS, as pycocotools' ``COCOeval(iouType="keypoints")``.

    ``sigmas``: K per-joint OKS sigmas, needed when K != 17 and the ground-truth category has no
    ``sigmas`` list. Returns a :class:`KeypointEvalResult` (``.stats``, ``.metrics``,
    ``.summary()``, ``.to_dict()``).
    """
    evaluator = KeypointEvaluator(gt, sigmas)
    evaluator.add_results(dt)
    return evaluator.compute()
