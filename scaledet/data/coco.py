"""COCO detection json: read into a ``DetectionDataset`` and write back.

COCO boxes are ``[x, y, w, h]`` in pixels (top-left corner plus size); records hold ``xyxy``.
Categories keep their original ids and file order: label ``i`` is the ``i``-th category of the
file, ``dataset.category_ids[i]`` its COCO id.

Keypoints (COCO ``person_keypoints`` files): an annotation's ``keypoints`` is ``[x1, y1, v1, ...,
xK, yK, vK]`` (pixels, ``v`` in ``{0, 1, 2}``) and ``num_keypoints`` the count of ``v > 0``; a
category names its joints (``keypoints``) and limbs (``skeleton``, 1-based pairs). K is the
length of the categories' ``keypoints`` lists (they must agree), else that of the first
annotation with ``keypoints``; an annotation without ``keypoints`` in a keypoint dataset reads as
K unlabelled points. Written back, every category carries the joint names and skeleton and every
annotation its K points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from scaledet.data.records import DetectionDataset, DetectionRecord, LabelProblem, report_problem


def read_coco(json_path: str | Path, image_root: str | Path | None = None, *,
              problems: list[LabelProblem] | None = None) -> DetectionDataset:
    """Read a COCO detection json.

    Args:
        json_path: the annotation file (``instances_val.json``).
        image_root: folder the ``file_name`` entries are relative to (default: the json's folder).
        problems: ``None`` raises ``ValueError`` at the first malformed entry, naming the file and
            annotation id; a list collects ``LabelProblem``s and skips the entries instead.
    """
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {json_path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{json_path}: not valid json ({e})") from e
    return coco_dict_to_dataset(data, image_root if image_root is not None else json_path.parent,
                                source=json_path.name, problems=problems)


def coco_dict_to_dataset(data: Any, image_root: str | Path, *, source: str = "coco",
                         problems: list[LabelProblem] | None = None) -> DetectionDataset:
    """Build a ``DetectionDataset`` from an already-parsed COCO dict (see ``read_coco``)."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{source}: not a COCO detection file (no 'images' list)")
    if not isinstance(data.get("categories"), list):
        raise ValueError(f"{source}: not a COCO detection file (no 'categories' list)")
    names, cat_ids = _parse_categories(data["categories"], source)
    kpt_names, skeleton = _keypoint_table(data["categories"], source)
    records = _parse_images(data["images"], source)
    by_id = {r.image_id: r for r in records}
    label_of = {c: i for i, c in enumerate(cat_ids)}
    anns: dict[int, list[tuple]] = {r.image_id: [] for r in records}
    annotations = data.get("annotations") or []
    k = len(kpt_names) if kpt_names is not None else _keypoints_in_annotations(annotations)
    for ann in annotations:
        parsed = _parse_annotation(ann, source, by_id, label_of, problems)
        if parsed is None:
            continue
        if k:
            kpts = _parse_keypoints(ann, k, f"{source}: annotation id {ann.get('id', '?')}",
                                    problems)
            if kpts is None:
                continue
            parsed = (*parsed, kpts)
        anns[parsed[0]].append(parsed[1:])
    for record in records:
        _fill_record(record, anns[record.image_id], k)
    return DetectionDataset(records, names, cat_ids, Path(image_root), source=source,
                            keypoint_names=kpt_names, skeleton=skeleton, num_keypoints=k)


def _keypoint_table(cats: list, source: str) -> tuple[list[str] | None, list | None]:
    """The joint names and skeleton of the categories that declare ``keypoints`` (all such
    categories must name the same number of joints; the first one's names are used)."""
    names, skeleton = None, None
    for cat in cats:
        if cat.get("keypoints") is None:
            continue
        kpts = cat["keypoints"]
        where = f"{source}: category id {cat['id']}"
        if not isinstance(kpts, list) or not all(isinstance(n, str) for n in kpts):
            raise ValueError(f"{where}: 'keypoints' must be a list of joint names")
        if names is not None and len(kpts) != len(names):
            raise ValueError(f"{where}: names {len(kpts)} keypoints, an earlier category "
                             f"{len(names)}")
        sk = cat.get("skeleton")
        if sk is not None and not (isinstance(sk, list) and all(
                isinstance(e, list) and len(e) == 2 and all(_is_int(i) for i in e) for e in sk)):
            raise ValueError(f"{where}: 'skeleton' must be a list of [i, j] joint index pairs")
        if names is None:
            names, skeleton = list(kpts), ([tuple(e) for e in sk] if sk is not None else None)
    return names, skeleton


def _keypoints_in_annotations(annotations: list) -> int:
    """K from the first annotation with a ``keypoints`` list of 3K entries (0 if none)."""
    for ann in annotations:
        kpts = ann.get("keypoints") if isinstance(ann, dict) else None
        if isinstance(kpts, list) and kpts and len(kpts) % 3 == 0:
            return len(kpts) // 3
    return 0


def _parse_keypoints(ann: dict, k: int, where: str,
                     problems: list[LabelProblem] | None) -> np.ndarray | None:
    """``(K, 3)`` float32 points of an annotation (zeros when it has none), or ``None`` for a
    skipped entry. A ``num_keypoints`` that disagrees with the flags is reported (collecting
    readers only) and the flags are kept."""
    kpts = ann.get("keypoints")
    if kpts is None:
        return np.zeros((k, 3), dtype=np.float32)
    if not (isinstance(kpts, list) and all(_is_number(v) for v in kpts)):
        return report_problem(problems, "malformed", where, "keypoints must be a list of numbers")
    if len(kpts) != 3 * k:
        return report_problem(problems, "keypoint_count", where,
                              f"{len(kpts)} keypoint values, expected 3 x K = {3 * k} (K = {k})")
    if not all(math.isfinite(v) for v in kpts):
        return report_problem(problems, "non_finite", where, "keypoints are not all finite")
    points = np.array(kpts, dtype=np.float64).reshape(k, 3)
    bad = [i for i, v in enumerate(points[:, 2]) if v not in (0, 1, 2)]
    if bad:
        return report_problem(problems, "keypoint_visibility", where,
                              f"visibility flag {points[bad[0], 2]:g} of keypoint {bad[0]} is "
                              f"not 0, 1 or 2 ({len(bad)} such)")
    labelled = int((points[:, 2] > 0).sum())
    stated = ann.get("num_keypoints")
    if problems is not None and stated is not None and stated != labelled:
        problems.append(LabelProblem("num_keypoints_mismatch", where,
                                     f"num_keypoints is {stated!r} but {labelled} keypoints "
                                     "have v > 0"))
    return points.astype(np.float32)


def _parse_categories(cats: list, source: str) -> tuple[list[str], list[int]]:
    names, ids = [], []
    for i, cat in enumerate(cats):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise ValueError(f"{source}: category {i}: needs an integer 'id'")
        if cat["id"] in ids:
            raise ValueError(f"{source}: category id {cat['id']} appears twice")
        ids.append(int(cat["id"]))
        names.append(str(cat.get("name", cat["id"])))
    return names, ids


def _parse_images(images: list, source: str) -> list[DetectionRecord]:
    records, seen = [], set()
    for i, img in enumerate(images):
        where = f"{source}: image {i}"
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise ValueError(f"{where}: needs an integer 'id'")
        where = f"{source}: image id {img['id']}"
        if img["id"] in seen:
            raise ValueError(f"{where}: id appears twice")
        if not isinstance(img.get("file_name"), str):
            raise ValueError(f"{where}: needs a 'file_name' string")
        if not (_is_int(img.get("width")) and _is_int(img.get("height"))):
            raise ValueError(f"{where}: needs integer 'width' and 'height'")
        seen.add(img["id"])
        records.append(DetectionRecord(int(img["id"]), img["file_name"], int(img["width"]),
                                       int(img["height"])))
    return records


def _parse_annotation(ann: Any, source: str, by_id: dict, label_of: dict,
                      problems: list[LabelProblem] | None) -> tuple | None:
    """``(image_id, xyxy, label, iscrowd, area, ann_id)`` or ``None`` for a skipped entry."""
    ann_id = ann.get("id", "?") if isinstance(ann, dict) else "?"
    where = f"{source}: annotation id {ann_id}"
    if not isinstance(ann, dict):
        return report_problem(problems, "malformed", where, "annotation must be an object")
    if ann.get("image_id") not in by_id:
        return report_problem(problems, "malformed", where,
                              f"image_id {ann.get('image_id')!r} is not in 'images'")
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return report_problem(problems, "malformed", where, "bbox must be 4 numbers")
    if not all(math.isfinite(v) for v in bbox):
        return report_problem(problems, "non_finite", where, f"bbox {bbox} is not finite")
    if ann.get("category_id") not in label_of:
        return report_problem(problems, "unknown_class", where,
                              f"category_id {ann.get('category_id')!r} is not in 'categories'")
    x, y, w, h = (float(v) for v in bbox)
    area = float(ann["area"]) if _is_number(ann.get("area")) else w * h
    return (ann["image_id"], (x, y, x + w, y + h), label_of[ann["category_id"]],
            bool(ann.get("iscrowd", 0)), area, int(ann_id) if _is_int(ann_id) else 0)


def _fill_record(record: DetectionRecord, anns: list[tuple], k: int) -> None:
    if not anns:
        return
    boxes, labels, crowd, areas, ids = zip(*(a[:5] for a in anns))
    if k:
        record.keypoints = np.stack([a[5] for a in anns]).astype(np.float32)
    record.boxes = np.array(boxes, dtype=np.float64)
    record.labels = np.array(labels, dtype=np.int64)
    record.iscrowd = np.array(crowd, dtype=bool)
    record.areas = np.array(areas, dtype=np.float64)
    record.ann_ids = np.array(ids, dtype=np.int64)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def to_coco_dict(dataset: DetectionDataset) -> dict:
    """The COCO ground-truth dict of a dataset (what pycocotools' ``COCO()`` loads).

    Boxes are written as ``[x, y, w, h]``; ``area`` is ``record.areas``; categories keep their
    ids and order; annotation ids are the records' ``ann_ids`` when they are all set and unique,
    else ``1..N`` in record order. A keypoint dataset also writes each annotation's
    ``keypoints`` (float32 values at their shortest exact decimals, flags as integers) and
    ``num_keypoints``, and the joint names and skeleton on every category.
    """
    all_ids = np.concatenate([r.ann_ids for r in dataset.records] or [np.zeros(0, np.int64)])
    keep_ids = bool(len(all_ids)) and all_ids.min() > 0 and len(np.unique(all_ids)) == len(all_ids)
    images, annotations = [], []
    for record in dataset.records:
        images.append({"id": int(record.image_id), "file_name": record.file_name,
                       "width": int(record.width), "height": int(record.height)})
        for i in range(len(record)):
            x1, y1, x2, y2 = (float(v) for v in record.boxes[i])
            annotations.append({
                "id": int(record.ann_ids[i]) if keep_ids else len(annotations) + 1,
                "image_id": int(record.image_id),
                "category_id": int(dataset.category_ids[record.labels[i]]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(record.areas[i]),
                "iscrowd": int(record.iscrowd[i]),
            })
            if record.keypoints is not None:
                annotations[-1].update(_keypoints_entry(record.keypoints[i]))
    categories = [{"id": int(c), "name": n, "supercategory": ""}
                  for c, n in zip(dataset.category_ids, dataset.class_names)]
    for cat in categories if dataset.num_keypoints else []:
        if dataset.keypoint_names is not None:
            cat["keypoints"] = list(dataset.keypoint_names)
        if dataset.skeleton is not None:
            cat["skeleton"] = [[int(a), int(b)] for a, b in dataset.skeleton]
    return {"info": {"description": dataset.source or "scaledet"}, "images": images,
            "annotations": annotations, "categories": categories}


def _keypoints_entry(points: np.ndarray) -> dict[str, Any]:
    """``{"keypoints": [x, y, v] * K, "num_keypoints": n}`` of one ``(K, 3)`` float32 array."""
    flat: list[float | int] = []
    for x, y, v in points:
        flat += [float(str(np.float32(x))), float(str(np.float32(y))), int(v)]
    return {"keypoints": flat, "num_keypoints": int((points[:, 2] > 0).sum())}


def write_coco_json(dataset: DetectionDataset, json_path: str | Path) -> Path:
    """Write ``to_coco_dict(dataset)`` to ``json_path`` (compact, deterministic)."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_coco_dict(dataset), separators=(",", ":"))
    json_path.write_text(text, encoding="utf-8")
    return json_path
