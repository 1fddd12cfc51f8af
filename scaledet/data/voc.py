"""Pascal VOC: ``Annotations/*.xml`` + ``JPEGImages/`` + ``ImageSets/Main/{split}.txt``.

VOC boxes are 1-based inclusive pixel indices (``xmin=1, xmax=10`` covers the first 10 columns);
records hold continuous ``xyxy``, so ``x1 = xmin - 1`` and ``x2 = xmax`` (as Detectron2 does).
Objects marked ``difficult`` become ``iscrowd=True``: COCO evaluation then ignores them, as VOC
evaluation does. Class names are the 20 VOC classes in their usual order when every object's name
is one of them, otherwise the sorted set of names found. ``ann_ids`` hold each object's 1-based
position in its XML file.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from scaledet.data.records import DetectionDataset, DetectionRecord, LabelProblem, report_problem

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


def read_voc(root: str | Path, split: str = "train", *, class_names: list[str] | None = None,
             problems: list[LabelProblem] | None = None) -> DetectionDataset:
    """Read the images listed in ``ImageSets/Main/{split}.txt`` with their XML annotations.

    ``class_names`` fixes the class table (objects of other names are unknown classes); by default
    it is inferred as described in the module docstring. ``problems`` as in ``read_coco``.
    """
    root = Path(root)
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"{root}: no ImageSets/Main/{split}.txt")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    parsed = [_parse_xml(root, image_id, problems) for image_id in ids]
    parsed = [p for p in parsed if p is not None]
    if class_names is None:
        found = {obj[0] for p in parsed for obj in p["objects"]}
        class_names = list(VOC_CLASSES) if found <= set(VOC_CLASSES) else sorted(found)
    label_of = {n: i for i, n in enumerate(class_names)}
    records = [_to_record(i + 1, p, label_of, problems) for i, p in enumerate(parsed)]
    return DetectionDataset(records, list(class_names), image_root=root / "JPEGImages",
                            source=f"{root} [{split}]")


def _parse_xml(root: Path, image_id: str, problems: list[LabelProblem] | None) -> dict | None:
    path = root / "Annotations" / f"{image_id}.xml"
    where = f"Annotations/{image_id}.xml"
    try:
        tree = ET.parse(path).getroot()
    except FileNotFoundError:
        return report_problem(problems, "malformed", where, "annotation file is missing")
    except ET.ParseError as e:
        return report_problem(problems, "malformed", where, f"not valid XML ({e})")
    size = tree.find("size")
    try:
        width, height = (int(float(size.findtext(k))) for k in ("width", "height"))
    except (AttributeError, TypeError, ValueError):
        return report_problem(problems, "malformed", where, "needs <size><width>/<height>")
    objects = []
    for n, obj in enumerate(tree.findall("object"), 1):
        parsed = _parse_object(obj, f"{where}: object {n}", problems)
        if parsed is not None:
            objects.append((*parsed, n))
    file_name = tree.findtext("filename") or f"{image_id}.jpg"
    return {"file_name": file_name, "width": width, "height": height, "objects": objects,
            "where": where}


def _parse_object(obj: ET.Element, where: str, problems: list[LabelProblem] | None):
    name = (obj.findtext("name") or "").strip()
    box = obj.find("bndbox")
    try:
        xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (AttributeError, TypeError, ValueError):
        return report_problem(problems, "malformed", where,
                              "bndbox needs numeric xmin, ymin, xmax, ymax")
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
        return report_problem(problems, "non_finite", where, "bndbox is not finite")
    difficult = (obj.findtext("difficult") or "0").strip() == "1"
    return name, (xmin - 1, ymin - 1, xmax, ymax), difficult


def _to_record(image_id: int, parsed: dict, label_of: dict[str, int],
               problems: list[LabelProblem] | None) -> DetectionRecord:
    boxes, labels, crowd, ann_ids = [], [], [], []
    for name, box, difficult, n in parsed["objects"]:
        if name not in label_of:
            report_problem(problems, "unknown_class", f"{parsed['where']}: object {n}",
                           f"class {name!r} is not in the class list")
            continue
        boxes.append(box)
        labels.append(label_of[name])
        crowd.append(difficult)
        ann_ids.append(n)
    return DetectionRecord(image_id, parsed["file_name"], parsed["width"], parsed["height"],
                           boxes, labels, iscrowd=crowd, ann_ids=ann_ids)
