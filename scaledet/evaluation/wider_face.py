"""The WIDER FACE evaluation protocol (AP on the easy / medium / hard lists) and landmark NME.

The protocol is that of the official MATLAB ``eval_tools`` (``wider_eval.m``, ``evaluation.m``,
``boxoverlap.m``, ``norm_score.m``, ``read_pred.m``, ``VOCap.m``; the Python port
``WiderFace-Evaluation/evaluation.py`` computes the same):

1. Every detection score is min-max normalised over all detections on the ground truth's images:
   ``(s - min) / (max - min)``.
2. Per image, detections are sorted by score, highest first (a stable sort, as MATLAB's).
   Each one, in that order, is matched to the ground-truth face it overlaps most (the first such
   face on ties), when that IoU is ``>= 0.5``. Matched to a face *not* in the setting's keep
   list (an ignored face) it is no proposal at all: neither true nor false positive. Matched to
   a kept face it is a true positive when that face was not matched before; any other detection
   is a false positive (the protocol has no second-best fallback).
3. For each of 1000 thresholds ``t = 1 - k / 1000``, ``k = 1..1000``, an image contributes the
   proposals among its detections with normalised score ``>= t`` and the kept faces they found.
   Summed over the images: precision = found / proposals, recall = found / (number of kept
   faces over all images).
4. AP is VOC's: the area under the precision envelope at the points where recall changes, with
   sentinels recall 0 / precision 0 in front and recall 1 / precision 0 at the end.

Images without ground-truth faces or without detections contribute nothing (detections on an
image without faces are not false positives), as in the official code; their kept faces still
count in the recall denominator.

IoU uses the +1 pixel convention of that code: boxes are ``x y w h`` made ``[x, y, x + w,
y + h]`` and then treated as inclusive pixel indices, so the intersection width is
``min(x2) - max(x1) + 1`` and a box's area ``(x2 - x1 + 1) (y2 - y1 + 1)``. In scaledet's
``xyxy`` records (``x2 = x + w``) that is the same formula on ``record.boxes``.

One deliberate difference: when all detection scores are equal, ``norm_score`` divides by zero
(every score becomes NaN and the official AP is 0); here every normalised score is then 1.

Official numbers need the official keep lists (``wider_easy_val.mat``, ``wider_medium_val.mat``,
``wider_hard_val.mat`` of ``eval_tools/ground_truth``, read by ``read_wider_setting_lists``):
they come from the WIDER FACE authors' EdgeBox detection rates, not from a rule on the labels.
Without them ``derive_setting_lists`` keeps the faces by size (see there): a size-bucket
evaluation in the spirit of the three settings, not comparable with published numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from scaledet.data.records import DetectionDataset
from scaledet.data.wider_face import FaceDataset, image_key, read_wider_face

SETTINGS = ("easy", "medium", "hard")
DERIVED_MIN_HEIGHT = {"easy": 50.0, "medium": 30.0, "hard": 10.0}
"""Smallest face height (px) each setting keeps in ``derive_setting_lists``."""
THRESH_NUM = 1000

GroundTruth = dict[str, tuple[np.ndarray, np.ndarray]]
"""``image key -> (boxes (G, 4) xyxy px with x2 = x + w, invalid (G,) bool)``."""


# ---- ground truth, keep lists, predictions --------------------------------------------------


def wider_ground_truth(gt: DetectionDataset | str | Path) -> GroundTruth:
    """The ground truth the protocol scores, keyed by ``image_key`` (``event/stem``).

    ``gt`` may be a dataset (a ``FaceDataset`` carries the ``invalid`` flags), a
    ``wider_face_*_bbx_gt.txt`` (read with ``strict=False``: every line counts, as officially),
    a folder holding one (also in ``wider_face_split/``), the official ``wider_face_val.mat`` or
    a folder holding it (no ``invalid`` flags there).
    """
    if isinstance(gt, DetectionDataset):
        return _gt_from_dataset(gt)
    path = Path(gt)
    if path.is_dir():
        path = _find_gt_file(path)
    if path.suffix == ".mat":
        return _gt_from_mat(path)
    if not path.is_file():
        raise FileNotFoundError(f"WIDER FACE ground truth not found: {path}")
    return _gt_from_dataset(read_wider_face(path, strict=False, read_sizes=False))


def _find_gt_file(folder: Path) -> Path:
    for pattern in ("wider_face_val_bbx_gt.txt", "wider_face_split/wider_face_val_bbx_gt.txt",
                    "*_bbx_gt.txt", "wider_face_split/*_bbx_gt.txt", "wider_face_val.mat"):
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ValueError(f"{folder}: several ground-truth files ({names}); name one")
    raise FileNotFoundError(f"{folder}: no wider_face_*_bbx_gt.txt or wider_face_val.mat")


def _gt_from_dataset(ds: DetectionDataset) -> GroundTruth:
    out: GroundTruth = {}
    for record in ds.records:
        invalid = np.zeros(len(record), dtype=bool)
        if isinstance(ds, FaceDataset):
            attrs = ds.face_attributes(record)
            if "invalid" in attrs:
                invalid = attrs["invalid"] > 0
        key = image_key(record.file_name)
        if key in out:
            raise ValueError(f"{ds.source}: image {key} appears twice")
        out[key] = (record.boxes.astype(np.float64), invalid)
    return out


def _cells(value) -> list:
    """The entries of a MATLAB cell array as loaded by ``scipy.io.loadmat``."""
    return list(np.asarray(value, dtype=object).ravel())


def _mat_string(value) -> str:
    arr = np.asarray(value).ravel()
    return str(arr[0]) if arr.size else ""


def _load_mat(path: Path) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(f"WIDER FACE .mat file not found: {path}")
    try:
        return loadmat(str(path))
    except Exception as e:  # scipy raises several types for a file that is no .mat
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({e})") from e


def _mat_images(mat: dict, path: Path, fallback: Path | None = None) -> list[list[str]]:
    """``[[key, ...] per event]`` from ``event_list`` and ``file_list``."""
    if "event_list" not in mat or "file_list" not in mat:
        if fallback is not None and fallback.is_file():
            return _mat_images(_load_mat(fallback), fallback)
        raise ValueError(f"{path}: needs 'event_list' and 'file_list'")
    events = [_mat_string(e) for e in _cells(mat["event_list"])]
    files = _cells(mat["file_list"])
    if len(events) != len(files):
        raise ValueError(f"{path}: {len(events)} events but {len(files)} file lists")
    return [[f"{event}/{_mat_string(f)}" for f in _cells(names)]
            for event, names in zip(events, files)]


def _gt_from_mat(path: Path) -> GroundTruth:
    mat = _load_mat(path)
    if "face_bbx_list" not in mat:
        raise ValueError(f"{path}: no 'face_bbx_list' (not wider_face_val.mat?)")
    keys = _mat_images(mat, path)
    boxes = _cells(mat["face_bbx_list"])
    out: GroundTruth = {}
    for event_keys, event_boxes in zip(keys, boxes):
        for key, b in zip(event_keys, _cells(event_boxes)):
            xywh = np.asarray(b, dtype=np.float64).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            out[key] = (xyxy, np.zeros(len(xyxy), dtype=bool))
    return out


def read_wider_setting_lists(folder: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The official keep lists: ``{setting: {image key: kept face indices (0-based)}}``.

    Reads ``wider_{easy,medium,hard}_val.mat`` in ``folder`` (their ``gt_list``: per event, per
    image, the 1-based indices of the faces the setting scores; images named by ``event_list``
    and ``file_list``, taken from ``wider_face_val.mat`` when a setting file lacks them).
    """
    folder = Path(folder)
    out = {}
    for setting in SETTINGS:
        path = folder / f"wider_{setting}_val.mat"
        mat = _load_mat(path)
        if "gt_list" not in mat:
            raise ValueError(f"{path}: no 'gt_list'")
        keys = _mat_images(mat, path, folder / "wider_face_val.mat")
        lists = _cells(mat["gt_list"])
        if len(lists) != len(keys):
            raise ValueError(f"{path}: gt_list has {len(lists)} events, file_list {len(keys)}")
        table = {}
        for event_keys, event_lists in zip(keys, lists):
            for key, keep in zip(event_keys, _cells(event_lists)):
                table[key] = np.asarray(keep, dtype=np.int64).ravel() - 1
        out[setting] = table
    return out


def derive_setting_lists(gt: GroundTruth | DetectionDataset, min_height: Mapping[str, float]
                         | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Keep lists by a size rule, for data without the official lists (synthetic sets, train).

    A face is kept in a setting when its box height ``h`` (px) is at least
    ``min_height[setting]`` (default ``DERIVED_MIN_HEIGHT``: easy 50, medium 30, hard 10 px;
    WIDER FACE's own scale classes start at 10 and 50 px) and it is not marked ``invalid``.
    The settings nest (easy within medium within hard), as the official ones do. This is not
    the official rule, whose lists come from detection rates per event: official numbers need
    ``read_wider_setting_lists``.
    """
    table = gt if isinstance(gt, dict) else _gt_from_dataset(gt)
    limits = dict(DERIVED_MIN_HEIGHT if min_height is None else min_height)
    out = {}
    for setting in SETTINGS:
        out[setting] = {key: np.flatnonzero(((boxes[:, 3] - boxes[:, 1]) >= limits[setting])
                                            & ~invalid)
                        for key, (boxes, invalid) in table.items()}
    return out


def read_wider_predictions(folder: str | Path) -> dict[str, np.ndarray]:
    """A submission folder: ``event/name.txt`` per image, lines: the image name, the number of
    detections, then ``x y w h score`` per detection (pixels).

    Returns ``{image key: (M, 5) float64 [x, y, w, h, score]}`` keyed ``event/name``. A count
    that does not match the lines, a line without 5 numbers, or a non-finite value raises
    ``ValueError`` naming ``file:line``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"WIDER FACE prediction folder not found: {folder}")
    out = {}
    for path in sorted(folder.glob("*/*.txt")):
        out[f"{path.parent.name}/{path.stem}"] = _read_prediction_file(path, folder)
    if not out:
        raise ValueError(f"{folder}: no event/name.txt prediction files")
    return out


def _read_prediction_file(path: Path, folder: Path) -> np.ndarray:
    name = path.relative_to(folder).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise ValueError(f"{name}: needs the image name and the number of detections")
    try:
        count = int(lines[1].strip())
    except ValueError:
        raise ValueError(f"{name}:2: expected the number of detections, got "
                         f"{lines[1].strip()!r}") from None
    rows = lines[2:]
    if count < 0 or len(rows) != count:
        raise ValueError(f"{name}:2: count says {count} detections but {len(rows)} lines follow")
    boxes = np.zeros((count, 5), dtype=np.float64)
    for i, row in enumerate(rows):
        try:
            values = [float(v) for v in row.split()]
        except ValueError:
            raise ValueError(f"{name}:{i + 3}: not numbers: {row.strip()!r}") from None
        if len(values) != 5:
            raise ValueError(f"{name}:{i + 3}: expected x y w h score, got {len(values)} values")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{name}:{i + 3}: NaN or inf value")
        boxes[i] = values
    return boxes


# ---- the protocol ---------------------------------------------------------------------------


def wider_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(P, G)`` IoU of ``xyxy`` boxes with the +1 pixel convention of the official code
    (intersection ``min(x2) - max(x1) + 1`` wide, area ``(x2 - x1 + 1) (y2 - y1 + 1)``; 0 where
    the intersection is empty)."""
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(gt, dtype=np.float64).reshape(-1, 4)[None, :, :]
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = iw * ih
    union = ((a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
             + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    iou[(iw <= 0) | (ih <= 0) | ~np.isfinite(iou)] = 0.0
    return iou


def thresholds(thresh_num: int = THRESH_NUM) -> np.ndarray:
    """The score thresholds ``1 - k / n``, ``k = 1..n`` (0.999 down to 0 for n = 1000)."""
    return 1 - np.arange(1, thresh_num + 1) / thresh_num


def image_pr(dets: np.ndarray, gt_boxes: np.ndarray, keep: np.ndarray, *,
             iou_threshold: float = 0.5, thresh_num: int = THRESH_NUM) -> np.ndarray:
    """``(thresh_num, 2)``: per threshold, the proposals and the kept faces found in one image.

    Args:
        dets: ``(M, 5)`` ``[x1, y1, x2, y2, normalised score]`` (``x2 = x + w``), in any order.
        gt_boxes: ``(G, 4)`` xyxy ground truth.
        keep: ``(G,)`` bool, the faces the setting scores (the others are ignored).
    """
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
    out = np.zeros((thresh_num, 2), dtype=np.float64)
    if len(dets) == 0 or len(gt_boxes) == 0:
        return out
    dets = dets[np.argsort(-dets[:, 4], kind="stable")]
    iou = wider_iou(dets[:, :4], gt_boxes)
    best = iou.argmax(axis=1)
    matched = iou[np.arange(len(dets)), best] >= iou_threshold
    proposal = ~(matched & ~keep[best])
    hits = np.flatnonzero(matched & keep[best])
    first = np.zeros(len(dets), dtype=bool)
    first[hits[np.unique(best[hits], return_index=True)[1]]] = True
    found = np.cumsum(first)
    proposals = np.cumsum(proposal)
    n = np.searchsorted(-dets[:, 4], -thresholds(thresh_num), side="right")
    has = n > 0
    out[has, 0] = proposals[n[has] - 1]
    out[has, 1] = found[n[has] - 1]
    return out


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC's AP (``VOCap.m``): area under the precision envelope where recall changes, with
    sentinels ``(0, 0)`` in front and ``(1, 0)`` at the end. NaN precisions (thresholds with no
    proposals) are skipped by the envelope, as MATLAB's ``max`` does."""
    mrec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.nansum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def normalise_scores(predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copies with the score column min-max normalised over all of them (``norm_score.m``);
    all 1 when every score is the same."""
    scores = [p[:, 4] for p in predictions.values() if len(p)]
    out = {k: np.array(p, dtype=np.float64).reshape(-1, 5) for k, p in predictions.items()}
    if not scores:
        return out
    lo, hi = (float(f(np.concatenate(scores))) for f in (np.min, np.max))
    for p in out.values():
        p[:, 4] = (p[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
    return out


def wider_pr_curves(gt: GroundTruth, predictions: Mapping[str, np.ndarray],
                    setting_lists: Mapping[str, Mapping[str, np.ndarray]], *,
                    iou_threshold: float = 0.5,
                    thresh_num: int = THRESH_NUM) -> dict[str, dict[str, np.ndarray]]:
    """``{setting: {"precision", "recall": (thresh_num,), "num_faces": kept faces}}``.

    ``predictions``: ``{image key: (M, 5) [x, y, w, h, raw score]}``; keys not in ``gt`` are left
    out, images without predictions have none. A ground-truth image missing from a keep list
    keeps none of its faces.
    """
    preds = normalise_scores({k: p for k, p in predictions.items() if k in gt})
    out = {}
    for setting, lists in setting_lists.items():
        curve = np.zeros((thresh_num, 2), dtype=np.float64)
        num_faces = 0
        for key, (boxes, _) in gt.items():
            kept = np.asarray(lists.get(key, np.zeros(0, np.int64)), dtype=np.int64)
            if len(kept) and (kept.min() < 0 or kept.max() >= len(boxes)):
                raise ValueError(f"keep list '{setting}', image {key}: face index "
                                 f"{int(kept.max()) + 1} but the image has {len(boxes)} faces")
            num_faces += len(kept)
            dets = preds.get(key)
            if dets is None or len(dets) == 0 or len(boxes) == 0:
                continue
            keep = np.zeros(len(boxes), dtype=bool)
            keep[kept] = True
            xyxy = np.concatenate([dets[:, :2], dets[:, :2] + dets[:, 2:4], dets[:, 4:]], axis=1)
            curve += image_pr(xyxy, boxes, keep, iou_threshold=iou_threshold,
                              thresh_num=thresh_num)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = curve[:, 1] / curve[:, 0]
            recall = curve[:, 1] / num_faces if num_faces else np.full(thresh_num, np.nan)
        out[setting] = {"precision": precision, "recall": recall, "num_faces": num_faces}
    return out


def evaluate_wider(gt: DetectionDataset | str | Path | GroundTruth,
                   predictions: Mapping[str, np.ndarray] | str | Path,
                   setting_lists: Mapping[str, Mapping[str, np.ndarray]] | str | Path
                   | None = None, *, iou_threshold: float = 0.5,
                   thresh_num: int = THRESH_NUM) -> dict[str, float]:
    """WIDER FACE AP per setting: ``{"easy": AP, "medium": AP, "hard": AP}`` (fractions).

    Args:
        gt: a dataset, a ground-truth file or folder (``wider_ground_truth``) or its result.
        predictions: ``{image key: (M, 5) [x, y, w, h, score]}`` (pixels, keys ``event/stem``
            as ``scaledet.data.wider_face.image_key``) or a submission folder
            (``read_wider_predictions``).
        setting_lists: ``{setting: {image key: kept 0-based face indices}}``, or a folder with
            the official ``wider_{easy,medium,hard}_val.mat``; ``None`` derives them by size
            (``derive_setting_lists``: not the official numbers).
        iou_threshold: a detection finds a face at IoU ``>=`` this (+1 pixel convention).

    A setting without kept faces has AP NaN. The protocol is in the module docstring.
    """
    table = gt if isinstance(gt, dict) else wider_ground_truth(gt)
    if not isinstance(predictions, Mapping):
        predictions = read_wider_predictions(predictions)
    if setting_lists is None:
        setting_lists = derive_setting_lists(table)
    elif not isinstance(setting_lists, Mapping):
        setting_lists = read_wider_setting_lists(setting_lists)
    for key, p in predictions.items():
        if np.asarray(p).ndim != 2 or np.asarray(p).shape[1] != 5:
            raise ValueError(f"predictions for {key}: expected (M, 5) [x, y, w, h, score], got "
                             f"shape {np.asarray(p).shape}")
    curves = wider_pr_curves(table, predictions, setting_lists, iou_threshold=iou_threshold,
                             thresh_num=thresh_num)
    return {s: (voc_ap(c["recall"], c["precision"]) if c["num_faces"] else float("nan"))
            for s, c in curves.items()}


# ---- landmarks ------------------------------------------------------------------------------


def landmark_nme(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, norm: str =
                 "inter_ocular", boxes: np.ndarray | None = None) -> float:
    """Normalised mean error of the five face landmarks, averaged over faces.

    Args:
        pred, gt: ``(N, 5, 2)`` ``(x, y)`` pixels in ``FACE_LANDMARK_NAMES`` order (extra
            columns such as a visibility flag are ignored).
        visible: ``(N, 5)`` bool, the ground-truth landmarks that are labelled; only they count.
        norm: ``"inter_ocular"``: divide by the distance between the ground-truth eyes
            (landmarks 0 and 1; faces without both eyes labelled are left out);
            ``"box"``: divide by ``sqrt(w h)`` of the ground-truth box.
        boxes: ``(N, 4)`` xyxy ground-truth boxes, for ``norm="box"``.

    Returns:
        the mean over faces of (mean over labelled landmarks of the Euclidean error) / the
        face's normaliser, as a fraction; NaN when no face counts. Faces with no labelled
        landmark or a zero normaliser are left out.
    """
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)[..., :2]
    visible = np.asarray(visible, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 3 or visible.shape != gt.shape[:2]:
        raise ValueError(f"landmark_nme: pred {pred.shape}, gt {gt.shape} must be (N, K, 2) and "
                         f"visible {visible.shape} (N, K)")
    if norm == "inter_ocular":
        scale = np.linalg.norm(gt[:, 0] - gt[:, 1], axis=1)
        usable = visible[:, 0] & visible[:, 1]
    elif norm == "box":
        if boxes is None:
            raise ValueError("landmark_nme: norm='box' needs the ground-truth boxes")
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(b) != len(gt):
            raise ValueError(f"landmark_nme: {len(b)} boxes for {len(gt)} faces")
        scale = np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))
        usable = np.ones(len(gt), dtype=bool)
    else:
        raise ValueError(f"landmark_nme: norm must be 'inter_ocular' or 'box', got {norm!r}")
    counted = visible.sum(axis=1)
    usable &= (counted > 0) & (scale > 0)
    if not usable.any():
        return float("nan")
    err = np.linalg.norm(pred - gt, axis=2) * visible
    per_face = err[usable].sum(axis=1) / counted[usable] / scale[usable]
    return float(per_face.mean())
