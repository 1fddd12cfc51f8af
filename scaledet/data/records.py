"""The one in-memory representation every dataset format is read into and written from.

Boxes are always ``xyxy`` in absolute pixels of the original image (x to the right, y down,
continuous coordinates: a box covering pixel columns 0..9 is ``x1=0, x2=10``). Labels are
contiguous class indices ``0..C-1``; ``DetectionDataset.category_ids[label]`` gives the COCO
category id, ``class_names[label]`` the name.

Keypoint datasets (COCO ``person_keypoints``, YOLO pose) also carry ``keypoints`` ``(N, K, 3)``
float32 per record: ``x, y`` in pixels of the original image (same frame as the boxes) and the
visibility flag ``v`` (COCO's: 0 not labelled, 1 labelled but occluded, 2 labelled and visible).
The coordinates of a ``v = 0`` point mean nothing (COCO writes ``0, 0``). The dataset holds the
table of the K joints: ``keypoint_names``, ``skeleton`` (COCO's 1-based index pairs) and
``flip_idx`` (the joint each one becomes in a mirrored image). Box-only datasets have
``keypoints=None`` everywhere and ``num_keypoints == 0``.
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
        keypoints: ``(N, K, 3)`` float32 ``x, y`` pixels and visibility ``v`` in ``{0, 1, 2}``,
            or ``None`` for a box-only dataset.
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
    keypoints: np.ndarray | None = None

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
        if self.keypoints is not None:
            kpts = np.asarray(self.keypoints, dtype=np.float32)
            if kpts.ndim != 3 or kpts.shape[0] != n or kpts.shape[2] != 3:
                raise ValueError(f"image {self.file_name!r}: keypoints must be ({n}, K, 3), got "
                                 f"shape {kpts.shape}")
            self.keypoints = kpts

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
        keypoint_names: the K joint names (COCO category ``keypoints``), or ``None``.
        skeleton: pairs of 1-based joint indices joined by a limb (COCO's ``skeleton``).
        flip_idx: ``(K,)`` the joint that joint ``k`` becomes in a left-right mirrored image
            (YOLO's ``flip_idx``); ``None``: derived from the names (``flip_index``).
        num_keypoints: K, or 0 for a box-only dataset.
    """

    records: list[DetectionRecord]
    class_names: list[str]
    category_ids: list[int] | None = None
    image_root: Path = Path(".")
    source: str = ""
    keypoint_names: list[str] | None = None
    skeleton: list[tuple[int, int]] | None = None
    flip_idx: list[int] | None = None
    num_keypoints: int = 0

    def __post_init__(self) -> None:
        self.image_root = Path(self.image_root)
        if self.category_ids is None:
            self.category_ids = list(range(1, len(self.class_names) + 1))
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(f"{self.source}: {len(self.class_names)} class names but "
                             f"{len(self.category_ids)} category ids")
        if not self.num_keypoints:
            self.num_keypoints = next((r.keypoints.shape[1] for r in self.records
                                       if r.keypoints is not None), 0)
            if not self.num_keypoints and self.keypoint_names:
                self.num_keypoints = len(self.keypoint_names)
        k = self.num_keypoints
        if self.keypoint_names is not None and len(self.keypoint_names) != k:
            raise ValueError(f"{self.source}: {len(self.keypoint_names)} keypoint names but "
                             f"K = {k} keypoints")
        if self.flip_idx is not None:
            self.flip_idx = [int(i) for i in self.flip_idx]
            if sorted(self.flip_idx) != list(range(k)):
                raise ValueError(f"{self.source}: flip_idx must be a permutation of 0..{k - 1}, "
                                 f"got {self.flip_idx}")
        if self.skeleton is not None:
            self.skeleton = [(int(a), int(b)) for a, b in self.skeleton]
            bad = [p for p in self.skeleton if not (1 <= p[0] <= k and 1 <= p[1] <= k)]
            if bad:
                raise ValueError(f"{self.source}: skeleton pairs must be 1-based joint indices "
                                 f"1..{k}, got {bad[0]}")
        for r in self.records:
            if k and r.keypoints is None:
                r.keypoints = np.zeros((len(r), k, 3), dtype=np.float32)
            elif r.keypoints is not None and r.keypoints.shape[1] != k:
                raise ValueError(f"{self.source}: image {r.file_name!r} has "
                                 f"{r.keypoints.shape[1]} keypoints per object, the dataset {k}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def flip_index(self) -> list[int]:
        """``flip_idx``, or the left/right swap derived from ``keypoint_names`` (see
        ``flip_index_from_names``); the identity when neither says anything."""
        if self.flip_idx is not None:
            return list(self.flip_idx)
        if self.keypoint_names is not None:
            return flip_index_from_names(self.keypoint_names)
        return list(range(self.num_keypoints))

    def image_path(self, record: DetectionRecord) -> Path:
        return self.image_root / record.file_name

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> DetectionRecord:
        return self.records[i]


def flip_index_from_names(names: list[str]) -> list[int]:
    """The joint each joint becomes in a mirrored image: ``left_*`` <-> ``right_*`` (also
    ``l_*`` / ``r_*``, ``*_left`` / ``*_right``, any case); joints without a partner map to
    themselves. A name with a side prefix whose partner is missing stays where it is."""
    def partner(name: str) -> str | None:
        low = name.lower()
        for a, b in (("left_", "right_"), ("right_", "left_"), ("l_", "r_"), ("r_", "l_")):
            if low.startswith(a):
                return b + low[len(a):]
        for a, b in (("_left", "_right"), ("_right", "_left")):
            if low.endswith(a):
                return low[:-len(a)] + b
        return None

    index = {n.lower(): i for i, n in enumerate(names)}
    return [index.get(partner(n) or "", i) for i, n in enumerate(names)]


class LabelProblem(NamedTuple):
    """One problem a reader found in a label file (collected by ``scaledet data check``).

    Attributes:
        kind: ``"malformed"`` (unparseable entry), ``"non_finite"`` (NaN/inf coordinate),
            ``"unknown_class"`` (class id not in the class table), or for keypoints
            ``"keypoint_count"`` (not K points), ``"keypoint_visibility"`` (a flag outside
            ``{0, 1, 2}``), ``"num_keypoints_mismatch"`` (COCO ``num_keypoints`` disagrees with
            the flags; the entry is kept).
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
