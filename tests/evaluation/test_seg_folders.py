"""evaluate_label_folders and `scaledet eval --seg` on small PNG folders written per test.

The numbers are checked against per-pixel loops (no confusion matrix, no bincount) and a
hand-worked example; problems (missing, mis-sized, unreadable predictions) must be named and
counted, not crash the run.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from scaledet.evaluation.segmentation import evaluate_label_folders


def _write(folder, name, labels):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(labels, dtype=np.uint8)).save(folder / name)


def _brute_force(pairs, C, ignore):
    """PA, MPA, MIoU, FWIoU and per-class IoU by looping over every pixel of every image.

    A prediction pixel that is no class id counts as wrong for its ground-truth class and as a
    prediction of no class.
    """
    tp, gt_n, pred_n = [0] * C, [0] * C, [0] * C
    for gt, pred in pairs:
        for t, p in zip(np.asarray(gt).ravel().tolist(), np.asarray(pred).ravel().tolist()):
            if t == ignore:
                continue
            gt_n[t] += 1
            if p < C:
                pred_n[p] += 1
                tp[t] += p == t
    N = sum(gt_n)
    accs = [tp[c] / gt_n[c] for c in range(C) if gt_n[c]]
    ious = [tp[c] / (gt_n[c] + pred_n[c] - tp[c]) if gt_n[c] + pred_n[c] else math.nan
            for c in range(C)]
    present = [x for x in ious if x == x]
    fw = sum(gt_n[c] / N * ious[c] for c in range(C) if ious[c] == ious[c])
    return sum(tp) / N, sum(accs) / len(accs), sum(present) / len(present), fw, ious, gt_n


@pytest.mark.parametrize("seed", range(3))
def test_matches_per_pixel_loops(tmp_path, seed):
    rng = np.random.default_rng(seed)
    C, pairs = 5, []
    for i in range(4):
        h, w = rng.integers(3, 9, 2)
        gt = rng.integers(0, C - 1, (h, w))  # class C-1 never in the ground truth
        gt[rng.random((h, w)) < 0.15] = 255
        pred = np.where(rng.random((h, w)) < 0.6, gt, rng.integers(0, C, (h, w)))
        pred[rng.random((h, w)) < 0.05] = 255  # left unlabelled by the predictor
        _write(tmp_path / "gt", f"im{i}.png", gt)
        _write(tmp_path / "pred", f"im{i}.png", pred)
        pairs.append((gt, pred))
    res = evaluate_label_folders(tmp_path / "gt", tmp_path / "pred", C, 255)
    pa, mpa, miou, fw, ious, gt_n = _brute_force(pairs, C, 255)
    m = res.metrics
    got = (m["pixel_accuracy"], m["mean_pixel_accuracy"], m["mean_iou"], m["fw_iou"])
    assert got == pytest.approx((pa, mpa, miou, fw), abs=1e-12)
    assert m["iou"].tolist() == pytest.approx(ious, abs=1e-12, nan_ok=True)
    assert res.gt_pixels.tolist() == gt_n
    assert (res.num_images, res.num_scored, res.problems) == (4, 4, [])


def test_hand_worked_example_with_palette_png(tmp_path):
    # gt [[0, 0, 1, 1, 255]] pred [[0, 1, 1, 1, 0]]: IoU_0 = 1/2, IoU_1 = 2/3, class 2 absent
    _write(tmp_path / "gt", "a.png", [[0, 0, 1, 1, 255]])
    img = Image.fromarray(np.array([[0, 1, 1, 1, 0]], dtype=np.uint8), mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    (tmp_path / "pred").mkdir()
    img.save(tmp_path / "pred" / "a.png")
    res = evaluate_label_folders(tmp_path / "gt", tmp_path / "pred", 3)
    m = res.metrics
    assert m["pixel_accuracy"] == pytest.approx(3 / 4)
    assert m["mean_pixel_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["fw_iou"] == pytest.approx(0.5 * 1 / 2 + 0.5 * 2 / 3)
    assert res.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def _problem_folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    a = np.tile(np.array([0, 1, 1, 2], dtype=np.uint8), (4, 1))
    _write(gt, "a.png", a)
    _write(pred, "a.png", a)  # perfect
    _write(gt, "b.png", np.zeros((64, 64)))
    _write(pred, "b.png", np.zeros((48, 64)))  # 64 wide, 48 high
    _write(gt, "c.png", np.zeros((4, 4)))  # no prediction
    _write(gt, "d.png", np.ones((4, 4)))
    (pred / "d.png").write_bytes(b"not a png")
    _write(gt, "e.png", np.ones((2, 2)))
    Image.new("RGB", (2, 2)).save(pred / "e.png")
    _write(pred, "extra.png", np.ones((4, 4)))  # no ground truth
    return gt, pred


def test_missing_mis_sized_and_unreadable_predictions_are_named_and_counted(tmp_path):
    gt, pred = _problem_folders(tmp_path)
    res = evaluate_label_folders(gt, pred, 3)
    problems = {p.path: p.problem for p in res.problems}
    assert problems[str(pred / "b.png")] == f"64x48 but ground truth {gt / 'b.png'} is 64x64"
    assert problems[str(pred / "c.png")].startswith("missing")
    assert problems[str(pred / "d.png")].startswith("unreadable")
    assert "RGB" in problems[str(pred / "e.png")]
    assert (res.num_images, res.num_scored, res.num_no_prediction) == (5, 1, 4)
    assert res.unmatched == [str(pred / "extra.png")]
    assert res.metrics["pixel_accuracy"] == 1.0  # only a.png was scored
    assert res.gt_pixels.tolist() == [4, 8, 4]
    assert "4 of 5 ground-truth images had no usable prediction" in res.problems_report()


def test_cli_prints_metrics_table_and_problems(tmp_path, capsys):
    from scaledet.cli import main

    gt, pred = _problem_folders(tmp_path)
    out_json = tmp_path / "m.json"
    code = main(["eval", "--seg", "--gt", str(gt), "--pred", str(pred), "--num-classes", "4",
                 "--json", str(out_json)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"{pred / 'b.png'}: 64x48 but ground truth {gt / 'b.png'} is 64x64" in printed
    assert "4 of 5 ground-truth images had no usable prediction" in printed
    for name in ("PA ", "MPA", "MIoU", "FWIoU"):
        assert name in printed
    table = printed.split("GT pixels")[1].splitlines()[1:5]
    assert [row.split() for row in table] == [["0", "1.0000", "1.0000", "4"],
                                              ["1", "1.0000", "1.0000", "8"],
                                              ["2", "1.0000", "1.0000", "4"],
                                              ["3", "-", "-", "0"]]
    data = json.loads(out_json.read_text())
    assert data["metrics"]["mean_iou"] == 1.0
    assert data["per_class"][3] == {"class": 3, "iou": None, "accuracy": None, "gt_pixels": 0}
    assert len(data["problems"]) == 4 and data["images_scored"] == 1


def test_cli_exit_1_when_nothing_scored(tmp_path, capsys):
    from scaledet.cli import main

    _write(tmp_path / "gt", "a.png", np.zeros((4, 4)))
    _write(tmp_path / "pred", "a.png", np.zeros((4, 5)))
    code = main(["eval", "--seg", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--num-classes", "2"])
    out = capsys.readouterr().out
    assert code == 1 and "no image could be scored" in out and "1 of 1" in out


@pytest.mark.parametrize("side", ["gt", "pred"])
def test_out_of_range_value_names_file_and_value(tmp_path, side):
    labels = {"gt": np.zeros((3, 3)), "pred": np.zeros((3, 3))}
    labels[side][1, 2] = 7
    for s in ("gt", "pred"):
        _write(tmp_path / s, "a.png", labels[s])
    with pytest.raises(ValueError, match=r"a\.png: pixel value 7 at x=2, y=1 is not a class id"):
        evaluate_label_folders(tmp_path / "gt", tmp_path / "pred", 3)


def test_ignore_index_in_prediction_is_allowed_and_counts_as_wrong(tmp_path):
    _write(tmp_path / "gt", "a.png", [[0, 1]])
    _write(tmp_path / "pred", "a.png", [[0, 255]])
    res = evaluate_label_folders(tmp_path / "gt", tmp_path / "pred", 2)
    assert res.metrics["pixel_accuracy"] == 0.5
    assert res.metrics["iou"][1] == 0.0


def test_bad_folders(tmp_path, capsys):
    from scaledet.cli import main

    _write(tmp_path / "gt", "a.png", np.zeros((2, 2)))
    (tmp_path / "jpgs").mkdir()
    (tmp_path / "jpgs" / "a.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="nope"):
        evaluate_label_folders(tmp_path / "gt", tmp_path / "nope", 2)
    with pytest.raises(ValueError, match=r"jpgs has no \.png label images \(found \.jpg"):
        evaluate_label_folders(tmp_path / "gt", tmp_path / "jpgs", 2)
    code = main(["eval", "--seg", "--gt", str(tmp_path / "empty"), "--pred", str(tmp_path / "gt"),
                 "--num-classes", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "empty does not exist" in err
    assert main(["eval", "--gt", "gt.json"]) == 2  # box mode still needs --dt
    assert "--dt is required" in capsys.readouterr().err
