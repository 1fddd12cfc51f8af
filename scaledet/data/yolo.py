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
    records = []
    for i, image in enumerate(list_split_images(root, data[split], yaml_path)):
        record = _read_record(i + 1, image, root, len(names), problems)
        if record is not None:
            records.append(record)
    return DetectionDataset(records, names, cat_ids, root, source=f"{yaml_path} [{split}]")


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
                 problems: list[LabelProblem] | None) -> DetectionRecord | None:
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
                             problems)
    boxes = np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 4)
    boxes *= np.array([width, height, width, height], dtype=np.float64)
    return DetectionRecord(image_id, file_name, width, height, boxes,
                           labels=[r[2] for r in rows], ann_ids=[r[0] for r in rows])


def parse_label_lines(text: str, where: str, num_classes: int,
                      problems: list[LabelProblem] | None = None) -> list[tuple]:
    """``(line_number, normalised xyxy, class_id)`` per valid line of a YOLO label file."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parsed = _parse_line(line, f"{where}:{lineno}", num_classes, problems)
        if parsed is not None:
            rows.append((lineno, *parsed))
    return rows


def _parse_line(line: str, where: str, num_classes: int,
                problems: list[LabelProblem] | None) -> tuple | None:
    parts = line.split()
    if not parts:
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not _is_float(p))
        return report_problem(problems, "malformed", where, f"not a number: {bad!r}")
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


def yolo_lines(record: DetectionRecord) -> list[str]:
    """The label lines of a record: ``class cx cy w h`` normalised, 8 decimals (1e-8 of the image
    side, so a round trip keeps boxes to well under 1e-3 px). Crowd boxes are left out."""
    w, h = float(record.width), float(record.height)
    lines = []
    for (x1, y1, x2, y2), label, crowd in zip(record.boxes, record.labels, record.iscrowd):
        if crowd:
            continue
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{int(label)} {cx:.8f} {cy:.8f} {bw:.8f} {bh:.8f}")
    return lines


def write_yolo_labels(dataset: DetectionDataset, labels_dir: str | Path,
                      file_names: list[str] | None = None) -> None:
    """One ``.txt`` per record under ``labels_dir`` (an empty file for an image without boxes).

    ``file_names`` (default ``record.file_name``) are the images' paths relative to their
    ``images/<split>`` folder; the label file mirrors it with a ``.txt`` suffix.
    """
    labels_dir = Path(labels_dir)
    for i, record in enumerate(dataset.records):
        name = file_names[i] if file_names is not None else record.file_name
        out = labels_dir / Path(name).with_suffix(".txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = yolo_lines(record)
        out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_yolo_yaml(path: str | Path, class_names: list[str], splits: dict[str, str],
                    category_ids: list[int] | None = None) -> Path:
    """Write ``data.yaml`` with the splits (folders relative to the yaml), names and category ids.

    No ``path`` key: Ultralytics and scaledet then take the yaml's folder as the root, so the
    dataset folder can be moved.
    """
    import yaml

    data: dict[str, Any] = dict(splits)
    data["nc"] = len(class_names)
    data["names"] = {i: n for i, n in enumerate(class_names)}
    if category_ids is not None:
        data["coco_category_ids"] = [int(c) for c in category_ids]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
