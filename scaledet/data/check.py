"""``scaledet data check``: validate every split of a dataset and report what is wrong.

Errors (exit code 1): image missing, unreadable (corrupt, truncated) or of another size than
declared; malformed label entries; boxes with NaN/inf, zero or negative size, or entirely outside
the image; unknown class ids. Warnings: boxes partly outside the image (by more than
``OUT_OF_BOUNDS_TOLERANCE`` px), duplicate boxes (same class, IoU >= ``DUPLICATE_IOU``), images
without labels. An image that is missing or unreadable is reported with the number of boxes its
labels hold (a YOLO reader cannot place them without the image's size, so they are counted from
the label file here and its lines are checked too). The report also holds the class histogram
and the box-size histogram (box area ``< 32**2`` small, ``< 96**2`` medium, else large: the COCO
definitions).

Keypoint datasets (COCO keypoints, YOLO pose) add errors: a point count that differs from K
(COCO: ``keypoints`` not ``3 x K`` numbers; YOLO: a line that does not match ``kpt_shape``),
visibility flags outside ``{0, 1, 2}``, a COCO ``num_keypoints`` that disagrees with the flags,
labelled points (``v > 0``) outside the image; and a warning for labelled points outside their
box (both by more than ``OUT_OF_BOUNDS_TOLERANCE`` px). Each names the file and the annotation
id or line, and the joint.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from scaledet.data.images import ImageReadError, read_image
from scaledet.data.io import available_splits, dataset_format, load_dataset
from scaledet.data.records import DetectionDataset, DetectionRecord, LabelProblem

OUT_OF_BOUNDS_TOLERANCE = 1.0  # px; smaller overhangs are rounding, not mistakes
DUPLICATE_IOU = 0.95
MAX_EXAMPLES = 5

# kind -> (severity, description), in report order
ISSUES = {
    "image_missing": ("error", "image file missing"),
    "image_unreadable": ("error", "image unreadable, corrupt or truncated"),
    "size_mismatch": ("error", "image size differs from the declared size"),
    "malformed": ("error", "malformed label entry"),
    "non_finite": ("error", "box coordinate NaN or inf"),
    "unknown_class": ("error", "unknown class id"),
    "keypoint_count": ("error", "keypoint count differs from K"),
    "keypoint_visibility": ("error", "keypoint visibility flag not 0, 1 or 2"),
    "num_keypoints_mismatch": ("error", "num_keypoints disagrees with the flags"),
    "keypoint_outside_image": ("error", "labelled keypoint outside the image"),
    "keypoint_outside_box": ("warning", "labelled keypoint outside its box"),
    "empty_box": ("error", "box with zero or negative size"),
    "box_outside": ("error", "box entirely outside the image"),
    "box_out_of_bounds": ("warning", "box partly outside the image"),
    "duplicate_box": ("warning", "duplicate box"),
    "no_labels": ("warning", "image without labels"),
}


class _Issues:
    """Counts and first examples per issue kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, where: str, message: str) -> None:
        self.counts[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(f"{where}: {message}")

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {kind: {"severity": ISSUES[kind][0], "description": ISSUES[kind][1],
                       "count": self.counts[kind], "examples": self.examples[kind]}
                for kind in ISSUES if self.counts[kind]}


def check_dataset(path: str | Path, *, workers: int | None = None) -> dict[str, Any]:
    """Check every split of the dataset at ``path``; returns the report dict (json-ready).

    Keys: ``dataset``, ``format``, ``splits`` (per split: ``images``, ``boxes``, ``classes``
    histogram, ``sizes`` histogram, ``issues``), ``num_errors``, ``num_warnings``.
    """
    splits = available_splits(path)
    report: dict[str, Any] = {"dataset": str(path), "format": dataset_format(path), "splits": {}}
    for split in splits:
        report["splits"][split] = check_split(path, split, workers=workers)
    report["num_errors"], report["num_warnings"] = (
        sum(issue["count"] for s in report["splits"].values() for issue in s["issues"].values()
            if issue["severity"] == severity) for severity in ("error", "warning"))
    return report


def check_split(path: str | Path, split: str, *, workers: int | None = None) -> dict[str, Any]:
    """The report of one split (see ``check_dataset``)."""
    problems: list[LabelProblem] = []
    ds = load_dataset(path, split, problems=problems)
    issues = _Issues()
    for p in problems:
        issues.add(p.kind, p.where, p.message)
    base = Path(path) if Path(path).is_dir() else Path(path).parent
    fmt = dataset_format(path)
    kpt_shape = _yolo_kpt_shape(path, split) if fmt == "yolo" else None
    import torchvision.io  # noqa: F401  (imported here once, not by the first worker threads)

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        image_results = pool.map(lambda r: _check_image(ds, r), ds.records)
        for record, result in zip(ds.records, image_results):
            image_where = _rel(ds.image_path(record), base)
            num_boxes = len(record)
            if result is not None:
                kind, message = result
                if kind in ("image_missing", "image_unreadable"):
                    num_boxes = _label_box_count(ds, record, fmt, base, issues, kpt_shape)
                    message += f"; {_boxes_text(num_boxes)} in its labels"
                issues.add(kind, image_where, message)
            if num_boxes == 0:
                issues.add("no_labels", image_where, "no boxes")
            def where(i: int, r: DetectionRecord = record) -> str:
                return _label_where(ds, r, i, fmt, base)

            _check_boxes(record, issues, where,
                         lambda i, r=record: _entry(fmt, int(r.ann_ids[i])))
            if record.keypoints is not None:
                _check_keypoints(record, issues, where, ds.keypoint_names)
    boxes = np.concatenate([r.boxes for r in ds.records] or [np.zeros((0, 4))])
    labels = np.concatenate([r.labels for r in ds.records] or [np.zeros(0, np.int64)])
    report = {"images": len(ds), "boxes": len(boxes), "class_names": ds.class_names,
              "classes": {n: int((labels == i).sum()) for i, n in enumerate(ds.class_names)},
              "sizes": size_histogram(boxes), "issues": issues.as_dict()}
    if ds.num_keypoints:
        flags = np.concatenate([r.keypoints[..., 2].ravel() for r in ds.records]
                               or [np.zeros(0, np.float32)])
        report["keypoints"] = {"K": ds.num_keypoints, "labelled": int((flags > 0).sum()),
                               "visible": int((flags == 2).sum())}
    return report


def _yolo_kpt_shape(path: str | Path, split: str) -> tuple[int, int] | None:
    from scaledet.data.io import resolve
    from scaledet.data.records import read_yaml_mapping
    from scaledet.data.yolo import kpt_shape_from_yaml

    yaml_path = resolve(path, split)[1]["yaml"]
    return kpt_shape_from_yaml(read_yaml_mapping(yaml_path), yaml_path)


def _check_keypoints(record: DetectionRecord, issues: _Issues, where,
                     names: list[str] | None) -> None:
    """Labelled points (``v > 0``) outside the image (error) or outside their box (warning),
    beyond ``OUT_OF_BOUNDS_TOLERANCE`` px; ``where(i)`` locates object ``i`` in its file."""
    tol = OUT_OF_BOUNDS_TOLERANCE
    W, H = record.width, record.height
    for i in range(len(record)):
        pts = record.keypoints[i].astype(np.float64)
        x, y, v = pts[:, 0], pts[:, 1], pts[:, 2]
        labelled = v > 0
        if W > 0 and H > 0:
            off_image = labelled & ((x < -tol) | (y < -tol) | (x > W + tol) | (y > H + tol))
        else:
            off_image = np.zeros_like(labelled)
        x1, y1, x2, y2 = record.boxes[i]
        off_box = labelled & ~off_image & ((x < x1 - tol) | (y < y1 - tol) | (x > x2 + tol)
                                           | (y > y2 + tol))
        for kind, mask, what in (("keypoint_outside_image", off_image, f"the {W}x{H} image"),
                                 ("keypoint_outside_box", off_box,
                                  f"its box {_fmt_box(record.boxes[i])}")):
            bad = np.flatnonzero(mask)
            if len(bad):
                k = int(bad[0])
                more = f" ({len(bad)} such points)" if len(bad) > 1 else ""
                issues.add(kind, where(i), f"keypoint {_joint(k, names)} at ({x[k]:.1f}, "
                                           f"{y[k]:.1f}) lies outside {what}{more}")


def _joint(k: int, names: list[str] | None) -> str:
    return f"{k} ({names[k]})" if names is not None else str(k)


def _check_image(ds: DetectionDataset, record: DetectionRecord) -> tuple[str, str] | None:
    path = ds.image_path(record)
    if not path.is_file():
        return "image_missing", "no such file"
    try:
        image = read_image(path)
    except ImageReadError as e:
        return "image_unreadable", str(e).removeprefix(f"{path}: ")
    height, width = image.shape[:2]
    if (width, height) != (record.width, record.height):
        return "size_mismatch", (f"declared {record.width}x{record.height}, "
                                 f"actual {width}x{height} (width x height)")
    return None


def _label_box_count(ds: DetectionDataset, record: DetectionRecord, fmt: str, base: Path,
                     issues: _Issues, kpt_shape: tuple[int, int] | None = None) -> int:
    """Boxes in the labels of an image that could not be read. COCO and VOC records hold them
    (their files declare the image size); the YOLO reader leaves them out, as normalised
    coordinates need the size, so its label file is parsed here (its problems reported)."""
    if len(record) or fmt != "yolo":
        return len(record)
    from scaledet.data.yolo import label_path, parse_label_lines

    labels_file = label_path(ds.image_path(record))
    if not labels_file.is_file():
        return 0
    problems: list[LabelProblem] = []
    rows = parse_label_lines(labels_file.read_text(encoding="utf-8"), _rel(labels_file, base),
                             len(ds.class_names), problems, kpt_shape)
    for p in problems:
        issues.add(p.kind, p.where, p.message)
    return len(rows)


def _boxes_text(n: int) -> str:
    return "no boxes" if n == 0 else "1 box" if n == 1 else f"{n} boxes"


def _check_boxes(record: DetectionRecord, issues: _Issues, where, entry) -> None:
    """Box problems; ``where(i)`` locates box ``i`` in its file, ``entry(i)`` names it briefly."""
    if len(record) == 0:
        return
    x1, y1, x2, y2 = record.boxes.T
    w, h = x2 - x1, y2 - y1
    for i in np.flatnonzero((w <= 0) | (h <= 0)):
        issues.add("empty_box", where(i), f"width {w[i]:.6g}, height {h[i]:.6g}")
    if record.width > 0 and record.height > 0:
        _check_bounds(record, issues, where)
    for i, j, iou in _duplicates(record):
        issues.add("duplicate_box", where(j), f"IoU {iou:.3f} with {entry(i)}, same class")


def _check_bounds(record: DetectionRecord, issues: _Issues, where) -> None:
    W, H = record.width, record.height
    x1, y1, x2, y2 = record.boxes.T
    size = f"the {W}x{H} image"
    outside = (x1 >= W) | (y1 >= H) | (x2 <= 0) | (y2 <= 0)
    overhang = np.max(np.stack([-x1, -y1, x2 - W, y2 - H]), axis=0)
    for i in range(len(record)):
        if outside[i]:
            issues.add("box_outside", where(i), f"box {_fmt_box(record.boxes[i])} misses {size}")
        elif overhang[i] > OUT_OF_BOUNDS_TOLERANCE:
            issues.add("box_out_of_bounds", where(i),
                       f"box {_fmt_box(record.boxes[i])} extends {overhang[i]:.1f} px outside "
                       f"{size}")


def _duplicates(record: DetectionRecord) -> list[tuple[int, int, float]]:
    """``(i, j, iou)`` for ``i < j`` with the same label and IoU >= ``DUPLICATE_IOU``."""
    b = record.boxes
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area[:, None] + area[None, :] - inter)
    same = record.labels[:, None] == record.labels[None, :]
    i, j = np.nonzero(np.triu((iou >= DUPLICATE_IOU) & same, k=1))
    return [(int(a), int(c), float(iou[a, c])) for a, c in zip(i, j)]


def size_histogram(boxes: np.ndarray) -> dict[str, int]:
    """COCO size classes by box area: small ``< 32**2``, medium ``< 96**2``, large otherwise."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return {"small": int((area < 32**2).sum()),
            "medium": int(((area >= 32**2) & (area < 96**2)).sum()),
            "large": int((area >= 96**2).sum())}


def _label_where(ds: DetectionDataset, record: DetectionRecord, i: int, fmt: str,
                 base: Path) -> str:
    """Where box ``i`` of ``record`` is written: file and line / annotation id / object."""
    ann = int(record.ann_ids[i])
    if fmt == "yolo":
        from scaledet.data.yolo import label_path

        return f"{_rel(label_path(ds.image_path(record)), base)}:{ann}"
    if fmt == "voc":
        return f"Annotations/{Path(record.file_name).stem}.xml: object {ann}"
    if fmt in ("wider", "retinaface"):  # ann_ids are the faces' line numbers
        return f"{ds.source}:{ann} ({record.file_name})"
    return f"{ds.source}: annotation id {ann} ({record.file_name})"


def _entry(fmt: str, ann: int) -> str:
    return {"yolo": "line", "voc": "object", "wider": "line", "retinaface": "line"}.get(
        fmt, "annotation id") + f" {ann}"


def _rel(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:
        return str(path)


def _fmt_box(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in box) + "]"


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned text tables."""
    lines = [f"dataset {report['dataset']} ({report['format']}, "
             f"splits: {', '.join(report['splits']) or 'none'})"]
    for split, s in report["splits"].items():
        lines += ["", f"== {split}: {s['images']} images, {s['boxes']} boxes, "
                      f"{len(s['classes'])} classes"]
        if "keypoints" in s:
            kp = s["keypoints"]
            lines.append(f"   keypoints: K = {kp['K']}, {kp['labelled']} labelled "
                         f"({kp['visible']} visible)")
        lines += _issue_table(s["issues"])
        lines += _class_table(s["classes"], s["boxes"])
        lines += _size_table(s["sizes"], s["boxes"])
    verdict = "FAILED" if report["num_errors"] else "OK"
    lines += ["", f"{verdict}: {report['num_errors']} errors, {report['num_warnings']} warnings"]
    return "\n".join(lines)


def _issue_table(issues: dict[str, dict[str, Any]]) -> list[str]:
    if not issues:
        return ["  no problems found"]
    width = max(len(v["description"]) for v in issues.values())
    lines = [f"  {'problem':<{width}}  {'severity':<8}  {'count':>6}"]
    for issue in issues.values():
        lines.append(f"  {issue['description']:<{width}}  {issue['severity']:<8}  "
                     f"{issue['count']:>6}")
        lines += [f"      {example}" for example in issue["examples"]]
        if issue["count"] > len(issue["examples"]):
            lines.append(f"      ... and {issue['count'] - len(issue['examples'])} more")
    return lines


def _class_table(classes: dict[str, int], total: int) -> list[str]:
    width = max([len("class")] + [len(n) for n in classes])
    lines = ["", f"  {'class':<{width}}  {'boxes':>7}  {'share':>6}"]
    for name, count in classes.items():
        share = count / total if total else 0.0
        lines.append(f"  {name:<{width}}  {count:>7}  {share:>6.1%}  {'#' * round(40 * share)}")
    return lines


def _size_table(sizes: dict[str, int], total: int) -> list[str]:
    bounds = {"small": "area < 32^2", "medium": "32^2 <= area < 96^2", "large": "96^2 <= area"}
    lines = ["", f"  {'box size':<8}  {'boxes':>7}  {'share':>6}  COCO definition"]
    for name, count in sizes.items():
        share = count / total if total else 0.0
        lines.append(f"  {name:<8}  {count:>7}  {share:>6.1%}  {bounds[name]}")
    return lines
