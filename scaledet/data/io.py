"""``load_dataset``: one entry point that recognises COCO, YOLO, VOC and scaledet yaml datasets.

What ``path`` may be:

- a COCO folder: ``annotations/instances_{split}.json`` + ``images/{split}/`` (also the COCO 2017
  layout ``annotations/instances_val2017.json`` + ``val2017/``);
- a COCO json file (images in ``images/{split}/`` or ``images/`` next to its folder, or next to it);
- a YOLO ``data.yaml`` (or a folder holding one);
- a Pascal VOC folder: ``Annotations/`` + ``JPEGImages/`` + ``ImageSets/Main/{split}.txt``;
- a WIDER FACE box file ``wider_face_{split}_bbx_gt.txt`` (or the WIDER FACE folder holding
  ``wider_face_split/``) or a RetinaFace ``label.txt`` (``# path`` lines, five landmarks per
  face): one face class with five landmarks, see ``scaledet.data.wider_face``;
- a scaledet dataset yaml naming COCO files per split::

      format: coco
      train: {json: annotations/train.json, images: images/train}
      val: {json: annotations/val.json, images: images/val}

  (relative paths are relative to the yaml's folder).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from pathlib import Path

from scaledet.data.records import DetectionDataset, LabelProblem, read_yaml_mapping

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
    if kind in ("wider", "retinaface"):
        from scaledet.data.wider_face import read_face_labels

        return read_face_labels(spec["txt"], problems=problems)
    from scaledet.data.voc import read_voc

    return read_voc(spec["root"], split, problems=problems)


def dataset_format(path: str | Path) -> str:
    """``"coco"``, ``"yolo"``, ``"voc"``, ``"wider"`` or ``"retinaface"``: the layout
    ``load_dataset`` sees at ``path``."""
    return _detect(Path(path))[0]


def available_splits(path: str | Path) -> list[str]:
    """The splits present in a dataset, in ``train, val, test, others`` order."""
    kind, where = _detect(Path(path))
    if kind == "coco" and where.suffix == ".json":
        return [_split_from_json_name(where)]
    if kind in ("wider", "retinaface"):
        from scaledet.data.wider_face import split_of

        files = sorted((where / "wider_face_split").glob("wider_face_*_bbx_gt.txt"))
        return [split_of(where)] if where.is_file() else [split_of(f) for f in files]
    if kind == "coco" and where.is_file():  # scaledet yaml
        names = [k for k, v in read_yaml_mapping(where).items() if isinstance(v, dict)]
    elif kind == "coco":
        names = [_split_from_json_name(p) for p in (where / "annotations").glob("instances_*.json")]
    elif kind == "yolo":
        data = read_yaml_mapping(where)
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
    if kind in ("wider", "retinaface"):
        txt = where if where.is_file() else (
            where / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt")
        if not txt.is_file():
            raise FileNotFoundError(f"{where}: no wider_face_split/{txt.name}")
        return kind, {"txt": txt}
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
            return ("coco" if "format" in read_yaml_mapping(path) else "yolo"), path
        if path.suffix == ".txt":
            from scaledet.data.wider_face import is_retinaface_file, is_wider_face_file

            if is_wider_face_file(path):
                return "wider", path
            if is_retinaface_file(path):
                return "retinaface", path
        raise ValueError(f"{path}: expected a folder, a COCO .json, a .yaml dataset file, a "
                         "WIDER FACE wider_face_*_bbx_gt.txt or a RetinaFace label.txt")
    if (path / "annotations").is_dir() and any((path / "annotations").glob("*.json")):
        return "coco", path
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        if (path / name).is_file():
            return _detect(path / name)
    if (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir():
        return "voc", path
    if any((path / "wider_face_split").glob("wider_face_*_bbx_gt.txt")):
        return "wider", path
    raise FileNotFoundError(
        f"{path}: not a dataset folder: expected annotations/*.json (COCO), data.yaml (YOLO) "
        "or Annotations/ + JPEGImages/ (VOC)")


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
    data = read_yaml_mapping(path)
    if data.get("format") != "coco":
        raise ValueError(f"{path}: format must be 'coco' (got {data.get('format')!r})")
    entry = data.get(split)
    if not isinstance(entry, dict) or "json" not in entry:
        raise ValueError(f"{path}: no '{split}: {{json: ..., images: ...}}' entry")
    json_path = path.parent / entry["json"]
    images = path.parent / entry["images"] if "images" in entry else json_path.parent
    return {"json": json_path, "images": images}


def convert_dataset(src: str | Path, dst: str | Path, to: str, *,
                    copy_images: bool = False) -> dict[str, int]:
    """Write every split of ``src`` (any readable layout) to ``dst`` as a COCO folder or a YOLO
    dataset. Returns ``{split: number of images}``.

    Images are hard-linked into ``dst`` (symlinked across file systems, copied with
    ``copy_images``); ``src`` is never written to. ``dst`` must not exist or be empty, and must not
    lie inside ``src``. Boxes and the category order and ids survive a COCO -> YOLO -> COCO round
    trip to 1e-6 px; YOLO has no crowd regions (left out), areas or annotation ids. Keypoints
    (``kpt_shape [K, 3]`` in YOLO, with ``flip_idx`` and the joint names and skeleton) keep their
    flags exactly and their coordinates to 1e-8 of the image side.
    """
    if to not in ("coco", "yolo"):
        raise ValueError(f"to must be 'coco' or 'yolo', got {to!r}")
    src, dst = Path(src), Path(dst)
    splits = available_splits(src)
    if not splits:
        raise ValueError(f"{src}: no splits found")
    _check_destination(src, dst)
    datasets = {split: load_dataset(src, split) for split in splits}
    counts = {}
    for split, ds in datasets.items():
        names = _output_names(ds)
        for record, name in zip(ds.records, names):
            place_file(ds.image_path(record), dst / "images" / split / name, copy=copy_images)
        out = _renamed(ds, names)
        if to == "coco":
            from scaledet.data.coco import write_coco_json

            write_coco_json(out, dst / "annotations" / f"instances_{split}.json")
        else:
            from scaledet.data.yolo import write_yolo_labels

            write_yolo_labels(out, dst / "labels" / split)
            crowd = sum(int(r.iscrowd.sum()) for r in ds.records)
            if crowd:
                warnings.warn(f"{split}: {crowd} crowd regions left out (YOLO has no crowd flag)",
                              stacklevel=2)
        counts[split] = len(ds)
    if to == "yolo":
        from scaledet.data.yolo import write_yolo_yaml

        first = next(iter(datasets.values()))
        k = first.num_keypoints
        write_yolo_yaml(dst / "data.yaml", first.class_names,
                        {s: f"images/{s}" for s in datasets}, first.category_ids,
                        kpt_shape=(k, 3) if k else None, flip_idx=first.flip_index() if k else None,
                        keypoint_names=first.keypoint_names, skeleton=first.skeleton)
    return counts


def _check_destination(src: Path, dst: Path) -> None:
    src_dir = (src if src.is_dir() else src.parent).resolve()
    if dst.resolve() == src_dir or src_dir in dst.resolve().parents:
        raise ValueError(f"destination {dst} lies inside the source dataset {src_dir}; "
                         "pick a folder outside it (the source is never modified)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"destination {dst} exists and is not an empty folder")


def _output_names(ds: DetectionDataset) -> list[str]:
    """Image paths relative to the deepest folder holding all the split's images (posix)."""
    paths = [ds.image_path(r).absolute() for r in ds.records]
    if not paths:
        return []
    common = Path(os.path.commonpath([p.parent for p in paths]))
    return [p.relative_to(common).as_posix() for p in paths]


def _renamed(ds: DetectionDataset, names: list[str]) -> DetectionDataset:
    records = [dataclasses.replace(r, file_name=n) for r, n in zip(ds.records, names)]
    return dataclasses.replace(ds, records=records)


def place_file(src: Path, dst: Path, *, copy: bool = False) -> None:
    """Hard-link ``src`` to ``dst``; symlink when that fails (another file system); copy when
    ``copy``. A missing ``src`` raises ``FileNotFoundError``."""
    if not src.is_file():
        raise FileNotFoundError(f"image not found: {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(src.resolve(), dst)
