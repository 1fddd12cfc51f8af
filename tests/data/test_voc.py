import numpy as np
import pytest

from scaledet.data import load_dataset
from scaledet.data.io import available_splits, dataset_format
from scaledet.data.voc import VOC_CLASSES, read_voc
from tests.data.conftest import write_image


def voc_xml(filename, w, h, objects):
    objs = "".join(
        f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox>"
        f"<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax>"
        f"</bndbox></object>" for name, b, diff in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>")


def make_voc(root, annotations, splits):
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, (w, h, objects) in annotations.items():
        write_image(root / "JPEGImages" / f"{image_id}.jpg", w, h)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            voc_xml(f"{image_id}.jpg", w, h, objects))
    for split, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (root / "ImageSets" / "Main" / "dog_train.txt").write_text("000001 1\n")  # per-class list
    return root


def test_read_voc(tmp_path):
    root = make_voc(tmp_path / "VOC", {
        "000001": (60, 40, [("dog", (1, 1, 10, 20), False), ("person", (5, 6, 30, 40), True)]),
        "000002": (50, 50, []),
    }, {"train": ["000001"], "val": ["000002"]})
    ds = load_dataset(root, "train")
    assert ds.class_names == list(VOC_CLASSES)
    r = ds.records[0]
    assert (r.file_name, r.width, r.height) == ("000001.jpg", 60, 40)
    np.testing.assert_allclose(r.boxes, [[0, 0, 10, 20], [4, 5, 30, 40]])  # 1-based inclusive
    assert [ds.class_names[i] for i in r.labels] == ["dog", "person"]
    assert r.iscrowd.tolist() == [False, True]  # difficult -> ignored in evaluation
    np.testing.assert_array_equal(r.ann_ids, [1, 2])
    assert ds.image_path(r).is_file()
    assert len(load_dataset(root, "val").records[0]) == 0
    assert available_splits(root) == ["train", "val"] and dataset_format(root) == "voc"


def test_custom_class_names_and_unknown(tmp_path):
    root = make_voc(tmp_path / "v", {"a": (20, 20, [("zebra", (1, 1, 5, 5), False),
                                                    ("apple", (2, 2, 6, 6), False)])},
                    {"train": ["a"]})
    assert read_voc(root, "train").class_names == ["apple", "zebra"]
    with pytest.raises(ValueError, match=r"Annotations/a.xml: object 1: class 'zebra'"):
        read_voc(root, "train", class_names=["apple"])
    problems = []
    ds = read_voc(root, "train", class_names=["apple"], problems=problems)
    assert [p.kind for p in problems] == ["unknown_class"] and len(ds.records[0]) == 1


def test_malformed_xml(tmp_path):
    root = make_voc(tmp_path / "v", {"a": (20, 20, [("dog", (1, 1, 5, 5), False)])},
                    {"train": ["a", "b"]})
    with pytest.raises(ValueError, match="Annotations/b.xml: annotation file is missing"):
        read_voc(root, "train")
    (root / "Annotations" / "b.xml").write_text("<annotation><size>")
    with pytest.raises(ValueError, match="Annotations/b.xml: not valid XML"):
        read_voc(root, "train")
    (root / "Annotations" / "b.xml").write_text(
        voc_xml("b.jpg", 20, 20, [("dog", ("x", 1, 5, 5), False)]))
    with pytest.raises(ValueError, match="b.xml: object 1: bndbox needs numeric"):
        read_voc(root, "train")
    with pytest.raises(FileNotFoundError, match="ImageSets/Main/test.txt"):
        read_voc(root, "test")
