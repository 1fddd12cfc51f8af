import json
import shutil

import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO

from scaledet.data import load_dataset, read_coco, to_coco_dict, write_coco_json
from scaledet.data.coco import coco_dict_to_dataset
from scaledet.data.io import available_splits, dataset_format
from tests.data.conftest import coco_dict


def content(ds) -> dict:
    """``to_coco_dict`` without the ``info`` block (which names the source file)."""
    d = to_coco_dict(ds)
    d.pop("info")
    return d


def test_read_coco_folder(coco_folder):
    ds = load_dataset(coco_folder, "val")
    assert ds.class_names == ["dog", "cat"] and ds.category_ids == [7, 3]
    assert ds.image_root == coco_folder / "images" / "val"
    assert [r.image_id for r in ds.records] == [10, 11, 12]
    r0 = ds.records[0]
    np.testing.assert_allclose(r0.boxes, [[1.5, 2.25, 21.5, 12.375], [30, 5, 42, 35]])
    np.testing.assert_array_equal(r0.labels, [0, 1])
    np.testing.assert_allclose(r0.areas, [150.0, 360.0])  # given area, else box area
    np.testing.assert_array_equal(r0.ann_ids, [1, 2])
    assert ds.records[1].iscrowd.tolist() == [True]
    assert len(ds.records[2]) == 0
    assert ds.image_path(r0).is_file()


def test_to_coco_dict_matches_pycocotools(coco_folder, tmp_path):
    """Our writer's output, loaded by pycocotools, gives back the original annotations."""
    ds = load_dataset(coco_folder, "val")
    out = write_coco_json(ds, tmp_path / "out.json")
    gt = COCO(str(out))
    original = json.loads((coco_folder / "annotations" / "instances_val.json").read_text())
    for ann in original["annotations"]:
        ours = gt.anns[ann["id"]]
        assert ours["bbox"] == pytest.approx(ann["bbox"])
        assert ours["category_id"] == ann["category_id"]
        assert ours["image_id"] == ann["image_id"]
        assert ours["iscrowd"] == ann["iscrowd"]
    assert [c["id"] for c in gt.dataset["categories"]] == [7, 3]
    assert gt.imgs[10]["width"] == 64 and gt.imgs[10]["height"] == 48
    assert content(read_coco(out, coco_folder / "images" / "val")) == content(ds)


def test_annotation_ids_renumbered_when_missing(coco_folder):
    ds = load_dataset(coco_folder, "val")
    for r in ds.records:
        r.ann_ids[:] = 0
    assert [a["id"] for a in to_coco_dict(ds)["annotations"]] == [1, 2, 3]


@pytest.mark.parametrize("ann, message", [
    ({"id": 17, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
     "instances_val.json: annotation id 17: bbox must be 4 numbers"),
    ({"id": 17, "image_id": 1, "category_id": 1, "bbox": [1, 2, "3", 4]},
     "annotation id 17: bbox must be 4 numbers"),
    ({"id": 17, "image_id": 1, "category_id": 1, "bbox": [1, 2, float("nan"), 4]},
     "annotation id 17: bbox [1, 2, nan, 4] is not finite"),
    ({"id": 17, "image_id": 1, "category_id": 9, "bbox": [1, 2, 3, 4]},
     "annotation id 17: category_id 9 is not in 'categories'"),
    ({"id": 17, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]},
     "annotation id 17: image_id 2 is not in 'images'"),
])
def test_malformed_annotation_names_file_and_id(tmp_path, ann, message):
    data = coco_dict([{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}], [ann],
                     [{"id": 1, "name": "a"}])
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_coco(path)
    problems = []
    ds = read_coco(path, problems=problems)  # collect mode: the entry is skipped
    assert len(problems) == 1 and message.endswith(problems[0].message)
    assert len(ds.records[0]) == 0


@pytest.mark.parametrize("data, message", [
    ([], "no 'images' list"),
    ({"images": [], "annotations": []}, "no 'categories' list"),
    (coco_dict([{"id": 1, "file_name": "a.jpg", "width": 10}], [], []), "image id 1: needs"),
    (coco_dict([{"id": 1, "file_name": "a", "width": 1, "height": 1}] * 2, [], []), "twice"),
    (coco_dict([], [], [{"id": 1}, {"id": 1}]), "category id 1 appears twice"),
])
def test_malformed_structure(data, message):
    with pytest.raises(ValueError, match=message):
        coco_dict_to_dataset(data, ".", source="x.json")


def test_not_json_and_missing(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid json"):
        read_coco(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_coco(tmp_path / "nope.json")


def test_layouts(coco_folder, tmp_path):
    """Folder, bare json, COCO-2017 names and a scaledet yaml all resolve to the same data."""
    reference = content(load_dataset(coco_folder, "val"))
    json_path = coco_folder / "annotations" / "instances_val.json"
    assert content(load_dataset(json_path, "val")) == reference
    assert load_dataset(json_path, "val").image_root == coco_folder / "images" / "val"

    coco2017 = tmp_path / "coco2017"
    shutil.copytree(coco_folder / "images" / "val", coco2017 / "val2017")
    (coco2017 / "annotations").mkdir()
    shutil.copy(json_path, coco2017 / "annotations" / "instances_val2017.json")
    ds = load_dataset(coco2017, "val")
    assert ds.image_root == coco2017 / "val2017" and content(ds) == reference
    assert available_splits(coco2017) == ["val2017"]

    spec = {"format": "coco", "val": {"json": "annotations/instances_val.json",
                                      "images": "images/val"}}
    (coco_folder / "data.yaml").write_text(yaml.safe_dump(spec))
    ds = load_dataset(coco_folder / "data.yaml", "val")
    assert content(ds) == reference and ds.image_path(ds.records[0]).is_file()
    assert available_splits(coco_folder / "data.yaml") == ["val"]
    assert dataset_format(coco_folder / "data.yaml") == "coco"


def test_missing_split_and_unknown_folder(coco_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_train.json"):
        load_dataset(coco_folder, "train")
    with pytest.raises(FileNotFoundError, match="not a dataset folder"):
        load_dataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        load_dataset(tmp_path / "missing", "train")
