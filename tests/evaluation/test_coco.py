"""COCOEvaluator: parity with pycocotools, hand-worked examples, input validation."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from scaledet.evaluation import COCOEvaluator, evaluate_coco, format_coco_stats
from tests.evaluation.coco_cases import make_case, pycocotools_eval


def _assert_same_as_pycocotools(result, ev) -> None:
    np.testing.assert_allclose(result.stats, ev.stats, rtol=0, atol=1e-12)
    assert result.precision.shape == ev.eval["precision"].shape
    np.testing.assert_allclose(result.precision, ev.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.recall, ev.eval["recall"], rtol=0, atol=1e-12)


# ---- parity -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("integer", [True, False])
def test_matches_pycocotools(seed, integer):
    gt, dets = make_case(seed, integer=integer)
    result = evaluate_coco(gt, dets)
    _assert_same_as_pycocotools(result, pycocotools_eval(gt, dets))


def test_matches_pycocotools_larger_problem():
    gt, dets = make_case(123, n_images=150, n_cats=8)
    _assert_same_as_pycocotools(evaluate_coco(gt, dets), pycocotools_eval(gt, dets))


@pytest.mark.parametrize("seed", range(3))
def test_update_with_tensors_matches_pycocotools(seed):
    gt, dets = make_case(seed)  # integer grid: xywh -> xyxy float32 -> xywh is exact
    evaluator = COCOEvaluator(gt)
    by_image: dict[int, list] = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d)
    items = list(by_image.items())
    for i in range(0, len(items), 3):  # batches of 3 images, as a training loop would
        batch = items[i:i + 3]
        ids = torch.tensor([img for img, _ in batch])
        boxes = [torch.tensor([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2],
                                d["bbox"][1] + d["bbox"][3]] for d in ds]) for _, ds in batch]
        scores = [torch.tensor([d["score"] for d in ds]) for _, ds in batch]
        labels = [torch.tensor([d["category_id"] for d in ds]) for _, ds in batch]
        evaluator.update(ids, boxes, scores, labels)
    _assert_same_as_pycocotools(evaluator.compute(), pycocotools_eval(gt, dets))


def test_per_category_matches_pycocotools_precision():
    gt, dets = make_case(5, n_images=40)
    result = evaluate_coco(gt, dets)
    ev = pycocotools_eval(gt, dets)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for k, cat_id in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        expected = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
        assert result.per_category[names[cat_id]] == pytest.approx(expected, abs=1e-12)


def test_json_files_and_in_memory_agree(tmp_path):
    gt, dets = make_case(2)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    a = evaluate_coco(tmp_path / "gt.json", str(tmp_path / "dt.json"))
    b = evaluate_coco(gt, dets)
    np.testing.assert_array_equal(a.stats, b.stats)


# ---- hand-worked examples -------------------------------------------------------------------


def _gt(anns, image_ids=(1,), cat_ids=(1,)):
    for i, a in enumerate(anns):
        a.setdefault("id", i + 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
    return {"images": [{"id": i} for i in image_ids], "annotations": anns,
            "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}


def _det(box, score, image_id=1, cat=1):
    return {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}


def test_every_stat_by_hand():
    # a small gt (area 100) and a large one (10000); det A = the large gt (IoU 1), det B has
    # IoU 0.6 with the small gt (TP only at thresholds .50 .55 .60), det C is a small FP.
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
              {"image_id": 1, "category_id": 1, "bbox": [100, 100, 100, 100]}])
    dets = [_det([100, 100, 100, 100], 0.9), _det([0, 0, 10, 6], 0.8),
            _det([300, 300, 10, 10], 0.7)]
    s = evaluate_coco(gt, dets).stats
    # 3 thresholds: TP TP FP -> precision 1 at every recall; 7 thresholds: TP FP FP -> recall
    # stops at .5, so 51 of the 101 recall points have precision 1
    ap = (3 * 1 + 7 * 51 / 101) / 10
    expected = [ap, 1.0, 51 / 101,
                0.3,  # small: only B's gt counts (A is on an ignored gt); TP at 3 thresholds
                -1.0,  # no medium gt
                1.0,  # large: A is a TP, B and C are unmatched and outside the range: ignored
                0.5,  # AR1: only A
                0.65, 0.65,  # (3 * 2/2 + 7 * 1/2) / 10
                0.3, -1.0, 1.0]
    np.testing.assert_allclose(s, expected, rtol=0, atol=1e-12)


def test_crowd_region_absorbs_detections():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
              {"image_id": 1, "category_id": 1, "bbox": [20, 0, 30, 30], "iscrowd": 1}])
    dets = [_det([25, 5, 10, 10], 0.9), _det([25, 15, 10, 10], 0.8), _det([0, 0, 10, 10], 0.7)]
    s = evaluate_coco(gt, dets).stats
    assert s[0] == pytest.approx(1.0) and s[8] == 1.0  # both dets in the crowd are ignored
    gt["annotations"][1]["iscrowd"] = 0
    assert evaluate_coco(gt, dets).stats[0] < 0.5


def test_score_ties_follow_image_id_then_input_order():
    # equal scores: pycocotools ranks the detection of the smaller image id first
    gt = _gt([{"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10]}], image_ids=(2, 1))
    fp_first = [_det([0, 0, 10, 10], 0.5, image_id=2), _det([50, 50, 10, 10], 0.5, image_id=1)]
    assert evaluate_coco(gt, fp_first).stats[0] == pytest.approx(0.5)  # FP (image 1) ranks first
    # same image and category: input order decides
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    tp = _det([0, 0, 10, 10], 0.5)
    fp = _det([50, 50, 10, 10], 0.5)
    assert evaluate_coco(gt, [fp, tp]).stats[0] == pytest.approx(0.5)
    assert evaluate_coco(gt, [tp, fp]).stats[0] == pytest.approx(1.0)


def test_only_100_detections_per_image_and_category():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    fps = [_det([50 + i, 50, 10, 10], 0.9) for i in range(100)]
    stats = evaluate_coco(gt, [*fps, _det([0, 0, 10, 10], 0.1)]).stats
    assert stats[0] == 0.0 and stats[8] == 0.0  # the TP ranks 101st: never evaluated
    stats = evaluate_coco(gt, [*fps[:99], _det([0, 0, 10, 10], 0.1)]).stats
    assert stats[8] == 1.0 and stats[0] == pytest.approx(1 / 100)


def test_images_and_categories_without_gt():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}],
             image_ids=(1, 7), cat_ids=(1, 3))
    # a higher-scored FP on an image without gt halves the precision at full recall
    dets = [_det([0, 0, 10, 10], 0.5), _det([0, 0, 10, 10], 0.9, image_id=7),
            _det([0, 0, 10, 10], 0.9, cat=3)]
    result = evaluate_coco(gt, dets)
    assert result.stats[0] == pytest.approx(0.5)
    assert result.per_category == {"c1": pytest.approx(0.5), "c3": -1.0}
    assert (result.precision[:, :, 1] == -1).all() and (result.recall[:, 1] == -1).all()


def test_no_detections_and_no_gt():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    assert evaluate_coco(gt, []).stats.tolist() == [0.0] * 3 + [0.0, -1.0, -1.0] + [0.0] * 4 + [-1.0, -1.0]
    empty = evaluate_coco(_gt([]), [_det([0, 0, 5, 5], 0.3)])
    assert empty.stats.tolist() == [-1.0] * 12


def test_ignore_field_is_overwritten_by_iscrowd_as_in_pycocotools():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "ignore": 1}])
    assert evaluate_coco(gt, []).stats[0] == 0.0  # the gt still counts as a miss


def test_annotation_id_zero_warns_and_matches_pycocotools():
    gt, dets = make_case(3)
    gt["annotations"][0]["id"] = 0
    with pytest.warns(UserWarning, match="id 0"):
        result = evaluate_coco(gt, dets)
    _assert_same_as_pycocotools(result, pycocotools_eval(gt, dets))


def test_optional_gt_fields_default_like_coco():
    anns = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}]  # no id/area/iscrowd
    gt = {"images": [{"id": 1}], "annotations": anns, "categories": [{"id": 1}]}
    result = evaluate_coco(gt, [_det([0, 0, 40, 40], 0.5)])
    assert result.stats[0] == pytest.approx(1.0)
    assert result.stats[4] == pytest.approx(1.0)  # area 1600: medium
    assert result.per_category == {"1": pytest.approx(1.0)}


def test_summary_layout_and_result_access():
    gt, dets = make_case(1)
    result = evaluate_coco(gt, dets)
    lines = result.summary().splitlines()
    assert len(lines) == 12
    assert lines[0] == (" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | "
                        f"maxDets=100 ] = {result.stats[0]:0.3f}")
    assert lines[6].startswith(" Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | "
                               "maxDets=  1 ]")
    assert format_coco_stats(result.stats) == result.summary()
    assert result["stats"] is result.stats and set(result["per_category"]) == set(
        c["name"] for c in gt["categories"])
    assert result.metrics["mAP50"] == result.stats[1]
    d = result.to_dict()
    assert json.loads(json.dumps(d))["stats"] == pytest.approx(result.stats.tolist())
    assert "AP50" in result.per_category_table().splitlines()[0]


def test_evaluator_accumulates_reset_and_single_image_update():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
              {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10]}], image_ids=(1, 2))
    ev = COCOEvaluator(gt)
    ev.update(1, np.array([[0.0, 0, 10, 10]]), np.array([0.9]), np.array([1]))
    assert ev.compute().stats[8] == 0.5
    ev.update(torch.tensor(2), torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.8]),
              torch.tensor([1]))
    ev.update(2, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert ev.compute().stats[0] == pytest.approx(1.0)
    ev.reset()
    assert ev.compute().stats[0] == 0.0


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("mutate, message", [
    (lambda g, d: d[0].pop("score"), "detection 0 has no 'score'"),
    (lambda g, d: d[1].__setitem__("bbox", [1, 2, 3]), "detection 1: bbox must be 4 numbers"),
    (lambda g, d: d[1].__setitem__("bbox", [1, 2, "a", 4]), "detection 1: bbox must be 4"),
    (lambda g, d: d[1].__setitem__("bbox", "1234"), "detection 1: bbox must be 4 numbers"),
    (lambda g, d: d[2].__setitem__("bbox", [1, 2, -3, 4]), "detection 2: bbox has a negative"),
    (lambda g, d: d[0].__setitem__("image_id", 424242), "image_id 424242 is not in the ground"),
    (lambda g, d: d[0].__setitem__("category_id", 5555), "category_id 5555 is not in the"),
    (lambda g, d: d[0].__setitem__("score", float("nan")), "'score' is not finite"),
    (lambda g, d: g.pop("categories"), "missing or non-list 'categories'"),
    (lambda g, d: g["annotations"][0].pop("bbox"), "annotation 0 has no 'bbox'"),
    (lambda g, d: g["annotations"][0].__setitem__("bbox", [0, 0, 5, -1]), "annotation 0: bbox"),
    (lambda g, d: g["annotations"][1].__setitem__("image_id", -5), "annotation 1: image_id -5"),
    (lambda g, d: g["images"].append(dict(g["images"][0])), "duplicate image id"),
])
def test_malformed_input_names_file_and_problem(tmp_path, mutate, message):
    gt, dets = make_case(0)
    mutate(gt, dets)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    with pytest.raises(ValueError, match="json: .*" + message.replace("(", r"\(")) as e:
        evaluate_coco(tmp_path / "gt.json", tmp_path / "dt.json")
    assert str(tmp_path) in str(e.value)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        evaluate_coco(tmp_path / "bad.json", [])
    with pytest.raises(FileNotFoundError, match="nope.json"):
        evaluate_coco(tmp_path / "nope.json", [])
    gt, _ = make_case(0)
    (tmp_path / "dt.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="dt.json: expected a list of detections"):
        evaluate_coco(gt, tmp_path / "dt.json")


def test_update_rejects_bad_input():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    ev = COCOEvaluator(gt)
    with pytest.raises(ValueError, match="image_id 9 is not in the ground truth"):
        ev.update(9, np.zeros((1, 4)), np.ones(1), np.ones(1, int))
    with pytest.raises(ValueError, match=r"labels \[2\] are not category ids"):
        ev.update(1, np.zeros((1, 4)), np.ones(1), np.array([2]))
    with pytest.raises(ValueError, match=r"x2 >= x1"):
        ev.update(1, np.array([[5.0, 0, 1, 1]]), np.ones(1), np.ones(1, int))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        ev.update(1, np.zeros((2, 4)), np.ones(1), np.ones(1, int))
    with pytest.raises(ValueError, match="integer COCO category ids"):
        ev.update(1, np.zeros((1, 4)), np.ones(1), np.array([1.5]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ev.compute().stats[0] == 0.0  # nothing half-added


def test_category_chunks_give_the_same_arrays():
    from scaledet.evaluation.coco import load_ground_truth, parse_results
    from scaledet.evaluation.coco_engine import evaluate_arrays

    gt, dets = make_case(9, n_images=30, n_cats=7)
    g = load_ground_truth(gt)
    d = parse_results(dets, g)
    whole = evaluate_arrays(g.arrays, d, 7)
    ev = pycocotools_eval(gt, dets)
    for chunk in (1, 10, 40):
        precision, recall = evaluate_arrays(g.arrays, d, 7, chunk_detections=chunk)
        np.testing.assert_array_equal(precision, whole[0])
        np.testing.assert_array_equal(recall, whole[1])
        np.testing.assert_allclose(precision, ev.eval["precision"], rtol=0, atol=1e-12)
