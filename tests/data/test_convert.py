import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from scaledet.cli import main
from scaledet.data import (
    DetectionDataset,
    DetectionRecord,
    load_dataset,
    to_coco_dict,
    write_coco_json,
)
from scaledet.data.io import convert_dataset
from tests.data.test_voc import make_voc
from tests.data.test_yolo import make_yolo


def tree_digest(root):
    """Names, sizes and contents of every file under root."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def by_name(ds):
    return {os.path.basename(r.file_name): r for r in ds.records}


def test_coco_yolo_coco_round_trip(coco_folder, tmp_path):
    before = tree_digest(coco_folder)
    with pytest.warns(UserWarning, match="val: 1 crowd regions left out"):
        assert main(["data", "convert", str(coco_folder), str(tmp_path / "y"), "--to", "yolo"]) == 0
    assert main(["data", "convert", str(tmp_path / "y" / "data.yaml"), str(tmp_path / "c"),
                 "--to", "coco"]) == 0
    assert tree_digest(coco_folder) == before  # the source is never modified
    src, back = load_dataset(coco_folder, "val"), load_dataset(tmp_path / "c", "val")
    assert back.class_names == src.class_names and back.category_ids == src.category_ids == [7, 3]
    a, b = by_name(src), by_name(back)
    assert a.keys() == b.keys()
    for name, r in a.items():
        keep = ~r.iscrowd  # YOLO has no crowd regions
        np.testing.assert_allclose(b[name].boxes, r.boxes[keep], atol=1e-3, rtol=0)
        np.testing.assert_array_equal(b[name].labels, r.labels[keep])
        assert (b[name].width, b[name].height) == (r.width, r.height)
        assert back.image_path(b[name]).read_bytes() == src.image_path(r).read_bytes()


def test_round_trip_precision_on_a_large_image(tmp_path):
    """Random boxes with many decimals on a 4000x3000 image survive COCO -> YOLO -> COCO."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 3000, (50, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.01, 900, (50, 2))], axis=1)
    record = DetectionRecord(3, "big.jpg", 4000, 3000, boxes, rng.integers(0, 3, 50))
    src = tmp_path / "src"
    (src / "images" / "train").mkdir(parents=True)
    Image.new("RGB", (4000, 3000)).save(src / "images" / "train" / "big.jpg")
    write_coco_json(DetectionDataset([record], ["p", "q", "r"], [5, 1, 9]),
                    src / "annotations" / "instances_train.json")
    convert_dataset(src, tmp_path / "y", "yolo")
    convert_dataset(tmp_path / "y", tmp_path / "c", "coco")
    back = load_dataset(tmp_path / "c", "train")
    assert back.category_ids == [5, 1, 9] and back.class_names == ["p", "q", "r"]
    np.testing.assert_allclose(back.records[0].boxes, boxes, atol=1e-3, rtol=0)
    np.testing.assert_array_equal(back.records[0].labels, record.labels)


def test_yolo_to_coco_keeps_everything(tmp_path):
    yaml_path = make_yolo(tmp_path / "src", names=("a", "b", "c"))
    convert_dataset(yaml_path, tmp_path / "c", "coco")
    for split in ("train", "val"):
        a, b = load_dataset(yaml_path, split), load_dataset(tmp_path / "c", split)
        assert b.class_names == ["a", "b", "c"]
        ra, rb = by_name(a), by_name(b)
        for name in ra:
            np.testing.assert_allclose(rb[name].boxes, ra[name].boxes, atol=1e-9)
    assert (tmp_path / "c" / "images" / "train" / "sub" / "y.png").is_file()


def test_voc_to_coco(tmp_path):
    root = make_voc(tmp_path / "VOC", {"1": (60, 40, [("dog", (1, 1, 10, 20), True)])},
                    {"trainval": ["1"]})
    convert_dataset(root, tmp_path / "c", "coco")
    coco = to_coco_dict(load_dataset(tmp_path / "c", "trainval"))
    assert coco["annotations"][0]["bbox"] == [0.0, 0.0, 10.0, 20.0]
    assert coco["annotations"][0]["iscrowd"] == 1 and len(coco["categories"]) == 20


def test_links_and_copies(coco_folder, tmp_path):
    src_image = coco_folder / "images" / "val" / "im0.jpg"
    convert_dataset(coco_folder, tmp_path / "linked", "coco")
    linked = tmp_path / "linked" / "images" / "val" / "im0.jpg"
    assert os.path.samefile(linked, src_image)
    convert_dataset(coco_folder, tmp_path / "copied", "coco", copy_images=True)
    copied = tmp_path / "copied" / "images" / "val" / "im0.jpg"
    assert not os.path.samefile(copied, src_image)
    assert copied.read_bytes() == src_image.read_bytes()


def test_refuses_bad_destinations(coco_folder, tmp_path):
    with pytest.raises(ValueError, match="inside the source"):
        convert_dataset(coco_folder, coco_folder / "out", "yolo")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        convert_dataset(coco_folder, tmp_path / "full", "yolo")
    with pytest.raises(ValueError, match="to must be"):
        convert_dataset(coco_folder, tmp_path / "o", "voc")
    assert main(["data", "convert", str(coco_folder), str(coco_folder / "o"), "--to", "coco"]) == 2
