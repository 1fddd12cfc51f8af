"""``load_dataset``: one entry point that recognises COCO, YOLO, VOC and scaledet yaml datasets.

What ``path`` may be:

- a COCO folder: ``annotations/instances_{split}.json`` + ``images/{split}/`` (also the COCO 2017
  layout ``annotations/instances_val2017.json`` + ``val2017/``);
- a COCO json file (images in ``images/{split}/`` or ``images/`` next to its folder, or next to it);
- a YOLO ``data.yaml`` (or a folder holding one);
- a Pascal VOC folder: ``Annotations/`` + ``JPEGImages/`` + ``ImageSets/Main/{split}.txt``;
- a scaledet dataset yaml naming COCO files per split::

      format: coco
      train: {json: annotations/train.json, images: images/train}
      val: {json: annotations/val.json, images: images/val}

  (relative paths are relative to the yaml's folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaledet.data.records import DetectionDataset, LabelProblem

SPLITS = ("train", "val", "test")


def load_dataset(path: str | Path, split: str = "train", *,
                 problems: list[LabelProblem] | None = None) -> DetectionDataset:
    """Read one split of a dataset in any supported layout (see the module docstring).

    Args:
        path: dataset folder, COCO json, YOLO ``data.yaml`` or scaledet yaml.
        split: ``"train"``, ``"val"``, ``"test"`` (or any split name the dataset defines).
        problems: ``None`` raises ``ValueError`` at the first malformed label; a list collects
            ``LabelProblem``s and skips those labels (``data check`` uses this).
    """
    kind, spec = resolve(path, split)
    if kind == "coco":
        from scaledet.data.coco import read_coco

        return read_coco(spec["json"], spec["images"], problems=problems)
    if kind == "yolo":
        from scaledet.data.yolo import read_yolo

        return read_yolo(spec["yaml"], split, problems=problems)
    from scaledet.data.voc import read_voc

    return read_voc(spec["root"], split, problems=problems)


def dataset_format(path: str | Path) -> str:
    """``"coco"``, ``"yolo"`` or ``"voc"``: the layout ``load_dataset`` sees at ``path``."""
    return _detect(Path(path))[0]


def available_splits(path: str | Path) -> list[str]:
    """The splits present in a dataset, in ``train, val, test, others`` order."""
    kind, where = _detect(Path(path))
    if kind == "coco" and where.suffix == ".json":
        return [_split_from_json_name(where)]
    if kind == "coco" and where.is_file():  # scaledet yaml
        names = [k for k, v in _read_yaml(where).items() if isinstance(v, dict)]
    elif kind == "coco":
        names = [_split_from_json_name(p) for p in (where / "annotations").glob("instances_*.json")]
    elif kind == "yolo":
        data = _read_yaml(where)
        names = [k for k in data if k in SPLITS or k.startswith(SPLITS)]
        names = [k for k in names if data[k]]
    else:
        names = [p.stem for p in (where / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem]
    return sorted(set(names), key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))


def resolve(path: str | Path, split: str) -> tuple[str, dict[str, Path]]:
    """``(format, files)`` for one split: ``{"json", "images"}`` for COCO, ``{"yaml"}`` for YOLO,
    ``{"root"}`` for VOC. Raises ``FileNotFoundError`` naming what was looked for."""
    kind, where = _detect(Path(path))
    if kind == "yolo":
        return "yolo", {"yaml": where}
    if kind == "voc":
        return "voc", {"root": where}
    if where.suffix == ".json":
        return "coco", {"json": where, "images": _guess_image_root(where, split)}
    if where.is_file():
        return "coco", _scaledet_yaml_split(where, split)
    json_path = _coco_json_in_folder(where, split)
    return "coco", {"json": json_path, "images": _guess_image_root(json_path, split)}


def _detect(path: Path) -> tuple[str, Path]:
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    if path.is_file():
        if path.suffix == ".json":
            return "coco", path
        if path.suffix in (".yaml", ".yml"):
            return ("coco" if "format" in _read_yaml(path) else "yolo"), path
        raise ValueError(f"{path}: expected a folder, a COCO .json or a .yaml dataset file")
    if (path / "annotations").is_dir() and any((path / "annotations").glob("*.json")):
        return "coco", path
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        if (path / name).is_file():
            return _detect(path / name)
    if (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir():
        return "voc", path
    raise FileNotFoundError(
        f"{path}: not a dataset folder: expected annotations/*.json (COCO), data.yaml (YOLO) "
        "or Annotations/ + JPEGImages/ (VOC)")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid yaml ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def _split_from_json_name(json_path: Path) -> str:
    stem = json_path.stem
    return stem[len("instances_"):] if stem.startswith("instances_") else stem


def _coco_json_in_folder(folder: Path, split: str) -> Path:
    ann = folder / "annotations"
    exact = ann / f"instances_{split}.json"
    if exact.is_file():
        return exact
    candidates = sorted(ann.glob(f"instances_{split}*.json")) or sorted(ann.glob(f"*{split}*.json"))
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in sorted(ann.glob("*.json")))
    raise FileNotFoundError(f"{folder}: no annotations/instances_{split}.json (found: {found})")


def _guess_image_root(json_path: Path, split: str) -> Path:
    """The image folder for a COCO json: the first of these that exists."""
    base = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    name = _split_from_json_name(json_path)
    for candidate in (base / "images" / name, base / "images" / split, base / name, base / split,
                      base / "images"):
        if candidate.is_dir():
            return candidate
    return base


def _scaledet_yaml_split(path: Path, split: str) -> dict[str, Path]:
    data = _read_yaml(path)
    if data.get("format") != "coco":
        raise ValueError(f"{path}: format must be 'coco' (got {data.get('format')!r})")
    entry = data.get(split)
    if not isinstance(entry, dict) or "json" not in entry:
        raise ValueError(f"{path}: no '{split}: {{json: ..., images: ...}}' entry")
    json_path = path.parent / entry["json"]
    images = path.parent / entry["images"] if "images" in entry else json_path.parent
    return {"json": json_path, "images": images}
