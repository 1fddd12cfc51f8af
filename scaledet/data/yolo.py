"""Ultralytics YOLO datasets: ``data.yaml`` + ``images/`` + ``labels/``.

``data.yaml`` keys: ``path`` (dataset root; relative to the yaml's folder, default the yaml's
folder), ``train`` / ``val`` / ``test`` (an image folder, a ``.txt`` list of images, or a list of
those, relative to the root), ``names`` (a list, or a dict ``{0: name, ...}``), optional ``nc``.
We also write and read ``coco_category_ids`` (ignored by Ultralytics) so COCO -> YOLO -> COCO keeps
the category ids.

Each image ``.../images/.../x.jpg`` has a label file ``.../labels/.../x.txt`` (a missing file means
no objects) with one object per line: ``class cx cy w h``, normalised to ``[0, 1]`` by the image
width and height. Segment lines (``class x1 y1 x2 y2 ...``) are read as the polygon's box.
Records from YOLO carry the label line number in ``ann_ids``; their ``file_name`` is relative to
the dataset root.

Pose datasets: ``kpt_shape: [K, 3]`` (or ``[K, 2]``) in ``data.yaml`` and, optionally,
``flip_idx`` (the joint each joint becomes in a mirrored image). Each line is then
``class cx cy w h`` followed by K points ``x y v`` (``x y`` normalised like the box, ``v`` in
``{0, 1, 2}``; with ``[K, 2]`` only ``x y``, read as ``v = 2``, or ``v = 0`` for ``0 0``). We also
write and read ``keypoint_names`` and ``skeleton`` (COCO's 1-based pairs; ignored by
Ultralytics) so COCO -> YOLO -> COCO keeps the joint table.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from scaledet.data.images import IMAGE_SUFFIXES, ImageReadError, image_size
from scaledet.data.records import (
    DetectionDataset,
    DetectionRecord,
    LabelProblem,
    read_yaml_mapping,
    report_problem,
)


def read_yolo(yaml_path: str | Path, split: str = "train", *,
              problems: list[LabelProblem] | None = None) -> DetectionDataset:
    """Read one split of a YOLO dataset described by ``data.yaml``.

    ``problems=None`` raises ``ValueError`` naming the label file and line at the first malformed
    line; a list collects ``LabelProblem``s and skips those lines. Images whose size cannot be
    read are skipped with a warning (collected datasets keep them with size 0 and no boxes, so
    ``data check`` can report them).
    """
    yaml_path = Path(yaml_path)
    data = read_yaml_mapping(yaml_path)
    root = yaml_root(yaml_path, data)
    names = class_names_from_yaml(data, yaml_path)
    cat_ids = data.get("coco_category_ids")
    if cat_ids is not None and (not isinstance(cat_ids, list) or len(cat_ids) != len(names)):
        raise ValueError(f"{yaml_path}: coco_category_ids must be a list of {len(names)} ids")
    if not data.get(split):
        raise ValueError(f"{yaml_path}: no '{split}' split (has: "
                         f"{', '.join(k for k in ('train', 'val', 'test') if data.get(k))})")
    kpt_shape = kpt_shape_from_yaml(data, yaml_path)
    k = kpt_shape[0] if kpt_shape else 0
    kpt_names, skeleton, flip_idx = (data.get(key) for key in ("keypoint_names", "skeleton",
                                                               "flip_idx"))
    for key, value in (("keypoint_names", kpt_names), ("flip_idx", flip_idx)):
        if value is not None and (not kpt_shape or not isinstance(value, list)
                                  or len(value) != k):
            raise ValueError(f"{yaml_path}: {key} must be a list of K = {k} entries "
                             f"(kpt_shape {kpt_shape}), got {value!r}")
    records = []
    for i, image in enumerate(list_split_images(root, data[split], yaml_path)):
        record = _read_record(i + 1, image, root, len(names), problems, kpt_shape)
        if record is not None:
            records.append(record)
    try:
        return DetectionDataset(records, names, cat_ids, root, source=f"{yaml_path} [{split}]",
                                keypoint_names=kpt_names, skeleton=skeleton, flip_idx=flip_idx,
                                num_keypoints=k)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{yaml_path}: {e}") from None


def kpt_shape_from_yaml(data: dict[str, Any], yaml_path: Path) -> tuple[int, int] | None:
    """``(K, dim)`` from ``kpt_shape: [K, 2 | 3]``, or ``None`` for a box dataset."""
    shape = data.get("kpt_shape")
    if shape is None:
        return None
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
            or shape[0] < 1 or shape[1] not in (2, 3)):
        raise ValueError(f"{yaml_path}: kpt_shape must be [K, 3] or [K, 2] with K >= 1, "
                         f"got {shape!r}")
    return int(shape[0]), int(shape[1])


def yaml_root(yaml_path: Path, data: dict[str, Any]) -> Path:
    """The dataset root: ``path`` from the yaml or the yaml's folder.

    A relative ``path`` is taken from the yaml's folder, or from the working directory when
    only that one exists (yamls written for Ultralytics often name a folder from where the
    training is started).
    """
    if not data.get("path"):
        return yaml_path.parent
    path = Path(str(data["path"]))
    beside = yaml_path.parent / path
    if not beside.exists() and not path.is_absolute() and path.is_dir():
        return path.resolve()
    return beside


def class_names_from_yaml(data: dict[str, Any], yaml_path: Path) -> list[str]:
    """``names`` as a list indexed by class id (accepts a list or a ``{id: name}`` dict)."""
    names = data.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{yaml_path}: names keys must be 0..{len(names) - 1}, "
                             f"got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{yaml_path}: 'names' must be a non-empty list or {{id: name}} dict")
    if "nc" in data and data["nc"] != len(names):
        raise ValueError(f"{yaml_path}: nc is {data['nc']} but there are {len(names)} names")
    return [str(n) for n in names]


def list_split_images(root: Path, entry: Any, yaml_path: Path) -> list[Path]:
    """The image files of a split entry: folder(s) searched recursively and/or ``.txt`` lists."""
    images: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        path = root / str(item)
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            images += [root / line.strip() for line in lines if line.strip()]
        else:
            raise FileNotFoundError(f"{yaml_path}: split entry {item!r}: {path} does not exist")
    return images


def label_path(image_path: str | Path) -> Path:
    """``.../images/.../x.jpg`` -> ``.../labels/.../x.txt`` (the last ``images`` folder)."""
    parts = list(Path(image_path).parts)
    if "images" not in parts[:-1]:
        return Path(image_path).with_suffix(".txt")
    i = len(parts) - 2 - parts[-2::-1].index("images")
    parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def _read_record(image_id: int, image: Path, root: Path, num_classes: int,
                 problems: list[LabelProblem] | None,
                 kpt_shape: tuple[int, int] | None = None) -> DetectionRecord | None:
    file_name = _relative(image, root)
    try:
        width, height = image_size(image)
    except ImageReadError as e:
        if problems is None:
            warnings.warn(f"skipping {e}", stacklevel=3)
            return None
        return DetectionRecord(image_id, file_name, 0, 0)
    labels_file = label_path(image)
    if not labels_file.is_file():
        return DetectionRecord(image_id, file_name, width, height)
    where = _relative(labels_file, root)
    rows = parse_label_lines(labels_file.read_text(encoding="utf-8"), where, num_classes,
                             problems, kpt_shape)
    boxes = np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 4)
    boxes *= np.array([width, height, width, height], dtype=np.float64)
    keypoints = None
    if kpt_shape:
        keypoints = np.array([r[3] for r in rows], dtype=np.float64).reshape(-1, kpt_shape[0], 3)
        keypoints[..., :2] *= np.array([width, height], dtype=np.float64)
    return DetectionRecord(image_id, file_name, width, height, boxes,
                           labels=[r[2] for r in rows], ann_ids=[r[0] for r in rows],
                           keypoints=keypoints)


def parse_label_lines(text: str, where: str, num_classes: int,
                      problems: list[LabelProblem] | None = None,
                      kpt_shape: tuple[int, int] | None = None) -> list[tuple]:
    """``(line_number, normalised xyxy, class_id)`` per valid line of a YOLO label file; with
    ``kpt_shape = (K, dim)`` a fourth item, the ``(K, 3)`` normalised points with flags."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parsed = _parse_line(line, f"{where}:{lineno}", num_classes, problems, kpt_shape)
        if parsed is not None:
            rows.append((lineno, *parsed))
    return rows


def _parse_line(line: str, where: str, num_classes: int,
                problems: list[LabelProblem] | None,
                kpt_shape: tuple[int, int] | None = None) -> tuple | None:
    parts = line.split()
    if not parts:
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not _is_float(p))
        return report_problem(problems, "malformed", where, f"not a number: {bad!r}")
    if kpt_shape:
        return _parse_pose_line(values, parts, line, where, num_classes, problems, kpt_shape)
    if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
        return report_problem(problems, "malformed", where,
                              f"expected 5 numbers, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        return report_problem(problems, "non_finite", where, f"not finite: {line.strip()!r}")
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < num_classes:
        return report_problem(problems, "unknown_class", where,
                              f"class id {parts[0]} is not in 0..{num_classes - 1}")
    if len(values) == 5:
        cx, cy, w, h = values[1:]
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), int(cls)
    xs, ys = values[1::2], values[2::2]
    return (min(xs), min(ys), max(xs), max(ys)), int(cls)


def _parse_pose_line(values: list[float], parts: list[str], line: str, where: str,
                     num_classes: int, problems: list[LabelProblem] | None,
                     kpt_shape: tuple[int, int]) -> tuple | None:
    """``(normalised xyxy, class, (K, 3) points)`` of a pose line ``class cx cy w h`` + K
    points, or ``None`` after reporting what is wrong."""
    k, dim = kpt_shape
    if len(values) != 5 + k * dim:
        return report_problem(problems, "keypoint_count", where,
                              f"expected 5 + {k} x {dim} = {5 + k * dim} numbers (kpt_shape "
                              f"[{k}, {dim}] in the yaml), got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        return report_problem(problems, "non_finite", where, f"not finite: {line.strip()!r}")
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < num_classes:
        return report_problem(problems, "unknown_class", where,
                              f"class id {parts[0]} is not in 0..{num_classes - 1}")
    points = np.array(values[5:], dtype=np.float64).reshape(k, dim)
    if dim == 2:
        flags = np.where((points[:, 0] == 0) & (points[:, 1] == 0), 0.0, 2.0)
        points = np.concatenate([points, flags[:, None]], axis=1)
    bad = [i for i, v in enumerate(points[:, 2]) if v not in (0, 1, 2)]
    if bad:
        return report_problem(problems, "keypoint_visibility", where,
                              f"visibility flag {parts[5 + bad[0] * dim + 2]} of keypoint "
                              f"{bad[0]} is not 0, 1 or 2 ({len(bad)} such)")
    cx, cy, w, h = values[1:5]
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), int(cls), points


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


def yolo_lines(record: DetectionRecord, kpt_dim: int = 3) -> list[str]:
    """The label lines of a record: ``class cx cy w h`` normalised, 8 decimals (1e-8 of the image
    side, so a round trip keeps boxes to well under 1e-3 px). Crowd boxes are left out. A record
    with keypoints adds K points ``x y v`` (``kpt_dim=2``: ``x y``, unlabelled ones as ``0 0``),
    ``x y`` normalised to 8 decimals, ``v`` an integer."""
    w, h = float(record.width), float(record.height)
    lines = []
    for i, ((x1, y1, x2, y2), label, crowd) in enumerate(zip(record.boxes, record.labels,
                                                               record.iscrowd)):
        if crowd:
            continue
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        line = f"{int(label)} {cx:.8f} {cy:.8f} {bw:.8f} {bh:.8f}"
        if record.keypoints is not None:
            for x, y, v in record.keypoints[i].astype(np.float64):
                if kpt_dim == 2:
                    line += " 0 0" if v == 0 else f" {x / w:.8f} {y / h:.8f}"
                else:
                    line += f" {x / w:.8f} {y / h:.8f} {int(v)}"
        lines.append(line)
    return lines


def write_yolo_labels(dataset: DetectionDataset, labels_dir: str | Path,
                      file_names: list[str] | None = None, kpt_dim: int = 3) -> None:
    """One ``.txt`` per record under ``labels_dir`` (an empty file for an image without boxes).

    ``file_names`` (default ``record.file_name``) are the images' paths relative to their
    ``images/<split>`` folder; the label file mirrors it with a ``.txt`` suffix. Keypoints are
    written as ``kpt_shape [K, kpt_dim]`` lines (``yolo_lines``).
    """
    labels_dir = Path(labels_dir)
    for i, record in enumerate(dataset.records):
        name = file_names[i] if file_names is not None else record.file_name
        out = labels_dir / Path(name).with_suffix(".txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = yolo_lines(record, kpt_dim)
        out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_yolo_yaml(path: str | Path, class_names: list[str], splits: dict[str, str],
                    category_ids: list[int] | None = None, *,
                    kpt_shape: tuple[int, int] | None = None, flip_idx: list[int] | None = None,
                    keypoint_names: list[str] | None = None,
                    skeleton: list[tuple[int, int]] | None = None) -> Path:
    """Write ``data.yaml`` with the splits (folders relative to the yaml), names and category ids,
    and for a pose dataset ``kpt_shape``, ``flip_idx``, ``keypoint_names`` and ``skeleton``.

    No ``path`` key: Ultralytics and scaledet then take the yaml's folder as the root, so the
    dataset folder can be moved.
    """
    import yaml

    data: dict[str, Any] = dict(splits)
    data["nc"] = len(class_names)
    data["names"] = {i: n for i, n in enumerate(class_names)}
    if category_ids is not None:
        data["coco_category_ids"] = [int(c) for c in category_ids]
    if kpt_shape is not None:
        data["kpt_shape"] = [int(kpt_shape[0]), int(kpt_shape[1])]
        if flip_idx is not None:
            data["flip_idx"] = [int(i) for i in flip_idx]
        if keypoint_names is not None:
            data["keypoint_names"] = [str(n) for n in keypoint_names]
        if skeleton is not None:
            data["skeleton"] = [[int(a), int(b)] for a, b in skeleton]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
