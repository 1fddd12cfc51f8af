"""COCO bbox evaluation with pycocotools' exact numbers, in numpy.

Use it on files::

    result = evaluate_coco("instances_val.json", "results.json")
    print(result.summary())            # pycocotools' 12-line layout
    result.stats                        # (12,) AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl

or incrementally inside a training loop, without writing json::

    evaluator = COCOEvaluator(gt_dict_or_path)
    for image_ids, boxes, scores, labels in predictions:   # boxes xyxy pixels, labels = COCO ids
        evaluator.update(image_ids, boxes, scores, labels)
    result = evaluator.compute()

Semantics follow pycocotools' ``COCOeval`` for ``iouType="bbox"`` exactly, including its quirks:
area ranges use the annotation's ``area`` field (detections use ``w * h``); crowd gts are
ignored and matched by intersection over detection area; an annotation's ``ignore`` field is
overwritten by ``iscrowd`` in pycocotools, so it has no effect here either; a match to an
annotation with id 0 counts as unmatched (a warning says so). Unlike pycocotools, malformed input
(missing keys, bad boxes, detections on unknown images or categories) raises ``ValueError``
naming the file and the entry instead of being skipped or crashing later.

Detections that carry a ``file_name`` (as ``scaledet predict`` writes them, whose ``image_id`` is
the position of the image in its input) are placed on the ground truth's images by file name,
not by ``image_id``; see :func:`match_images`.
"""

from __future__ import annotations

import gc
import itertools
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scaledet.evaluation.coco_engine import (
    AREA_NAMES,
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    DetectionArrays,
    GroundTruthArrays,
    evaluate_arrays,
    summarize,
)

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""The 12 COCO stats in pycocotools' order, as named in ``--json`` outputs."""
METRIC_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
                "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
"""The same 12 stats as named in training logs (``metrics.csv``), checkpoints, plots and the
dicts :func:`scaledet.train` and :func:`scaledet.val` return."""


# ---------------------------------------------------------------------------------------------
# reading and validating input


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    # parsed json has no reference cycles; without the cyclic GC re-scanning the growing heap
    # of new dicts, a 30 MB results file parses about twice as fast
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    finally:
        if gc_was_enabled:
            gc.enable()


_REQUIRED = object()


def _column(items: list, key: str, source: str, what: str, default: Any = _REQUIRED) -> list:
    """``[item[key] for item in items]`` (or ``item.get(key, default)``), with a clear error."""
    try:
        if default is _REQUIRED:
            return [item[key] for item in items]
        return [item.get(key, default) for item in items]
    except (KeyError, TypeError, AttributeError):
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"{source}: {what} {i} is not an object: {item!r:.80}") from None
            if key not in item:
                raise ValueError(f"{source}: {what} {i} has no '{key}'") from None
        raise


def _int_array(values: list, source: str, what: str, key: str) -> np.ndarray:
    """Integer ids as int64; integral floats are accepted (pycocotools compares them equal)."""
    arr = np.array(values) if values else np.zeros(0, np.int64)
    if arr.dtype.kind == "f" and arr.ndim == 1 and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        i = next((i for i, v in enumerate(values) if not _is_integral(v)), 0)
        raise ValueError(f"{source}: {what} {i}: '{key}' must be an integer, got {values[i]!r:.80}")
    return arr.astype(np.int64)


def _box_array(values: list, source: str, what: str) -> np.ndarray:
    """``(N, 4)`` float64 xywh boxes: 4 finite numbers each, non-negative width and height."""
    sequence = (list, tuple, np.ndarray)
    try:  # fast path: every box a sequence of 4 numbers (numeric strings pass, as in pycocotools)
        ok = (all(isinstance(b, sequence) for b in values)
              and (np.fromiter(map(len, values), np.int64, len(values)) == 4).all())
        arr = np.fromiter(itertools.chain.from_iterable(values), np.float64, 4 * len(values))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        i = next((i for i, b in enumerate(values)
                  if not (isinstance(b, sequence) and len(b) == 4
                          and all(_is_number(v) for v in b))), 0)
        raise ValueError(f"{source}: {what} {i}: bbox must be 4 numbers [x, y, w, h], "
                         f"got {values[i]!r:.80}")
    arr = arr.reshape(-1, 4)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{source}: {what} {i}: bbox has a non-finite value {values[i]!r}")
    bad = (arr[:, 2] < 0) | (arr[:, 3] < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{source}: {what} {i}: bbox has a negative width or height "
                         f"{values[i]!r} (COCO boxes are [x, y, w, h])")
    return arr


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_integral(v: Any) -> bool:
    return _is_number(v) and (isinstance(v, int) or v.is_integer())


def _float_array(values: list, source: str, what: str, key: str) -> np.ndarray:
    arr = np.array(values) if values else np.zeros(0)
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        i = next((i for i, v in enumerate(values) if not _is_number(v)), 0)
        raise ValueError(f"{source}: {what} {i}: '{key}' must be a number, got {values[i]!r:.80}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        i = int(np.argmax(~np.isfinite(arr)))
        raise ValueError(f"{source}: {what} {i}: '{key}' is not finite ({values[i]!r})")
    return arr


def _lookup(sorted_ids: np.ndarray, values: np.ndarray, source: str, what: str,
            key: str) -> np.ndarray:
    """Index of each value in ``sorted_ids``; ``ValueError`` for values not there."""
    idx = np.searchsorted(sorted_ids, values)
    found = np.zeros(len(values), bool)
    if len(sorted_ids):
        found = sorted_ids[np.minimum(idx, len(sorted_ids) - 1)] == values
    if not found.all():
        i = int(np.argmax(~found))
        where = "images" if key == "image_id" else "categories"
        raise ValueError(f"{source}: {what} {i}: {key} {values[i]} is not in the ground "
                         f"truth's {where} ({int((~found).sum())} such entries)")
    return idx


def _unique_ids(items: list, source: str, what: str) -> np.ndarray:
    ids = _int_array(_column(items, "id", source, what), source, what, "id")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{source}: duplicate {what} id {uniq[np.argmax(counts > 1)]}")
    return ids


@dataclass
class CocoGroundTruth:
    """A validated COCO ground truth.

    ``image_ids``/``category_ids`` are sorted (pycocotools' evaluation order);
    ``category_names[k]`` names ``category_ids[k]``; ``arrays`` holds the annotations;
    ``file_names[i]`` is the ``file_name`` of image ``image_ids[i]`` (None where absent).
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: list[str]
    arrays: GroundTruthArrays
    source: str
    file_names: list[str | None] = field(default_factory=list)


def load_ground_truth(gt: str | Path | dict, *, source: str | None = None) -> CocoGroundTruth:
    """Read and validate a COCO ground truth from a json path or an in-memory dict.

    Required: ``images`` (each with ``id``), ``categories`` (``id``, optional ``name``),
    ``annotations`` (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``; optional ``area``,
    default ``w * h``, ``iscrowd``, default 0, and ``id``). ``source`` names the input in error
    messages (default: the path, or "ground truth" for a dict).
    """
    if source is None:
        source = str(gt) if isinstance(gt, (str, Path)) else "ground truth"
    data = _read_json(gt) if isinstance(gt, (str, Path)) else gt
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a COCO object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{source}: missing or non-list '{key}'")
    image_ids = _unique_ids(data["images"], source, "image")
    image_order = np.argsort(image_ids, kind="stable")
    file_names = [_file_name(data["images"][i]) for i in image_order.tolist()]
    image_ids = image_ids[image_order]
    cats = data["categories"]
    cat_ids = _unique_ids(cats, source, "category")
    order = np.argsort(cat_ids)
    names = [str(cats[i].get("name", cats[i]["id"])) for i in order]
    anns = data["annotations"]
    what = "annotation"
    img = _lookup(image_ids, _int_array(_column(anns, "image_id", source, what), source, what,
                                        "image_id"), source, what, "image_id")
    cat = _lookup(cat_ids[order], _int_array(_column(anns, "category_id", source, what), source,
                                             what, "category_id"), source, what, "category_id")
    boxes = _box_array(_column(anns, "bbox", source, what), source, what)
    area = _column(anns, "area", source, what, default=None)
    box_area = boxes[:, 2] * boxes[:, 3]
    area = _float_array([box_area[i] if a is None else a for i, a in enumerate(area)],
                        source, what, "area")  # absent: the box area
    if (area < 0).any():
        raise ValueError(f"{source}: annotation {int(np.argmax(area < 0))}: negative area")
    crowd = np.array([bool(c) for c in _column(anns, "iscrowd", source, what, default=0)], bool)
    ann_ids = _ann_ids(anns, source)
    if (ann_ids == 0).any():
        warnings.warn(f"{source}: annotation id 0 is counted as unmatched by pycocotools' "
                      "matching, and so here; renumber annotations from 1", stacklevel=3)
    arrays = GroundTruthArrays(img, cat, boxes, area, crowd.reshape(-1), ann_ids == 0)
    return CocoGroundTruth(image_ids, cat_ids[order], names, arrays, source, file_names)


def _file_name(item: dict) -> str | None:
    name = item.get("file_name")
    return None if name is None or name == "" else str(name)


def _ann_ids(anns: list, source: str) -> np.ndarray:
    """The annotation ids if every annotation has one, else 1..G."""
    if anns and all("id" in a for a in anns):
        return _unique_ids(anns, source, "annotation")
    return np.arange(1, len(anns) + 1, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# placing detections on the ground truth's images

NO_IMAGE, AMBIGUOUS = -1, -2
"""What :func:`match_file_names` returns for a name that names no image, or several."""


def _path_parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def match_file_names(names: Sequence[str], gt: CocoGroundTruth
                     ) -> tuple[np.ndarray, dict[str, list[int]]]:
    """The ground-truth image id each file name names.

    A name matches the images whose ``file_name`` has the same basename; among several, the one
    whose path shares the most trailing folders with it (so ``/data/images/val/000001.jpg`` names
    ``val/000001.jpg`` rather than ``train/000001.jpg``, and a ``file_name`` relative to the
    ground truth's image folder matches an absolute path).

    Returns:
        ``(ids, ambiguous)``: ``(len(names),)`` int64 image ids, :data:`NO_IMAGE` where no image
        has that basename, :data:`AMBIGUOUS` where several match equally well; ``ambiguous``
        maps each such name to the ids it could mean.
    """
    by_base: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    for image_id, name in zip(gt.image_ids.tolist(), gt.file_names):
        if name is not None:
            parts = _path_parts(name)
            if parts:
                by_base.setdefault(parts[-1], []).append((parts, image_id))
    ids = np.full(len(names), NO_IMAGE, np.int64)
    ambiguous: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        parts = _path_parts(name)
        candidates = by_base.get(parts[-1], []) if parts else []
        if len(candidates) == 1:
            ids[k] = candidates[0][1]
        elif candidates:
            shared = [_shared_tail(parts, c) for c, _ in candidates]
            best = [i for (_, i), n in zip(candidates, shared) if n == max(shared)]
            ids[k] = best[0] if len(best) == 1 else AMBIGUOUS
            if len(best) > 1:
                ambiguous[name] = best
    return ids, ambiguous


def _shared_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


@dataclass
class ImageMatch:
    """How the detections of a results file were placed on the ground truth's images.

    Attributes:
        by: ``"file_name"`` when the detections' ``file_name`` decided (some named an image of
            the ground truth), else ``"image_id"``.
        detections: detections read.
        remapped: detections whose ``image_id`` named another image than their ``file_name``
            does; they now carry the ``file_name``'s image id.
        dropped: detections whose ``file_name`` names no image of the ground truth (or several
            equally well, none of them their ``image_id``): left out of the evaluation.
        dropped_files: distinct file names of the dropped detections.
        unmatched_names: detections placed by ``image_id`` although they carry a
            ``file_name``, because none of those names an image of the ground truth.
        on_annotated: detections evaluated on images that have annotations.
        detail: what the detections and the ground truth name, for the warning that none of
            them meet.
    """

    by: str
    detections: int
    on_annotated: int
    detail: str
    remapped: int = 0
    dropped: int = 0
    dropped_files: int = 0
    unmatched_names: int = 0

    def notes(self, gt_name: str) -> list[str]:
        """One line per thing a user should know (none when ids and file names agree)."""
        lines = []
        if self.remapped:
            lines.append(f"note: {self.remapped} of {self.detections} detections re-mapped by "
                         f"file_name to the image ids of {gt_name} (their image_id named "
                         "another image)")
        if self.dropped:
            lines.append(f"note: {self.dropped} detections on {self.dropped_files} files that "
                         f"are no image of {gt_name} (by file_name) were left out")
        if self.unmatched_names:
            lines.append(f"note: no file_name of the detections is the file of an image of "
                         f"{gt_name}; the {self.detections} detections are placed by image_id")
        return lines

    def warning(self, gt_name: str) -> str | None:
        """The loud line for a run where no detection lands on an annotated image, else None."""
        if self.on_annotated:
            return None
        return f"warning: no detection matches an image of {gt_name}: {self.detail}"


def match_images(image_ids: np.ndarray, file_names: Sequence[str | None] | None,
                 gt: CocoGroundTruth) -> tuple[np.ndarray, np.ndarray, ImageMatch]:
    """Place detections on ``gt``'s images: by ``file_name`` where they carry one, else by
    ``image_id``.

    ``scaledet predict`` numbers images 1..N in input order and writes each detection's file, so
    its ``image_id`` means nothing to a ground truth with other ids; the file name does. File
    names decide when at least one of them names an image of ``gt`` (:func:`match_file_names`):
    a detection then gets that image's id, and one whose file is not in ``gt`` is left out.
    When none does, or the detections or ``gt`` have no file names, ``image_id`` decides, as in
    pycocotools.

    Args:
        image_ids: ``(N,)`` int64 the detections' ``image_id``.
        file_names: the detections' ``file_name`` (None where absent), or None for none.

    Returns:
        ``(image_ids, keep, match)``: the ids to evaluate with, ``(N,)`` bool the detections
        to keep, and the summary (:class:`ImageMatch`).
    """
    n = len(image_ids)
    keep = np.ones(n, bool)
    names = list(file_names) if file_names is not None else []
    named = [k for k, name in enumerate(names) if name is not None]
    by = "image_id"
    ids = image_ids
    remapped = dropped = dropped_files = unmatched_names = 0
    if named and any(name is not None for name in gt.file_names):
        index: dict[str, int] = {}
        codes = np.array([index.setdefault(str(names[k]), len(index)) for k in named], np.int64)
        found, ambiguous = match_file_names(list(index), gt)
        per_det = found[codes]
        if (per_det >= 0).any():
            by = "file_name"
            ids = image_ids.copy()
            rows = np.array(named, np.int64)
            for j in np.flatnonzero(per_det == AMBIGUOUS).tolist():  # keep their own id if it fits
                if int(image_ids[rows[j]]) in ambiguous[str(names[rows[j]])]:
                    per_det[j] = image_ids[rows[j]]
            lost = per_det < 0
            remapped = int((per_det[~lost] != image_ids[rows[~lost]]).sum())
            dropped = int(lost.sum())
            dropped_files = len(np.unique(codes[lost]))
            ids[rows[~lost]] = per_det[~lost]
            keep[rows[lost]] = False
        else:
            unmatched_names = len(named)
    annotated = np.unique(gt.image_ids[gt.arrays.img]) if len(gt.arrays.img) else np.zeros(0)
    on_annotated = int(np.isin(ids[keep], annotated).sum())
    detail = "" if on_annotated else _mismatch_detail(ids[keep], names, gt, annotated, by)
    return ids, keep, ImageMatch(by, n, on_annotated, detail, remapped=remapped, dropped=dropped,
                                 dropped_files=dropped_files, unmatched_names=unmatched_names)


def _mismatch_detail(ids: np.ndarray, names: list[str | None], gt: CocoGroundTruth,
                     annotated: np.ndarray, by: str) -> str:
    """Why no detection is on an annotated image, in a few words."""
    if not len(ids):
        return "there are no detections"
    if not len(annotated):
        return "it has no annotations"
    if by == "file_name":
        return (f"the detections' file_name names {len(np.unique(ids))} of its images, none of "
                "which has annotations")

    def ids_text(values: np.ndarray) -> str:
        u = np.unique(values)
        return f"{u[0]}..{u[-1]} ({len(u)} ids)" if len(u) > 1 else str(u[0])

    det_names = sorted({_path_parts(str(n))[-1:] for n in names if n is not None})
    gt_names = sorted({_path_parts(n)[-1:] for n in gt.file_names if n is not None})
    text = (f"detections are on image ids {ids_text(ids)}, its annotated images have ids "
            f"{ids_text(annotated)}")
    if not det_names:
        return text + "; the detections carry no file_name to match by"
    if not gt_names:
        return text + "; its images have no file_name to match the detections' file_name by"
    return (text + f"; no file_name of the detections (e.g. {'/'.join(det_names[0])}) is the "
            f"file of one of its images (e.g. {'/'.join(gt_names[0])})")


def parse_results(results: list | str | Path, gt: CocoGroundTruth) -> DetectionArrays:
    """Validate COCO results (``[{image_id, category_id, bbox [x, y, w, h], score}, ...]``, or
    a json file of that list) against ``gt``; returns the detections in input order (those
    placed on ``gt``'s images, see :func:`read_results`)."""
    return read_results(results, gt)[0]


def read_results(results: list | str | Path, gt: CocoGroundTruth
                 ) -> tuple[DetectionArrays, ImageMatch]:
    """:func:`parse_results` and how the detections were placed on ``gt``'s images: by
    ``file_name`` when they carry one that names an image of ``gt`` (:func:`match_images`),
    else by ``image_id``."""
    source = str(results) if isinstance(results, (str, Path)) else "detections"
    data = _read_json(results) if isinstance(results, (str, Path)) else results
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of detections "
                         "[{image_id, category_id, bbox, score}, ...]")
    what = "detection"
    img = _int_array(_column(data, "image_id", source, what), source, what, "image_id")
    cat = _int_array(_column(data, "category_id", source, what), source, what, "category_id")
    boxes = _box_array(_column(data, "bbox", source, what), source, what)
    score = _float_array(_column(data, "score", source, what), source, what, "score")
    names = _column(data, "file_name", source, what, default=None)
    img, keep, match = match_images(img, names, gt)
    if not keep.all():  # left out: any valid id, so that errors name the input's positions
        img = np.where(keep, img, gt.image_ids[0])
    arrays = DetectionArrays(_lookup(gt.image_ids, img, source, what, "image_id"),
                             _lookup(gt.category_ids, cat, source, what, "category_id"),
                             boxes, score)
    if not keep.all():
        arrays = DetectionArrays(arrays.img[keep], arrays.cat[keep], boxes[keep], score[keep])
    return arrays, match


# ---------------------------------------------------------------------------------------------
# results


def format_coco_stats(stats: Sequence[float]) -> str:
    """pycocotools' 12-line summary of the stats (AP, AP50, ..., ARl)."""
    lines = []
    for i, name in enumerate(STAT_NAMES):
        ap = name.startswith("AP")
        iou = {"AP50": "0.50", "AP75": "0.75"}.get(name, "0.50:0.95")
        area = {"s": "small", "m": "medium", "l": "large"}.get(name[-1], "all")
        max_dets = {"AR1": 1, "AR10": 10}.get(name, MAX_DETS[-1])
        title = "Average Precision" if ap else "Average Recall"
        kind = "(AP)" if ap else "(AR)"
        lines.append(f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | "
                     f"maxDets={max_dets:>3d} ] = {stats[i]:0.3f}")
    return "\n".join(lines)


@dataclass
class COCOEvalResult:
    """The outcome of a COCO bbox evaluation.

    Attributes:
        stats: ``(12,)`` AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl
            (-1 where no category has ground truth).
        precision: ``(T, R, K, A, M)`` = (10 IoU thresholds, 101 recall thresholds,
            categories, 4 area ranges, 3 maxDets), pycocotools' ``eval['precision']``.
        recall: ``(T, K, A, M)``, pycocotools' ``eval['recall']``.
        category_ids: ``K`` COCO category ids (sorted), the ``K`` axis.
        category_names: ``K`` names, same order.

    ``result["stats"]`` etc. also work, so it can be used like a dict.
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    category_ids: list[int]
    category_names: list[str]

    iou_thresholds = IOU_THRESHOLDS
    recall_thresholds = RECALL_THRESHOLDS
    area_names = AREA_NAMES
    max_dets = MAX_DETS

    def __getitem__(self, key: str) -> Any:
        if key not in ("stats", "precision", "recall", "per_category", "metrics",
                       "category_ids", "category_names"):
            raise KeyError(key)
        return getattr(self, key)

    @property
    def metrics(self) -> dict[str, float]:
        """The 12 stats named by :data:`METRIC_NAMES` (``mAP``, ``mAP50``, ...)."""
        return {n: float(v) for n, v in zip(METRIC_NAMES, self.stats)}

    @property
    def per_category(self) -> dict[str, float]:
        """``{category name: AP@[.5:.95]}`` (area all, 100 dets); -1 for no ground truth."""
        return {name: row["AP"] for name, row in self.per_category_stats().items()}

    def per_category_stats(self) -> dict[str, dict[str, float]]:
        """``{name: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}`` per category (-1: no gt)."""
        out = {}
        for k, name in enumerate(self._unique_names()):
            row = {}
            for stat, t, a in (("AP", None, 0), ("AP50", 0, 0), ("AP75", 5, 0),
                               ("APs", None, 1), ("APm", None, 2), ("APl", None, 3)):
                p = self.precision[:, :, k, a, -1] if t is None else self.precision[t, :, k, a, -1]
                p = p[p > -1]
                row[stat] = float(np.mean(p)) if p.size else -1.0
            out[name] = row
        return out

    def _unique_names(self) -> list[str]:
        seen = {n: 0 for n in self.category_names}
        for n in self.category_names:
            seen[n] += 1
        return [n if seen[n] == 1 else f"{n} (id {i})"
                for n, i in zip(self.category_names, self.category_ids)]

    def summary(self) -> str:
        """pycocotools' familiar 12-line summary."""
        return format_coco_stats(self.stats)

    def per_category_table(self) -> str:
        """A text table of per-category AP, AP50, AP75, APs, APm, APl (``-`` for no gt)."""
        rows = self.per_category_stats()
        width = max([len(n) for n in rows] + [8])
        cols = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        lines = [f"{'category':<{width}} " + " ".join(f"{c:>6}" for c in cols)]
        for name, row in rows.items():
            cells = [f"{row[c]:6.3f}" if row[c] > -1 else f"{'-':>6}" for c in cols]
            lines.append(f"{name:<{width}} " + " ".join(cells))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """``{"stats": [12 floats], "per_category": {name: AP}}`` (json-serialisable)."""
        return {"stats": [float(s) for s in self.stats], "per_category": self.per_category}


# ---------------------------------------------------------------------------------------------
# the evaluator


class COCOEvaluator:
    """Accumulates detections and evaluates them against a COCO ground truth.

    Args:
        gt: path to a COCO ground-truth json, or the same content as a dict.

    Feed detections with :meth:`update` (tensors/arrays per image, e.g. from a model) and/or
    :meth:`add_results` (COCO results list or json), then call :meth:`compute`. Detections for
    an image may come in any number of calls; their order only matters for exact score ties,
    where, as in pycocotools, earlier detections rank first.
    """

    def __init__(self, gt: str | Path | dict) -> None:
        self.gt = load_ground_truth(gt)
        self._image_set = set(self.gt.image_ids.tolist())
        self._category_set = set(self.gt.category_ids.tolist())
        self.reset()

    def reset(self) -> None:
        """Forget all detections (the ground truth stays)."""
        self._chunks: list[DetectionArrays] = []
        self._pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def update(self, image_id: Any, boxes: Any, scores: Any, labels: Any) -> None:
        """Add the detections of one image, or of a batch of images.

        One image: ``image_id`` an int; ``boxes`` ``(N, 4)`` xyxy pixels in the original image's
        coordinates; ``scores`` ``(N,)``; ``labels`` ``(N,)`` COCO category ids. numpy arrays,
        torch tensors (any device) or lists.
        A batch: ``image_id`` a sequence (or 1-D tensor) of B ids and ``boxes``/``scores``/
        ``labels`` sequences of B per-image arrays.
        """
        if np.ndim(_to_numpy(image_id)) == 0:
            ids, boxes, scores, labels = [int(_to_numpy(image_id))], [boxes], [scores], [labels]
        else:
            ids = np.asarray(_to_numpy(image_id)).reshape(-1).tolist()
            if not len(ids) == len(boxes) == len(scores) == len(labels):
                raise ValueError(f"update: {len(ids)} image ids but {len(boxes)} boxes, "
                                 f"{len(scores)} scores and {len(labels)} labels entries")
        for i, b, s, lab in zip(ids, boxes, scores, labels):
            arrays = _image_arrays(i, b, s, lab)
            if i not in self._image_set:
                raise ValueError(f"update: image_id {i} is not in the ground truth's images")
            if not self._category_set.issuperset(arrays[2].tolist()):
                bad = sorted(set(arrays[2].tolist()) - self._category_set)
                raise ValueError(f"update (image_id {i}): labels {bad} are not category ids of "
                                 "the ground truth (labels must be COCO category ids)")
            self._pending.append((i, *arrays))
        if len(self._pending) >= 256:  # index into the ground truth in bulk: per image is slow
            self._flush()

    def _flush(self) -> None:
        """Index the pending (already validated) per-image arrays into the ground truth."""
        if not self._pending:
            return
        ids, b, s, lab = zip(*self._pending)
        self._pending = []
        counts = [len(x) for x in s]
        b, s, lab = np.concatenate(b), np.concatenate(s), np.concatenate(lab)
        xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
        img_idx = _lookup(self.gt.image_ids, np.array(ids, dtype=np.int64), "update", "image",
                          "image_id")
        cat = _lookup(self.gt.category_ids, lab, "update", "detection", "category_id (label)")
        self._chunks.append(DetectionArrays(np.repeat(img_idx, counts), cat, xywh, s))

    def add_results(self, results: list | str | Path) -> ImageMatch:
        """Add COCO results: a list of ``{image_id, category_id, bbox [x,y,w,h], score}`` or a
        json file holding one. Detections with a ``file_name`` are placed on the ground truth's
        images by it (:func:`match_images`); returns how they were placed."""
        self._flush()  # keep the input order
        arrays, match = read_results(results, self.gt)
        self._chunks.append(arrays)
        return match

    def compute(self) -> COCOEvalResult:
        """Evaluate everything added so far (the detections are kept; see :meth:`reset`)."""
        self._flush()
        dt = _concat(self._chunks)
        precision, recall = evaluate_arrays(self.gt.arrays, dt, len(self.gt.category_ids))
        return COCOEvalResult(summarize(precision, recall), precision, recall,
                              self.gt.category_ids.tolist(), list(self.gt.category_names))


def _image_arrays(image_id: int, boxes: Any, scores: Any,
                  labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ``(N, 4)`` float64 boxes, ``(N,)`` float64 scores, ``(N,)`` int64 labels."""
    b = np.asarray(_to_numpy(boxes), dtype=np.float64)
    b = b.reshape(0, 4) if b.size == 0 else b
    s = np.asarray(_to_numpy(scores), dtype=np.float64).reshape(-1)
    lab = np.asarray(_to_numpy(labels)).reshape(-1)
    if b.ndim != 2 or b.shape[1] != 4 or not len(b) == len(s) == len(lab):
        raise ValueError(f"update (image_id {image_id}): boxes must be (N, 4) with N scores and "
                         f"N labels, got {tuple(b.shape)}, {len(s)} scores, {len(lab)} labels")
    if lab.dtype.kind not in "iuf" or (lab.dtype.kind == "f" and (lab != np.round(lab)).any()):
        raise ValueError(f"update (image_id {image_id}): labels must be integer COCO category ids")
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise ValueError(f"update (image_id {image_id}): boxes and scores must be finite")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(f"update (image_id {image_id}): boxes must be xyxy with x2 >= x1 and "
                         "y2 >= y1")
    return b, s, lab.astype(np.int64)


def _to_numpy(x: Any) -> Any:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        return x.detach().cpu().numpy()
    return x


def _concat(chunks: list[DetectionArrays]) -> DetectionArrays:
    if not chunks:
        return DetectionArrays(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)),
                               np.zeros(0))
    if len(chunks) == 1:
        return chunks[0]
    return DetectionArrays(*(np.concatenate([getattr(c, f) for c in chunks])
                             for f in ("img", "cat", "boxes", "score")))


def evaluate_coco(gt: str | Path | dict, dt: list | str | Path) -> COCOEvalResult:
    """Evaluate COCO results ``dt`` (list or json path) against ground truth ``gt`` (dict or
    json path) for ``bbox``; see :class:`COCOEvalResult`."""
    evaluator = COCOEvaluator(gt)
    evaluator.add_results(dt)
    return evaluator.compute()
