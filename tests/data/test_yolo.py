import numpy as np
import pytest
import yaml

from scaledet.data import load_dataset
from scaledet.data.io import available_splits, dataset_format
from scaledet.data.records import DetectionDataset, DetectionRecord
from scaledet.data.yolo import label_path, read_yolo, write_yolo_labels, yolo_lines
from tests.data.conftest import write_image


def make_yolo(root, names=("a", "b", "c"), labels=None, extra=None):
    """YOLO folder: train has 2 images (100x50, 40x80), val has 1 (no label file)."""
    write_image(root / "images" / "train" / "x.jpg", 100, 50)
    write_image(root / "images" / "train" / "sub" / "y.png", 40, 80, fmt="PNG")
    write_image(root / "images" / "val" / "z.jpg", 30, 30)
    labels = labels if labels is not None else {
        "x": "0 0.5 0.5 0.2 0.4\n2 0.1 0.2 0.1 0.2\n",
        "sub/y": "1 0.25 0.5 0.5 0.25\n",
    }
    for stem, text in labels.items():
        path = root / "labels" / "train" / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    data = {"train": "images/train", "val": "images/val", "names": list(names)}
    data.update(extra or {})
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def test_read_yolo(tmp_path):
    yaml_path = make_yolo(tmp_path)
    ds = read_yolo(yaml_path, "train")
    assert ds.class_names == ["a", "b", "c"] and ds.category_ids == [1, 2, 3]
    assert [r.file_name for r in ds.records] == ["images/train/sub/y.png", "images/train/x.jpg"]
    y, x = ds.records
    assert (x.width, x.height, y.width, y.height) == (100, 50, 40, 80)
    # 0 0.5 0.5 0.2 0.4 on 100x50 -> cx 50, cy 25, w 20, h 20
    np.testing.assert_allclose(x.boxes, [[40, 15, 60, 35], [5, 5, 15, 15]])
    np.testing.assert_array_equal(x.labels, [0, 2])
    np.testing.assert_array_equal(x.ann_ids, [1, 2])  # label line numbers
    np.testing.assert_allclose(y.boxes, [[0, 30, 20, 50]])
    assert ds.image_path(x).is_file()
    val = load_dataset(tmp_path, "val")  # folder holding data.yaml
    assert len(val) == 1 and len(val.records[0]) == 0
    assert available_splits(yaml_path) == ["train", "val"] and dataset_format(tmp_path) == "yolo"


def test_names_dict_path_key_and_txt_list(tmp_path):
    root = tmp_path / "ds"
    make_yolo(root, extra={"names": {0: "a", 1: "b", 2: "c"}, "nc": 3})
    (root / "train.txt").write_text("./images/train/x.jpg\n\nimages/train/sub/y.png\n")
    outer = {"path": "ds", "train": "train.txt", "names": {0: "a", 1: "b", 2: "c"}}
    (tmp_path / "outer.yaml").write_text(yaml.safe_dump(outer))
    ds = read_yolo(tmp_path / "outer.yaml", "train")
    assert ds.class_names == ["a", "b", "c"] and ds.image_root == root
    assert len(ds.records) == 2 and len(ds.records[0]) == 2
    assert read_yolo(root / "data.yaml", "train").class_names == ["a", "b", "c"]


def test_relative_path_from_the_working_directory(tmp_path, monkeypatch):
    """Ultralytics-style yamls may name the root from where training starts, not the yaml."""
    make_yolo(tmp_path / "datasets" / "ds")
    configs = tmp_path / "configs"
    configs.mkdir()
    data = {"path": "datasets/ds", "train": "images/train", "names": ["a", "b", "c"]}
    (configs / "ds.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    ds = read_yolo(configs / "ds.yaml", "train")
    assert len(ds.records) == 2 and ds.image_path(ds.records[0]).is_file()
    monkeypatch.chdir(configs)  # neither beside the yaml nor here: the error names the path
    with pytest.raises(FileNotFoundError, match="datasets/ds/images/train"):
        read_yolo(configs / "ds.yaml", "train")


@pytest.mark.parametrize("bad, message", [
    ({"names": {0: "a", 2: "b"}}, "names keys must be 0..1"),
    ({"names": []}, "'names' must be a non-empty list"),
    ({"nc": 5}, "nc is 5 but there are 3 names"),
    ({"val": "images/nope"}, "split entry 'images/nope'"),
])
def test_bad_yaml(tmp_path, bad, message):
    yaml_path = make_yolo(tmp_path, extra=bad)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_yolo(yaml_path, "val")


def test_missing_split(tmp_path):
    with pytest.raises(ValueError, match="no 'test' split"):
        read_yolo(make_yolo(tmp_path), "test")


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", "labels/train/x.txt:2: expected 5 numbers, got 4"),
    ("0 0.5 0.5 0.2 0.1 0.3", "labels/train/x.txt:2: expected 5 numbers, got 6"),
    ("0 0.5 abc 0.2 0.1", "labels/train/x.txt:2: not a number: 'abc'"),
    ("0 0.5 nan 0.2 0.1", "labels/train/x.txt:2: not finite"),
    ("3 0.5 0.5 0.2 0.1", r"labels/train/x.txt:2: class id 3 is not in 0..2"),
    ("1.5 0.5 0.5 0.2 0.1", r"labels/train/x.txt:2: class id 1.5 is not in 0..2"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    yaml_path = make_yolo(tmp_path, labels={"x": f"0 0.5 0.5 0.2 0.4\n{line}\n"})
    with pytest.raises(ValueError, match=message):
        read_yolo(yaml_path, "train")
    problems = []
    ds = read_yolo(yaml_path, "train", problems=problems)
    assert [p.where for p in problems] == ["labels/train/x.txt:2"]
    assert len(ds.records[1]) == 1  # the good line is kept


def test_segment_line_read_as_its_box(tmp_path):
    yaml_path = make_yolo(tmp_path, labels={"x": "1 0.1 0.2 0.5 0.1 0.3 0.9\n"})
    ds = read_yolo(yaml_path, "train")
    np.testing.assert_allclose(ds.records[1].boxes, [[10, 5, 50, 45]])


def test_unreadable_image_skipped_with_warning(tmp_path):
    yaml_path = make_yolo(tmp_path)
    (tmp_path / "images" / "train" / "x.jpg").write_bytes(b"broken")
    with pytest.warns(UserWarning, match="x.jpg"):
        ds = read_yolo(yaml_path, "train")
    assert [r.file_name for r in ds.records] == ["images/train/sub/y.png"]


def test_label_path():
    assert label_path("/d/images/train/a.b.jpg").as_posix() == "/d/labels/train/a.b.txt"
    assert label_path("/images/d/images/x.png").as_posix() == "/images/d/labels/x.txt"
    assert label_path("/d/x.jpg").as_posix() == "/d/x.txt"


def test_write_precision_and_crowd(tmp_path):
    record = DetectionRecord(1, "sub/a.jpg", 1234, 987,
                             boxes=[[10.123456, 20.5, 300.25, 400.75], [0, 0, 5, 5]],
                             labels=[1, 0], iscrowd=[False, True])
    ds = DetectionDataset([record], ["p", "q"])
    write_yolo_labels(ds, tmp_path / "labels")
    text = (tmp_path / "labels" / "sub" / "a.txt").read_text()
    assert text.count("\n") == 1  # the crowd box is left out
    rows = np.array(text.split(), dtype=float)
    assert rows[0] == 1
    cx, cy, w, h = rows[1:] * [1234, 987, 1234, 987]
    np.testing.assert_allclose([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2],
                               record.boxes[0], atol=1e-4)
    assert yolo_lines(DetectionRecord(2, "b.jpg", 10, 10)) == []
