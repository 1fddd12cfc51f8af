"""WIDER FACE box annotations and RetinaFace's five-landmark labels, read into a ``FaceDataset``.

Two text formats, both with boxes as ``x y w h`` in pixels (top-left corner plus size; records
hold ``xyxy``, so ``x2 = x + w``, the convention of the official evaluation code):

- WIDER FACE ``wider_face_{train,val}_bbx_gt.txt``: repeated blocks of an image path relative
  to ``WIDER_{split}/images`` (``0--Parade/0_Parade_marchingband_1_849.jpg``), a line with the
  number of faces, then one line per face ``x y w h blur expression illumination invalid
  occlusion pose`` (integer attribute codes, see ``WIDER_ATTRIBUTES``). Quirk: an image with
  count 0 is followed by one line ``0 0 0 0 0 0 0 0 0 0`` that is not a face (it is skipped;
  a file without that line reads too).
- RetinaFace ``label.txt`` (``retinaface_gt_v1.1``: ``train/label.txt`` next to
  ``train/images/``): ``# path/to/img.jpg`` lines (optionally followed by the image's width and
  height), then one line per face: ``x y w h`` alone, or followed by five ``x y v`` landmark
  triples and possibly one more value. ``v`` is ``0.0`` for a visible landmark and ``1.0`` for a
  labelled but occluded one; a face without landmarks has ``-1.0 -1.0 -1.0`` in every triple.
  The trailing value is a per-face quality score (InsightFace's loader calls it ``blur``; a
  negative value means none was labelled), kept as the ``quality`` attribute.

Landmarks become COCO keypoints ``(N, 5, 3)`` in ``FACE_LANDMARK_NAMES`` order (the order of the
file and of ``scaledet.faces.align.ARCFACE_TEMPLATE_112``: left and right *in the image*), with
COCO's flags: visible ``0.0 -> 2``, occluded ``1.0 -> 1``, absent ``-1 -> 0`` (at ``0, 0``).
A WIDER box file has no landmarks: its records carry five unlabelled points each, so both
formats convert to the same COCO layout.

The per-face attributes that COCO has no field for stay in ``FaceDataset.attributes`` (``image_id
-> (N, A)`` float64, columns ``attribute_names``); the WIDER FACE protocol
(``scaledet.evaluation.wider_face``) reads ``invalid`` from there. Each record's ``ann_ids`` are
the faces' 1-based line numbers in the file, so every face can be traced back to its line.

WIDER's file does not store the image size (a RetinaFace ``#`` line may): it is read from the
image header when the image is found under ``image_root``, else width and height are 0
(unknown) and nothing is checked against them.

Checks, each naming ``file:line``: a count line that is not one non-negative integer; a count
that does not match the face lines that follow (the next image's name where a face was
expected, a face line where a name was expected, or the file ending early) -- kind
``malformed``; a value that is not a number (``malformed``) or not finite (``non_finite``);
a landmark flag other than 0, 1, -1 (``keypoint_visibility``); with ``strict`` (the default)
also boxes with ``w <= 0`` or ``h <= 0`` (``empty_box``), boxes entirely outside a known image
(``box_outside``; one that only overhangs is kept, and ``scaledet data check`` warns about it),
labelled landmarks more than 1 px outside a known image (``keypoint_outside_image``).
``problems=None`` raises ``ValueError("file:line: message")`` at the first one; a list collects
``LabelProblem``s and skips the bad faces (the kinds are those of ``scaledet data check``).
``strict=False`` keeps degenerate and out-of-image faces as they are: the official evaluation
scores every ground-truth line as written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaledet.data.records import DetectionDataset, DetectionRecord, LabelProblem, report_problem

FACE_LANDMARK_NAMES = ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"]
"""The five landmarks, left and right as seen in the image (the order of both label files)."""
FACE_SKELETON = [(1, 2), (1, 3), (2, 3), (3, 4), (3, 5), (4, 5)]
"""1-based pairs drawn between landmarks: the eye line, nose to eyes and mouth corners, mouth."""
FACE_FLIP_IDX = [1, 0, 2, 4, 3]
"""The landmark each one becomes in a left-right mirrored image."""
WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
"""WIDER FACE's per-face codes: blur 0 clear / 1 normal / 2 heavy; expression 0 typical /
1 exaggerated; illumination 0 normal / 1 extreme; invalid 0 false / 1 true; occlusion 0 none /
1 partial / 2 heavy; pose 0 typical / 1 atypical."""
RETINAFACE_ATTRIBUTES = ("quality",)
OUT_OF_BOUNDS_TOLERANCE = 1.0  # px, as scaledet.data.check
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_VISIBILITY = {0.0: 2.0, 1.0: 1.0, -1.0: 0.0}  # RetinaFace flag -> COCO flag


@dataclass
class FaceDataset(DetectionDataset):
    """A ``DetectionDataset`` of one class (``face``) plus the per-face attributes of its file.

    Attributes:
        attribute_names: the columns of ``attributes`` (``WIDER_ATTRIBUTES`` or
            ``RETINAFACE_ATTRIBUTES``).
        attributes: ``image_id -> (N, A)`` float64, row ``i`` for the record's face ``i``.
    """

    attribute_names: tuple[str, ...] = ()
    attributes: dict[int, np.ndarray] = field(default_factory=dict)

    def face_attributes(self, record: DetectionRecord) -> dict[str, np.ndarray]:
        """``{name: (N,) values}`` of one record's faces (empty when the file has none)."""
        table = self.attributes.get(record.image_id)
        if table is None:
            return {}
        return {name: table[:, j] for j, name in enumerate(self.attribute_names)}


def wider_event(file_name: str) -> str:
    """The WIDER FACE event of an image: its folder, ``0--Parade`` for
    ``0--Parade/0_Parade_marchingband_1_849.jpg`` (``""`` for a bare file name)."""
    parts = file_name.replace("\\", "/").split("/")
    return parts[-2] if len(parts) > 1 else ""


def image_key(file_name: str) -> str:
    """The name an image goes by in the WIDER FACE protocol: ``event/stem`` (posix, no image
    suffix), e.g. ``0--Parade/0_Parade_marchingband_1_849``."""
    name = file_name.replace("\\", "/")
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    parts = name.split("/")
    return "/".join(parts[-2:])


def is_wider_face_file(path: str | Path) -> bool:
    """Whether ``path`` is named as a WIDER FACE box file (``wider_face_*_bbx_gt.txt``)."""
    return re.fullmatch(r"wider_face_\w*bbx_gt\.txt", Path(path).name) is not None


def is_retinaface_file(path: str | Path) -> bool:
    """Whether ``path`` is a ``.txt`` whose first non-blank line starts with ``#`` (the
    RetinaFace label layout)."""
    path = Path(path)
    if path.suffix != ".txt" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("#")
    return False


def split_of(path: str | Path) -> str:
    """The split a label file holds: ``train`` / ``val`` / ``test`` from a WIDER file name, or
    the folder of a RetinaFace ``label.txt`` (``train/label.txt``); else the file's stem."""
    path = Path(path)
    match = re.fullmatch(r"wider_face_(\w+?)_bbx_gt\.txt", path.name)
    if match:
        return match.group(1)
    if path.name == "label.txt" and path.parent.name:
        return path.parent.name
    return path.stem


def default_image_root(path: str | Path) -> Path:
    """Where the images of a label file are looked for: the first existing folder of
    ``WIDER_{split}/images`` next to the file's folder (the official layout, with the box files
    in ``wider_face_split/``), ``images/`` next to the file (RetinaFace's), the file's folder."""
    path = Path(path)
    split = split_of(path)
    for candidate in (path.parent.parent / f"WIDER_{split}" / "images",
                      path.parent / f"WIDER_{split}" / "images", path.parent / "images"):
        if candidate.is_dir():
            return candidate
    return path.parent


def read_wider_face(path: str | Path, image_root: str | Path | None = None, *,
                    problems: list[LabelProblem] | None = None, strict: bool = True,
                    read_sizes: bool = True) -> FaceDataset:
    """Read a WIDER FACE ``wider_face_*_bbx_gt.txt`` (see the module docstring).

    Args:
        path: the box file.
        image_root: folder the image paths are relative to (default ``default_image_root``).
        problems: ``None`` raises ``ValueError("file:line: ...")`` at the first problem; a list
            collects ``LabelProblem``s and skips the bad faces (a count mismatch skips the rest
            of that image's block).
        strict: also check box sizes and bounds (see the module docstring).
        read_sizes: read each image's size from its header when the image exists.

    Returns:
        a ``FaceDataset``: one class ``face``, five unlabelled landmarks per face, attributes
        ``WIDER_ATTRIBUTES``; image ids ``1..n`` in file order.
    """
    path = Path(path)
    lines = _read_lines(path)
    root = Path(image_root) if image_root is not None else default_image_root(path)
    where = _Where(path.name)
    records, attributes = [], {}
    last: tuple[str, int, int] | None = None  # image, count, its line index
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        name_line = i
        name = lines[i].strip()
        if _numbers(name) is not None:
            if last is None:
                message = f"expected an image path, got {_short(name)!r}"
            else:
                message = (f"image {last[0]}: count at line {last[2] + 1} says {last[1]} faces "
                           "but more face lines follow")
            report_problem(problems, "malformed", where(i), message)
            while i < len(lines) and (not lines[i].strip() or _numbers(lines[i]) is not None):
                i += 1  # the rest of the surplus lines: one problem is enough
            continue
        i += 1
        if i >= len(lines):
            report_problem(problems, "malformed", where(name_line),
                           f"image {name}: the file ends before its face count")
            break
        count = _count(lines[i])
        if count is None:
            report_problem(problems, "malformed", where(i),
                           f"image {name}: expected the number of faces, got {_short(lines[i])!r}")
            i += 1
            continue
        count_line = i
        last = (name, count, count_line)
        i += 1
        faces = []
        if count == 0 and i < len(lines) and _is_placeholder(lines[i]):
            i += 1
        for k in range(count):
            if i >= len(lines) or _looks_like_name(lines[i]):
                after = "the file ends" if i >= len(lines) else f"line {i + 1} names an image"
                report_problem(problems, "malformed", where(count_line),
                               f"image {name}: count says {count} faces but {k} face lines "
                               f"follow ({after})")
                break
            face = _parse_wider_face(lines[i], where(i), problems)
            if face is not None:
                faces.append((*face, i + 1))
            i += 1
        record = _make_record(len(records) + 1, name, root, faces, read_sizes)
        records.append(record)
        attributes[record.image_id] = np.array([f[1] for f in faces], dtype=np.float64).reshape(
            -1, len(WIDER_ATTRIBUTES))
        _check_record(record, attributes, where, problems, strict)
    return _dataset(records, attributes, WIDER_ATTRIBUTES, root, path.name)


def read_retinaface(path: str | Path, image_root: str | Path | None = None, *,
                    problems: list[LabelProblem] | None = None, strict: bool = True,
                    read_sizes: bool = True) -> FaceDataset:
    """Read a RetinaFace ``label.txt`` with five landmarks per face (see the module docstring).

    Arguments as ``read_wider_face``. Returns a ``FaceDataset`` with keypoints ``(N, 5, 3)`` in
    ``FACE_LANDMARK_NAMES`` order (COCO flags) and the attribute ``quality`` (``-1`` where the
    line has none).
    """
    path = Path(path)
    lines = _read_lines(path)
    root = Path(image_root) if image_root is not None else default_image_root(path)
    where = _Where(path.name)
    records, attributes = [], {}
    block: tuple[str, tuple[int, int] | None] | None = None
    faces: list[tuple] = []

    def close() -> None:
        if block is None:
            return
        record = _make_record(len(records) + 1, block[0], root, faces, read_sizes, block[1])
        records.append(record)
        attributes[record.image_id] = np.array([f[1] for f in faces], dtype=np.float64).reshape(
            -1, len(RETINAFACE_ATTRIBUTES))
        _check_record(record, attributes, where, problems, strict)

    for i, line in enumerate(lines):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            close()
            block, faces = _parse_header(text, where(i), problems), []
            continue
        if block is None:
            report_problem(problems, "malformed", where(i),
                           "a face line before the first '# image path' line")
            continue
        face = _parse_retinaface_face(text, where(i), problems)
        if face is not None:
            faces.append((*face, i + 1))
    close()
    return _dataset(records, attributes, RETINAFACE_ATTRIBUTES, root, path.name)


def read_face_labels(path: str | Path, image_root: str | Path | None = None, *,
                     problems: list[LabelProblem] | None = None, strict: bool = True,
                     read_sizes: bool = True) -> FaceDataset:
    """``read_retinaface`` for a file whose first line starts with ``#``, else
    ``read_wider_face``."""
    reader = read_retinaface if is_retinaface_file(path) else read_wider_face
    return reader(path, image_root, problems=problems, strict=strict, read_sizes=read_sizes)


# ---- parsing -------------------------------------------------------------------------------


class _Where:
    """``file:line`` of a 0-based line index."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, index: int) -> str:
        return f"{self.name}:{index + 1}"


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"face label file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from e


def _short(text: str, n: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 3] + "..."


def _numbers(text: str) -> list[float] | None:
    """The whitespace-separated numbers of a line, or ``None`` when one is not a number."""
    try:
        return [float(v) for v in text.split()]
    except ValueError:
        return None


def _count(text: str) -> int | None:
    parts = text.split()
    if len(parts) != 1 or not parts[0].isdigit():
        return None
    return int(parts[0])


def _is_placeholder(text: str) -> bool:
    values = _numbers(text)
    return values is not None and len(values) == 10 and not any(values)


def _looks_like_name(text: str) -> bool:
    """An image path where a face line was expected (a count that is too large)."""
    text = text.strip()
    return _numbers(text) is None and ("/" in text or text.lower().endswith(IMAGE_SUFFIXES))


def _finite_numbers(text: str, where: str, problems: list[LabelProblem] | None,
                    what: str) -> list[float] | None:
    parts = text.split()
    values = []
    for j, part in enumerate(parts):
        try:
            values.append(float(part))
        except ValueError:
            return report_problem(problems, "malformed", where,
                                  f"value {j + 1} of the {what}, {part!r}, is not a number")
    if not all(math.isfinite(v) for v in values):
        return report_problem(problems, "non_finite", where, f"{what} has a NaN or inf value")
    return values


def _parse_wider_face(text: str, where: str, problems: list[LabelProblem] | None):
    """``(xyxy, attributes, keypoints)`` of a WIDER face line, or ``None`` (reported)."""
    values = _finite_numbers(text, where, problems, "face line")
    if values is None:
        return None
    if len(values) != 4 + len(WIDER_ATTRIBUTES):
        return report_problem(problems, "malformed", where,
                              f"expected 10 numbers (x y w h blur expression illumination invalid"
                              f" occlusion pose), got {len(values)}")
    x, y, w, h = values[:4]
    return (x, y, x + w, y + h), values[4:], np.zeros((5, 3), dtype=np.float32)


def _parse_retinaface_face(text: str, where: str, problems: list[LabelProblem] | None):
    """``(xyxy, [quality], keypoints)`` of a RetinaFace face line, or ``None`` (reported)."""
    values = _finite_numbers(text, where, problems, "face line")
    if values is None:
        return None
    if len(values) not in (4, 19, 20):
        return report_problem(problems, "malformed", where,
                              f"expected x y w h, optionally followed by 5 landmark triples "
                              f"x y v and a quality value (4, 19 or 20 numbers), got "
                              f"{len(values)}")
    x, y, w, h = values[:4]
    quality = values[19] if len(values) == 20 else -1.0
    points = np.zeros((5, 3), dtype=np.float32)
    if len(values) >= 19:
        triples = np.array(values[4:19], dtype=np.float64).reshape(5, 3)
        for k, (px, py, v) in enumerate(triples):
            if v not in _VISIBILITY:
                return report_problem(problems, "keypoint_visibility", where,
                                      f"landmark {k + 1} ({FACE_LANDMARK_NAMES[k]}) has flag "
                                      f"{v:g}; expected 0 (visible), 1 (occluded) or -1 (absent)")
            if v == -1.0:
                continue
            points[k] = (px, py, _VISIBILITY[v])
    return (x, y, x + w, y + h), [quality], points


def _parse_header(text: str, where: str, problems: list[LabelProblem] | None):
    """``(image path, (width, height) or None)`` of a ``# path [width height]`` line."""
    parts = text[1:].split()
    if not parts:
        report_problem(problems, "malformed", where, "'#' line without an image path")
        return ("", None)
    size = None
    if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():
        size = (int(parts[-2]), int(parts[-1]))
        parts = parts[:-2]
    return (" ".join(parts), size)


# ---- records and checks --------------------------------------------------------------------


def _make_record(image_id: int, name: str, root: Path, faces: list[tuple], read_sizes: bool,
                 size: tuple[int, int] | None = None) -> DetectionRecord:
    width, height = size if size is not None else (0, 0)
    if size is None and read_sizes and (root / name).is_file():
        from scaledet.data.images import ImageReadError, image_size

        try:
            width, height = image_size(root / name)
        except ImageReadError:
            pass  # left unknown; `data check` reports the unreadable image
    n = len(faces)
    return DetectionRecord(
        image_id, name, width, height,
        boxes=np.array([f[0] for f in faces], dtype=np.float64).reshape(n, 4),
        labels=np.zeros(n, dtype=np.int64),
        ann_ids=np.array([f[3] for f in faces], dtype=np.int64),
        keypoints=np.array([f[2] for f in faces], dtype=np.float32).reshape(n, 5, 3))


def _check_record(record: DetectionRecord, attributes: dict[int, np.ndarray], where: _Where,
                  problems: list[LabelProblem] | None, strict: bool) -> None:
    """Box and landmark checks (``strict`` only); bad faces are reported and dropped."""
    if not strict or len(record) == 0:
        return
    keep = np.ones(len(record), dtype=bool)
    W, H = record.width, record.height
    for i, (x1, y1, x2, y2) in enumerate(record.boxes):
        at = where(int(record.ann_ids[i]) - 1)
        w, h = x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            report_problem(problems, "empty_box", at, f"face box has width {w:g}, height {h:g}")
            keep[i] = False
            continue
        if W <= 0 or H <= 0:
            continue
        if x1 >= W or y1 >= H or x2 <= 0 or y2 <= 0:
            report_problem(problems, "box_outside", at,
                           f"face box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] (xyxy) misses the {W}x{H} "
                           "image")
            keep[i] = False
            continue
        points = record.keypoints[i]
        out = ((points[:, 2] > 0)
               & ((points[:, 0] < -OUT_OF_BOUNDS_TOLERANCE)
                  | (points[:, 1] < -OUT_OF_BOUNDS_TOLERANCE)
                  | (points[:, 0] > W + OUT_OF_BOUNDS_TOLERANCE)
                  | (points[:, 1] > H + OUT_OF_BOUNDS_TOLERANCE)))
        if out.any():
            k = int(np.flatnonzero(out)[0])
            report_problem(problems, "keypoint_outside_image", at,
                           f"landmark {k + 1} ({FACE_LANDMARK_NAMES[k]}) at ({points[k, 0]:g}, "
                           f"{points[k, 1]:g}) is outside the {W}x{H} image")
            keep[i] = False
    if not keep.all():
        _keep_faces(record, attributes, keep)


def _keep_faces(record: DetectionRecord, attributes: dict[int, np.ndarray],
                keep: np.ndarray) -> None:
    record.boxes = record.boxes[keep]
    record.labels = record.labels[keep]
    record.iscrowd = record.iscrowd[keep]
    record.areas = record.areas[keep]
    record.ann_ids = record.ann_ids[keep]
    record.keypoints = record.keypoints[keep]
    attributes[record.image_id] = attributes[record.image_id][keep]


def _dataset(records: list[DetectionRecord], attributes: dict[int, np.ndarray],
             names: tuple[str, ...], root: Path, source: str) -> FaceDataset:
    return FaceDataset(records, ["face"], [1], root, source=source,
                       keypoint_names=list(FACE_LANDMARK_NAMES), skeleton=list(FACE_SKELETON),
                       flip_idx=list(FACE_FLIP_IDX), num_keypoints=len(FACE_LANDMARK_NAMES),
                       attribute_names=names, attributes=attributes)
