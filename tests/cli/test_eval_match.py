"""``scaledet eval`` places ``scaledet predict``'s detections on the ground truth's images by
file name: ``predict`` numbers images 1..N in input order, which means nothing to a ground truth
with other ids."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaledet.cli import main
from scaledet.data import make_synthetic_dataset
from scaledet.data.images import collect_images
from scaledet.evaluation import evaluate_coco, load_ground_truth
from scaledet.evaluation.coco import AMBIGUOUS, NO_IMAGE, match_file_names


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The built-in dataset (6 val images), its ground truth, and detections written the way
    ``scaledet predict`` writes them: image ids 1..N in the order of the folder listing, the
    image's path as ``file_name``; boxes near the ground truth, some off, plus false ones."""
    root = make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "d", n_train=0, n_val=6,
                                  imgsz=64)
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    files = collect_images([str(root / "images" / "val")])
    position = {f.name: k for k, f in enumerate(files, start=1)}
    rng = np.random.default_rng(0)
    name_of = {im["id"]: im["file_name"] for im in gt["images"]}
    dets = []
    for a in gt["annotations"]:
        name = name_of[a["image_id"]]
        box = (np.array(a["bbox"]) + rng.normal(0, 2.5, 4)).clip(0, None).round(2).tolist()
        dets.append({"image_id": position[name], "category_id": a["category_id"], "bbox": box,
                     "score": round(float(rng.uniform(0.3, 1)), 3),
                     "file_name": str(root / "images" / "val" / name)})
        dets.append({**dets[-1], "bbox": [1.0, 1.0, 5.0, 5.0], "score": 0.5})  # a false one
    return root, gt, dets


def _shuffled(gt: dict, seed: int = 1) -> dict:
    """The same ground truth with its image ids permuted (every image gets another id)."""
    ids = np.random.default_rng(seed).permutation([im["id"] for im in gt["images"]]).tolist()
    new = dict(zip(ids, ids[1:] + ids[:1]))  # one cycle: no id stays
    return {**gt, "images": [{**im, "id": new[im["id"]]} for im in gt["images"]],
            "annotations": [{**a, "image_id": new[a["image_id"]]} for a in gt["annotations"]]}


def test_shuffled_image_ids_score_the_same_by_file_name(dataset, tmp_path, capsys):
    root, gt, dets = dataset
    shuffled = _shuffled(gt)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "shuffled.json").write_text(json.dumps(shuffled))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    original = evaluate_coco(gt, dets)
    assert 0.2 < original.stats[0] < 0.95  # neither trivial nor perfect
    # By image_id alone (what eval did before) the shuffled ground truth scores about nothing.
    without_names = [{k: v for k, v in d.items() if k != "file_name"} for d in dets]
    assert evaluate_coco(shuffled, without_names).stats[0] < 0.5 * original.stats[0]
    np.testing.assert_array_equal(evaluate_coco(shuffled, dets).precision, original.precision)

    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json")]) == 0
    same = capsys.readouterr()
    assert same.err == ""  # ids and names agree: nothing to say
    assert main(["eval", "--gt", str(tmp_path / "shuffled.json"),
                 "--dt", str(tmp_path / "dt.json")]) == 0
    moved = capsys.readouterr()
    assert moved.out.splitlines()[:12] == original.summary().splitlines()
    assert moved.out == same.out
    (line,) = moved.err.splitlines()
    assert line == (f"note: {len(dets)} of {len(dets)} detections re-mapped by file_name to the "
                    f"image ids of {tmp_path / 'shuffled.json'} (their image_id named another "
                    "image)")


def test_detections_on_files_outside_the_ground_truth_are_left_out(dataset, tmp_path, capsys):
    root, gt, dets = dataset
    # predict ran on a folder with one more image, listed first: every id is off by one.
    extra = [{**dets[0], "image_id": 1, "file_name": str(root / "images" / "extra.jpg")}]
    moved = extra + [{**d, "image_id": d["image_id"] + 1} for d in dets]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(moved))
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json")]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[:12] == evaluate_coco(gt, dets).summary().splitlines()
    assert captured.err.splitlines() == [
        f"note: {len(dets)} of {len(moved)} detections re-mapped by file_name to the image ids "
        f"of {tmp_path / 'gt.json'} (their image_id named another image)",
        f"note: 1 detections on 1 files that are no image of {tmp_path / 'gt.json'} (by "
        "file_name) were left out"]


def _small_gt() -> dict:
    """Images 1..3; only image 1 has an annotation."""
    return {"images": [{"id": i, "file_name": f"img{i}.jpg"} for i in (1, 2, 3)],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]}


@pytest.mark.parametrize("dets, detail", [
    ([{"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}],
     "detections are on image ids 2, its annotated images have ids 1; the detections carry no "
     "file_name to match by"),
    ([{"image_id": 3, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9,
       "file_name": "/data/other.jpg"}],
     "no file_name of the detections (e.g. other.jpg) is the file of one of its images "
     "(e.g. img1.jpg)"),
    ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9,
       "file_name": "x/img3.jpg"}],
     "the detections' file_name names 1 of its images, none of which has annotations"),
    ([], "there are no detections"),
])
def test_no_detection_on_an_annotated_image_warns_loudly(tmp_path, capsys, dets, detail):
    (tmp_path / "gt.json").write_text(json.dumps(_small_gt()))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"warning: no detection matches an image of {tmp_path / 'gt.json'}: ")
    assert detail in err[-1]
    if "other.jpg" in detail:  # names that match nothing: placed by image_id, and said so
        assert err[0] == (f"note: no file_name of the detections is the file of an image of "
                          f"{tmp_path / 'gt.json'}; the 1 detections are placed by image_id")


def test_file_names_match_by_basename_and_trailing_folders():
    gt = load_ground_truth({
        "images": [{"id": 10, "file_name": "train/0001.jpg"}, {"id": 20, "file_name": "val/0001.jpg"},
                   {"id": 30, "file_name": "0002.jpg"}, {"id": 40, "file_name": "a/0003.jpg"},
                   {"id": 50, "file_name": "b/0003.jpg"}, {"id": 60}],
        "categories": [{"id": 1}], "annotations": []})
    ids, ambiguous = match_file_names(
        ["/data/images/val/0001.jpg", "C:\\data\\train\\0001.jpg", "/x/y/0002.jpg", "0002.jpg",
         "/z/0003.jpg", "0004.jpg"], gt)
    assert ids.tolist() == [20, 10, 30, 30, AMBIGUOUS, NO_IMAGE]
    assert ambiguous == {"/z/0003.jpg": [40, 50]}
