"""The one in-memory representation every dataset format is read into and written from.

Boxes are always ``xyxy`` in absolute pixels of the original image (x to the right, y down,
continuous coordinates: a box covering pixel columns 0..9 is ``x1=0, x2=10``). Labels are
contiguous class indices ``0..C-1``; ``DetectionDataset.category_ids[label]`` gives the COCO
category id, ``class_names[label]`` the name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float64)


def _empty(dtype) -> np.ndarray:
    return np.zeros((0,), dtype=dtype)


@dataclass
class DetectionRecord:
    """One image and its annotations.

    Attributes:
        image_id: integer id (the COCO image id when read from COCO).
        file_name: image path relative to ``DetectionDataset.image_root`` (or absolute).
        width, height: image size in pixels as declared by the annotation file.
        boxes: ``(N, 4)`` float64, xyxy pixels.
        labels: ``(N,)`` int64 class indices in ``0..C-1``.
        iscrowd: ``(N,)`` bool, COCO crowd regions (matched but never counted as misses).
        areas: ``(N,)`` float64, the COCO ``area`` field (segment area); box area when absent.
        ann_ids: ``(N,)`` int64 annotation ids (0 when the format has none).
    """

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=_empty_boxes)
    labels: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    iscrowd: np.ndarray = field(default_factory=lambda: _empty(bool))
    areas: np.ndarray = field(default_factory=lambda: _empty(np.float64))
    ann_ids: np.ndarray = field(default_factory=lambda: _empty(np.int64))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        n = len(self.boxes)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.iscrowd) != n:
            self.iscrowd = np.zeros(n, dtype=bool)
        self.iscrowd = np.asarray(self.iscrowd, dtype=bool).reshape(-1)
        if len(self.areas) != n:
            self.areas = (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])
        self.areas = np.asarray(self.areas, dtype=np.float64).reshape(-1)
        if len(self.ann_ids) != n:
            self.ann_ids = np.zeros(n, dtype=np.int64)
        self.ann_ids = np.asarray(self.ann_ids, dtype=np.int64).reshape(-1)
        if len(self.labels) != n:
            raise ValueError(
                f"image {self.file_name!r}: {n} boxes but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class DetectionDataset:
    """A list of records plus the class table.

    Attributes:
        records: one ``DetectionRecord`` per image.
        class_names: ``C`` names, indexed by label.
        category_ids: ``C`` COCO category ids, indexed by label (``range(1, C+1)`` by default).
        image_root: folder that ``record.file_name`` is relative to.
        source: where the dataset was read from (for error messages).
    """

    records: list[DetectionRecord]
    class_names: list[str]
    category_ids: list[int] | None = None
    image_root: Path = Path(".")
    source: str = ""

    def __post_init__(self) -> None:
        self.image_root = Path(self.image_root)
        if self.category_ids is None:
            self.category_ids = list(range(1, len(self.class_names) + 1))
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(f"{self.source}: {len(self.class_names)} class names but "
                             f"{len(self.category_ids)} category ids")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image_path(self, record: DetectionRecord) -> Path:
        return self.image_root / record.file_name

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> DetectionRecord:
        return self.records[i]


class LabelProblem(NamedTuple):
    """One problem a reader found in a label file (collected by ``scaledet data check``).

    Attributes:
        kind: ``"malformed"`` (unparseable entry), ``"non_finite"`` (NaN/inf coordinate) or
            ``"unknown_class"`` (class id not in the class table).
        where: the place, e.g. ``"labels/train/x.txt:3"`` or
            ``"instances_val.json: annotation id 17"``.
        message: what is wrong, e.g. ``"expected 5 numbers, got 4"``.
    """

    kind: str
    where: str
    message: str


def report_problem(problems: list[LabelProblem] | None, kind: str, where: str,
                   message: str) -> None:
    """Raise ``ValueError("where: message")``, or append to ``problems`` when a list is given.

    Readers take ``problems=None`` (raise at the first bad entry, the default) or a list (skip
    bad entries and collect them, as ``data check`` does).
    """
    if problems is None:
        raise ValueError(f"{where}: {message}")
    problems.append(LabelProblem(kind, where, message))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping at the top of a yaml file; a ``ValueError`` naming the file otherwise."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid yaml ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data
