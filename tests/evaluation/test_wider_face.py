"""The WIDER FACE protocol against a brute-force transcription of the official MATLAB loops
(``evaluation.m``: per image, per detection, per threshold), a hand-worked example, the +1 pixel
IoU, the official keep-list .mat layout, the submission folder, landmark NME and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from scaledet.cli import main
from scaledet.evaluation.wider_face import (
    derive_setting_lists,
    evaluate_wider,
    landmark_nme,
    read_wider_predictions,
    read_wider_setting_lists,
    wider_ground_truth,
    wider_iou,
)

# ---- brute force: the official loops, written out -------------------------------------------


def _overlap(gt_xyxy, b):
    """``boxoverlap.m``: IoU of each ground-truth box with one box, inclusive pixels."""
    out = []
    for a in gt_xyxy:
        w = min(a[2], b[2]) - max(a[0], b[0]) + 1
        h = min(a[3], b[3]) - max(a[1], b[1]) + 1
        if w <= 0 or h <= 0:
            out.append(0.0)
            continue
        inter = w * h
        union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
        out.append(inter / (union - inter))
    return out


def brute_force(gt_xywh: dict, preds: dict, keep_lists: dict, iou_thresh=0.5, n=1000):
    """AP per setting, loop by loop as the MATLAB code does (scores normalised first)."""
    all_scores = [s for p in preds.values() for s in p[:, 4]]
    lo, hi = min(all_scores), max(all_scores)
    norm = {}
    for key, p in preds.items():
        p = p.copy()
        p[:, 4] = [(s - lo) / (hi - lo) if hi > lo else 1.0 for s in p[:, 4]]
        order = sorted(range(len(p)), key=lambda i: -p[i, 4])  # Python's sort is stable
        norm[key] = p[order]
    aps = {}
    for setting, lists in keep_lists.items():
        curve = [[0.0, 0.0] for _ in range(n)]
        count_face = 0
        for key, gt in gt_xywh.items():
            keep = lists.get(key, [])
            count_face += len(keep)
            pred = norm.get(key, np.zeros((0, 5)))
            if len(gt) == 0 or len(pred) == 0:
                continue
            ignore = [0] * len(gt)
            for k in keep:
                ignore[k] = 1
            gt_xyxy = [[x, y, x + w, y + h] for x, y, w, h in gt]
            recall_list = [0] * len(gt)
            proposal_list = [1] * len(pred)
            pred_recall = [0] * len(pred)
            for h in range(len(pred)):
                x, y, w, hh = pred[h, :4]
                ov = _overlap(gt_xyxy, [x, y, x + w, y + hh])
                idx = ov.index(max(ov))
                if ov[idx] >= iou_thresh:
                    if ignore[idx] == 0:
                        recall_list[idx] = -1
                        proposal_list[h] = -1
                    elif recall_list[idx] == 0:
                        recall_list[idx] = 1
                pred_recall[h] = recall_list.count(1)
            for t in range(1, n + 1):
                thresh = 1 - t / n
                above = [i for i in range(len(pred)) if pred[i, 4] >= thresh]
                if above:
                    r = above[-1]
                    curve[t - 1][0] += proposal_list[: r + 1].count(1)
                    curve[t - 1][1] += pred_recall[r]
        if count_face == 0:
            aps[setting] = math.nan
            continue
        prec = [c[1] / c[0] if c[0] else math.nan for c in curve]
        rec = [c[1] / count_face for c in curve]
        mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
        for i in range(len(mpre) - 2, -1, -1):  # MATLAB's max skips NaN
            a, b = mpre[i], mpre[i + 1]
            mpre[i] = b if math.isnan(a) else a if math.isnan(b) else max(a, b)
        aps[setting] = sum((mrec[i] - mrec[i - 1]) * mpre[i]
                           for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
    return aps


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    gt, preds, lists = {}, {}, {"easy": {}, "medium": {}, "hard": {}}
    for i in range(int(rng.integers(2, 6))):
        key = f"{i % 2}--Event/img_{i}"
        g = int(rng.integers(0, 6))
        xy = rng.integers(0, 200, (g, 2)).astype(float)
        wh = rng.integers(2, 60, (g, 2)).astype(float)
        gt[key] = np.concatenate([xy, wh], axis=1)
        dets = []
        for box in gt[key]:
            for _ in range(int(rng.integers(0, 3))):  # hits, near misses and duplicates
                jitter = rng.integers(-4, 5, 4)
                dets.append([*(box + jitter), 0.0])
        for _ in range(int(rng.integers(0, 4))):  # false positives
            dets.append([*rng.integers(0, 200, 2), *rng.integers(2, 60, 2), 0.0])
        if dets:
            d = np.array(dets, dtype=float)
            d[:, 2:4] = np.clip(d[:, 2:4], 1, None)
            d[:, 4] = rng.choice([0.1, 0.35, 0.5, 0.8, 0.95], len(d)) if seed % 2 else \
                rng.uniform(-3, 7, len(d))  # ties (stable order matters) or raw logits
            preds[key] = d
        hard = np.flatnonzero(rng.random(g) < 0.8)
        medium = hard[rng.random(len(hard)) < 0.7]
        lists["hard"][key], lists["medium"][key] = hard, medium
        lists["easy"][key] = medium[rng.random(len(medium)) < 0.6]
    if not preds:
        preds["0--Event/img_0"] = np.array([[0, 0, 5, 5, 0.5]])
    return gt, preds, lists


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_brute_force_official_loops(seed):
    gt_xywh, preds, lists = _random_case(seed)
    gt = {k: (np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1), np.zeros(len(b), bool))
          for k, b in gt_xywh.items()}
    expected = brute_force(gt_xywh, preds, lists)
    got = evaluate_wider(gt, preds, lists)
    for setting in lists:
        if math.isnan(expected[setting]) or sum(len(v) for v in lists[setting].values()) == 0:
            assert math.isnan(got[setting])
        else:
            assert got[setting] == pytest.approx(expected[setting], abs=1e-12), setting


def test_hand_worked_example():
    """One image, faces A and B kept, C ignored. Detections, raw score -> normalised
    ((s - 0.5) / 0.4): d1 0.9 -> 1 on A; d2 0.8 -> 0.75 on C (ignored: no proposal);
    d3 0.7 -> 0.5 on nothing (false positive); d4 0.6 -> 0.25 on B; d5 0.5 -> 0 on A again
    (duplicate: false positive).

    Thresholds and (proposals, found): t > 0.75: d1 (1, 1); down to 0.5: d2 adds nothing,
    (1, 1) until d3 at t <= 0.5: (2, 1); d4 at t <= 0.25: (3, 2); d5 at t = 0: (4, 2).
    Precision / recall points: 1 / 0.5, 0.5 / 0.5, 2/3 / 1, 0.5 / 1. Envelope: 1 at recall
    0.5, 2/3 at recall 1. AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    """
    gt = {"0--E/x": (np.array([[10, 10, 30, 30], [100, 10, 120, 30], [200, 10, 220, 30.0]]),
                     np.zeros(3, bool))}
    preds = {"0--E/x": np.array([[10, 10, 20, 20, 0.9], [200, 10, 20, 20, 0.8],
                                 [300, 300, 20, 20, 0.7], [100, 10, 20, 20, 0.6],
                                 [11, 10, 20, 20, 0.5]])}
    lists = {s: {"0--E/x": np.array([0, 1])} for s in ("easy", "medium", "hard")}
    aps = evaluate_wider(gt, preds, lists)
    assert aps["hard"] == pytest.approx(5 / 6, abs=1e-12)
    # with C kept too, d2 is a true positive: (proposals, found) (1, 1), (2, 2), (3, 2),
    # (4, 3), (5, 3) of 3 faces; envelope 1 up to recall 2/3, then 3/4: AP = 2/3 + 1/4 = 11/12
    lists["hard"]["0--E/x"] = np.array([0, 1, 2])
    assert evaluate_wider(gt, preds, lists)["hard"] == pytest.approx(11 / 12, abs=1e-12)


def test_iou_uses_inclusive_pixels():
    """x y w h = 0 0 10 10 against 0 0 21 10: inclusive pixels give 11*11 / (22*11) = 0.5
    (a match); continuous coordinates would give 100 / 210 < 0.5."""
    iou = wider_iou(np.array([[0, 0, 21, 10.0]]), np.array([[0, 0, 10, 10.0]]))
    assert iou[0, 0] == 0.5
    gt = {"0--E/x": (np.array([[0, 0, 10, 10.0]]), np.zeros(1, bool))}
    lists = {"hard": {"0--E/x": np.array([0])}}
    assert evaluate_wider(gt, {"0--E/x": np.array([[0, 0, 21, 10, 1.0]])}, lists)["hard"] == 1.0
    assert evaluate_wider(gt, {"0--E/x": np.array([[0, 0, 22, 10, 1.0]])}, lists)["hard"] == 0.0
    assert wider_iou(np.array([[0, 0, 5, 5.0]]), np.array([[7, 0, 9, 5.0]]))[0, 0] == 0.0


def _cell(items) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def test_official_mat_lists_and_gt(tmp_path):
    """The layout of eval_tools/ground_truth: cells per event of per-image 1-based indices."""
    events = ["0--Parade", "1--Handshaking"]
    files = [["a", "b"], ["c"]]
    boxes = [[np.array([[10, 10, 20, 20], [50, 50, 8, 8]]), np.zeros((0, 4))],
             [np.array([[5, 5, 30, 30]])]]
    keep = {"easy": [[np.array([[1]]), np.zeros((0, 1))], [np.array([[1]])]],
            "medium": [[np.array([[1]]), np.zeros((0, 1))], [np.array([[1]])]],
            "hard": [[np.array([[1], [2]]), np.zeros((0, 1))], [np.array([[1]])]]}
    common = {"event_list": _cell([np.array([e]) for e in events]),
              "file_list": _cell([_cell([np.array([f]) for f in fs]) for fs in files])}
    savemat(tmp_path / "wider_face_val.mat",
            {**common, "face_bbx_list": _cell([_cell(b) for b in boxes])})
    for setting, lists in keep.items():
        savemat(tmp_path / f"wider_{setting}_val.mat",
                {"gt_list": _cell([_cell(x) for x in lists])})  # names from wider_face_val.mat
    lists = read_wider_setting_lists(tmp_path)
    assert lists["hard"]["0--Parade/a"].tolist() == [0, 1]
    assert lists["easy"]["0--Parade/a"].tolist() == [0]
    assert lists["easy"]["0--Parade/b"].tolist() == []
    gt = wider_ground_truth(tmp_path / "wider_face_val.mat")
    np.testing.assert_array_equal(gt["1--Handshaking/c"][0], [[5, 5, 35, 35]])
    preds = {"0--Parade/a": np.array([[10, 10, 20, 20, 0.9], [50, 50, 8, 8, 0.8]]),
             "1--Handshaking/c": np.array([[5, 5, 30, 30, 0.7]])}
    aps = evaluate_wider(tmp_path, preds, tmp_path)
    assert aps == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    # the small face found but not kept in easy: ignored, not a false positive
    preds["0--Parade/a"][1, 4] = 0.95
    assert evaluate_wider(tmp_path, preds, tmp_path)["easy"] == 1.0


def test_derived_lists_by_height_and_invalid(tmp_path):
    text = ("0--E/a.jpg\n4\n0 0 60 60 0 0 0 0 0 0\n0 0 40 40 0 0 0 0 0 0\n"
            "0 0 12 12 0 0 0 0 0 0\n0 0 80 80 0 0 0 1 0 0\n")
    path = tmp_path / "wider_face_val_bbx_gt.txt"
    path.write_text(text)
    lists = derive_setting_lists(wider_ground_truth(path))
    assert lists["easy"]["0--E/a"].tolist() == [0]
    assert lists["medium"]["0--E/a"].tolist() == [0, 1]
    assert lists["hard"]["0--E/a"].tolist() == [0, 1, 2]  # the invalid face is never kept


def _write_preds(folder: Path, key: str, rows: list, count: int | None = None) -> None:
    path = folder / f"{key}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(" ".join(str(v) for v in r) + "\n" for r in rows)
    path.write_text(f"{key.split('/')[1]}.jpg\n{len(rows) if count is None else count}\n{body}")


def test_prediction_folder_and_its_errors(tmp_path):
    _write_preds(tmp_path / "p", "0--E/a", [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.25]])
    _write_preds(tmp_path / "p", "0--E/b", [])
    preds = read_wider_predictions(tmp_path / "p")
    np.testing.assert_array_equal(preds["0--E/a"], [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.25]])
    assert preds["0--E/b"].shape == (0, 5)
    _write_preds(tmp_path / "q", "0--E/a", [[1, 2, 3, 4, 0.5]], count=2)
    with pytest.raises(ValueError, match=r"0--E/a\.txt:2: count says 2 detections but 1"):
        read_wider_predictions(tmp_path / "q")
    _write_preds(tmp_path / "r", "0--E/a", [[1, 2, 3, 4]])
    with pytest.raises(ValueError, match=r"0--E/a\.txt:3: expected x y w h score"):
        read_wider_predictions(tmp_path / "r")


def test_landmark_nme_by_hand():
    gt = np.array([[[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]]], dtype=float)
    pred = gt.copy()
    pred[0, 2] += [3, 4]  # nose 5 px off
    pred[0, 4] += [0, 10]  # right mouth corner 10 px off, but not labelled
    visible = np.array([[True, True, True, True, False]])
    # inter-ocular distance 20: (0 + 0 + 5 + 0) / 4 labelled points / 20 = 0.0625
    assert landmark_nme(pred, gt, visible) == pytest.approx(0.0625)
    # box 40 x 10: sqrt(400) = 20 as well; a 2nd face without both eyes counts only by box
    pred2 = np.concatenate([pred, gt + 2])
    gt2 = np.concatenate([gt, gt])
    vis2 = np.array([[True, True, True, True, False], [False, True, True, True, True]])
    boxes = np.array([[0, 0, 40, 10], [0, 0, 10, 10.0]])
    assert landmark_nme(pred2, gt2, vis2) == pytest.approx(0.0625)
    assert landmark_nme(pred2, gt2, vis2, norm="box", boxes=boxes) == pytest.approx(
        (0.0625 + math.sqrt(8) / 10) / 2)
    assert math.isnan(landmark_nme(pred, gt, np.zeros((1, 5), bool)))
    with pytest.raises(ValueError, match="norm"):
        landmark_nme(pred, gt, visible, norm="pupil")


def test_eval_wider_command(tmp_path, capsys):
    gt_text = ("0--E/a.jpg\n2\n10 10 60 60 0 0 0 0 0 0\n100 10 40 40 0 0 0 0 0 0\n"
               "0--E/b.jpg\n1\n5 5 20 20 0 0 0 0 0 0\n")
    (tmp_path / "wider_face_val_bbx_gt.txt").write_text(gt_text)
    _write_preds(tmp_path / "pred", "0--E/a", [[10, 10, 60, 60, 0.9], [300, 300, 9, 9, 0.8],
                                               [100, 10, 40, 40, 0.3]])
    _write_preds(tmp_path / "pred", "0--E/b", [[5, 5, 20, 20, 0.6]])
    out = tmp_path / "wider.json"
    code = main(["eval", "--wider", "--gt", str(tmp_path / "wider_face_val_bbx_gt.txt"),
                 "--dt", str(tmp_path / "pred"), "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Easy    AP:" in printed and "not the official numbers" in printed
    saved = json.loads(out.read_text())
    expected = evaluate_wider(tmp_path / "wider_face_val_bbx_gt.txt", tmp_path / "pred")
    for setting in ("easy", "medium", "hard"):
        assert saved[setting] == pytest.approx(expected[setting])
    # easy keeps the 60-px face only: found first, so AP 1; hard: 3 faces, an FP in between
    assert saved["easy"] == 1.0 and saved["num_faces"] == {"easy": 1, "medium": 2, "hard": 3}
    assert saved["hard"] < 1.0
    assert main(["eval", "--wider", "--gt", str(tmp_path), "--dt", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err
