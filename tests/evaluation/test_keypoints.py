"""Keypoint (OKS) evaluation: parity with pycocotools' COCOeval(iouType="keypoints"), the OKS
matrix against its computeOks, hand-worked corner cases, errors and ``scaledet eval``."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from scaledet.cli import main
from scaledet.evaluation.keypoints import (
    COCO_SIGMAS,
    KEYPOINT_STAT_NAMES,
    _pairwise_sum,
    evaluate_keypoints,
    object_keypoint_similarity,
)
from tests.evaluation.keypoint_cases import make_keypoint_case, pycocotools_keypoint_eval


def _assert_same_as_pycocotools(result, ev) -> None:
    np.testing.assert_allclose(result.stats, ev.stats, rtol=0, atol=1e-12)
    assert result.precision.shape == ev.eval["precision"].shape
    np.testing.assert_allclose(result.precision, ev.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.recall, ev.eval["recall"], rtol=0, atol=1e-12)


# ---- parity -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("joints", [17, 5])
@pytest.mark.parametrize("integer", [False, True])
def test_matches_pycocotools(seed, joints, integer):
    gt, dets, sigmas = make_keypoint_case(seed, joints=joints, integer=integer)
    result = evaluate_keypoints(gt, dets, sigmas=sigmas)
    _assert_same_as_pycocotools(result, pycocotools_keypoint_eval(gt, dets, sigmas))


@pytest.mark.parametrize("seed", range(3))
def test_results_with_bbox_take_its_area_as_pycocotools(seed):
    gt, dets, sigmas = make_keypoint_case(100 + seed, with_bbox=True)
    result = evaluate_keypoints(gt, dets)
    _assert_same_as_pycocotools(result, pycocotools_keypoint_eval(gt, dets))


def test_matches_pycocotools_larger_problem():
    gt, dets, sigmas = make_keypoint_case(7, n_images=80, n_cats=4)
    _assert_same_as_pycocotools(evaluate_keypoints(gt, dets), pycocotools_keypoint_eval(gt, dets))


def test_box_only_detections_of_other_classes_are_left_out_with_a_warning():
    """A multi-class detector's predict json: people with keypoints, cars without; the cars'
    category is not in a person-keypoint ground truth. pycocotools' loadRes refuses such a
    file; the evaluation is that of the keypoint detections alone."""
    gt, dets, sigmas = make_keypoint_case(4)
    cars = [{"image_id": d["image_id"], "category_id": 99, "bbox": [1.0, 2.0, 30.0, 20.0],
             "score": 0.9} for d in dets[:5]]
    with pytest.warns(UserWarning, match=f"5 of {len(dets) + 5} detections have no keypoints"):
        result = evaluate_keypoints(gt, cars + dets, sigmas=sigmas)
    _assert_same_as_pycocotools(result, pycocotools_keypoint_eval(gt, dets, sigmas))


def test_sigmas_from_the_category_equal_sigmas_given():
    gt, dets, sigmas = make_keypoint_case(3, joints=5)
    for category in gt["categories"]:
        category["sigmas"] = sigmas
    result = evaluate_keypoints(gt, dets)
    _assert_same_as_pycocotools(result, pycocotools_keypoint_eval(gt, dets, sigmas))


def test_absent_num_keypoints_counts_the_labelled_points():
    gt, dets, _ = make_keypoint_case(4)
    for ann in gt["annotations"]:
        ann["num_keypoints"] = int((np.array(ann["keypoints"][2::3]) > 0).sum())
    expected = pycocotools_keypoint_eval(gt, dets)
    for ann in gt["annotations"]:
        del ann["num_keypoints"]
    _assert_same_as_pycocotools(evaluate_keypoints(gt, dets), expected)


def test_oks_is_bitwise_pycocotools_compute_oks():
    pairs = 0
    for seed in range(4):
        for joints in (17, 5):
            gt, dets, sigmas = make_keypoint_case(seed, joints=joints)
            ev = pycocotools_keypoint_eval(gt, dets, sigmas)
            sig = COCO_SIGMAS if sigmas is None else np.array(sigmas)
            for (img, cat), expected in ev.ious.items():
                if len(expected) == 0:
                    continue
                g, d = ev._gts[img, cat], ev._dts[img, cat]
                d = [d[i] for i in np.argsort([-x["score"] for x in d], kind="mergesort")[:20]]
                di, gi = (a.ravel() for a in np.meshgrid(np.arange(len(d)), np.arange(len(g)),
                                                         indexing="ij"))
                got = object_keypoint_similarity(
                    np.array([x["keypoints"] for x in d]).reshape(len(d), -1, 3)[di],
                    np.array([x["keypoints"] for x in g], float).reshape(len(g), -1, 3)[gi],
                    np.array([x["bbox"] for x in g], float)[gi],
                    np.array([x["area"] for x in g], float)[gi], sig)
                np.testing.assert_array_equal(got.reshape(len(d), len(g)), expected)
                pairs += len(got)
    assert pairs > 500


def test_pairwise_sum_is_numpys_sum_of_a_row():
    rng = np.random.default_rng(0)
    for n in [*range(1, 34), 127, 128, 129, 300]:
        a = np.exp(-rng.exponential(3, (200, n)) * rng.choice([1e-3, 1.0, 1e3], (200, 1)))
        np.testing.assert_array_equal(_pairwise_sum(a), [np.sum(row.copy()) for row in a])


# ---- hand-worked corner cases ----------------------------------------------------------------


def _person(ann_id, keypoints, bbox=(100.0, 100.0, 60.0, 120.0), area=5000.0, **extra):
    v = np.array(keypoints[2::3])
    return {"id": ann_id, "image_id": 1, "category_id": 1, "bbox": list(bbox), "area": area,
            "iscrowd": 0, "num_keypoints": int((v > 0).sum()), "keypoints": keypoints, **extra}


def _ground_truth(*anns):
    return {"images": [{"id": 1}, {"id": 2}], "annotations": list(anns),
            "categories": [{"id": 1, "name": "person"}]}


def _points(rng, visible=True):
    xy = np.c_[rng.uniform(100, 160, 17), rng.uniform(100, 220, 17)]
    return np.c_[xy, np.full(17, 2 if visible else 0)].reshape(-1).tolist()


def test_perfect_detection_below_the_top_20_is_not_counted():
    rng = np.random.default_rng(0)
    kps = _points(rng)
    gt = _ground_truth(_person(1, kps))
    far = [{"image_id": 1, "category_id": 1, "keypoints": [500.0, 500.0, 1.0] * 17,
            "score": 0.9} for _ in range(20)]
    perfect = {"image_id": 1, "category_id": 1, "keypoints": kps, "score": 0.9}  # a tie, later
    result = evaluate_keypoints(gt, far + [perfect])
    assert result.metrics["AR"] == 0.0
    _assert_same_as_pycocotools(result, pycocotools_keypoint_eval(gt, far + [perfect]))
    result = evaluate_keypoints(gt, [perfect] + far)  # first among the ties: counted
    assert result.metrics["AP"] == pytest.approx(1.0) and result.metrics["AR"] == 1.0


def test_gt_without_labelled_points_is_ignored_and_absorbs_its_match():
    rng = np.random.default_rng(1)
    unlabelled = [0.0] * 51
    gt = _ground_truth(_person(1, _points(rng)), _person(2, unlabelled, bbox=(300, 300, 50, 80)))
    inside = {"image_id": 1, "category_id": 1, "score": 0.95,  # within the unlabelled gt's box
              "keypoints": np.c_[rng.uniform(300, 350, 17), rng.uniform(300, 380, 17),
                                 np.ones(17)].reshape(-1).tolist()}
    result = evaluate_keypoints(gt, [inside])
    assert result.metrics["AP"] == 0.0 and result.metrics["AR"] == 0.0  # neither TP nor FP
    assert result.precision[:, 0, 0, 0, 0].tolist() == [0.0] * 10
    _assert_same_as_pycocotools(result, pycocotools_keypoint_eval(gt, [inside]))


def test_no_results_scores_zero():
    gt, _, _ = make_keypoint_case(0)
    result = evaluate_keypoints(gt, [])
    assert result.metrics["AP"] == 0.0 and result.metrics["AR"] == 0.0
    assert list(result.metrics) == list(KEYPOINT_STAT_NAMES)


# ---- errors ----------------------------------------------------------------------------------


def test_missing_sigmas_names_the_file_and_k(tmp_path):
    gt, dets, sigmas = make_keypoint_case(2, joints=5)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with pytest.raises(ValueError, match=r"gt\.json: category .* has K=5 keypoints.*--sigmas"):
        evaluate_keypoints(tmp_path / "gt.json", dets)
    with pytest.raises(ValueError, match=r"K=5 keypoints but the sigmas given .* are 4 values"):
        evaluate_keypoints(tmp_path / "gt.json", dets, sigmas=sigmas[:4])


@pytest.mark.parametrize("mutate, message", [
    (lambda gt, d: d[3].__setitem__("keypoints", [1.0, 2.0, 1.0] * 16),
     "dt.json: detection 3: 48 keypoint values, but category"),
    (lambda gt, d: d[0].__setitem__("keypoints", [1.0, "a", 1.0] * 17),
     "dt.json: detection 0: keypoints must be numbers"),
    (lambda gt, d: d[1].pop("keypoints"), "dt.json: detection 1 has no 'keypoints'"),
    (lambda gt, d: gt["annotations"][2].pop("keypoints"),
     "gt.json: annotation 2 has no 'keypoints'"),
    (lambda gt, d: gt["annotations"][1].__setitem__("keypoints", [0.0] * 15),
     "gt.json: annotation 1: 15 keypoint values"),
])
def test_malformed_input_names_the_file_and_entry(tmp_path, mutate, message):
    gt, dets, _ = make_keypoint_case(5)
    mutate(gt, dets)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    with pytest.raises(ValueError, match=message):
        evaluate_keypoints(tmp_path / "gt.json", tmp_path / "dt.json")


# ---- scaledet eval --iou-type keypoints ---------------------------------------------------------


def test_cli_prints_and_writes_the_oks_stats(tmp_path, capsys):
    gt, dets, sigmas = make_keypoint_case(6, joints=5)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    out = tmp_path / "out" / "stats.json"
    code = main(["eval", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"),
                 "--iou-type", "keypoints", "--sigmas", ",".join(map(str, sigmas)),
                 "--json", str(out)])
    assert code == 0
    ev = pycocotools_keypoint_eval(gt, dets, sigmas)
    written = json.loads(out.read_text())
    assert written["stats"] == pytest.approx(ev.stats.tolist(), abs=1e-12)
    assert list(written["metrics"]) == list(KEYPOINT_STAT_NAMES)
    assert set(written["per_category"]) == {c["name"] for c in gt["categories"]}
    printed = capsys.readouterr().out.splitlines()
    assert printed[:10] == evaluate_keypoints(gt, dets, sigmas=sigmas).summary().splitlines()
    assert "maxDets= 20" in printed[0]


def test_cli_missing_sigmas_is_one_line_naming_the_file(tmp_path, capsys):
    gt, dets, _ = make_keypoint_case(6, joints=5)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(copy.deepcopy(dets)))
    code = main(["eval", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"),
                 "--iou-type", "keypoints"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "gt.json" in err and "K=5" in err and "--sigmas" in err


def test_cli_sigmas_need_keypoints(tmp_path, capsys):
    code = main(["eval", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"),
                 "--sigmas", "0.1,0.2"])
    assert code == 2 and "--iou-type keypoints" in capsys.readouterr().err
