"""The verification protocol against a brute-force reading of the LFW rules, the ROC against
``sklearn.metrics.roc_curve``, TAR at FAR on hand-counted cases, and the ``pairs.txt`` reader on
hand-written files (both line forms, one-number header, tabs and spaces, every error with its
``file:line``)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from scaledet.faces import (
    cosine_scores,
    read_pairs,
    roc_curve,
    tar_at_far,
    verification_accuracy,
    verification_report,
)


def _brute_force(scores, same, folds=10):
    """The protocol as written, one candidate threshold at a time."""
    scores, same = list(map(float, scores)), list(map(bool, same))
    n = len(scores)
    bounds = np.array_split(np.arange(n), folds)
    accs, thresholds = [], []
    for k in range(folds):
        held = set(bounds[k].tolist())
        train = [i for i in range(n) if i not in held]
        best_t, best_acc = None, -1.0
        for t in sorted({scores[i] for i in train}):
            acc = sum((scores[i] >= t) == same[i] for i in train) / len(train)
            if acc > best_acc:  # strictly better: ties keep the smaller threshold
                best_t, best_acc = t, acc
        thresholds.append(best_t)
        accs.append(sum((scores[i] >= best_t) == same[i] for i in held) / len(held))
    return float(np.mean(accs)), float(np.std(accs)), thresholds, accs


@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 130))
    same = rng.random(n) < 0.5
    scores = rng.normal(same * rng.uniform(0, 2), 1.0)
    if seed % 2:  # many ties: scores on a coarse grid
        scores = np.round(scores, 1)
    folds = 10 if seed < 6 else int(rng.integers(2, 7))
    r = verification_accuracy(scores, same, folds=folds)
    acc, std, thresholds, accs = _brute_force(scores, same, folds)
    assert r.accuracy == pytest.approx(acc, abs=1e-12)
    assert r.std == pytest.approx(std, abs=1e-12)
    np.testing.assert_array_equal(r.thresholds, thresholds)
    np.testing.assert_allclose(r.fold_accuracies, accs, atol=1e-12)


def test_hand_counted_tie_takes_the_smallest_threshold():
    # 4 folds of 2; on folds 2-4 the thresholds 0.2 and 0.4 are equally good: 0.2 is taken
    scores = [0.9, 0.1, 0.8, 0.2, 0.4, 0.3, 0.7, 0.1]
    same = [1, 0, 1, 0, 0, 1, 1, 0]
    r = verification_accuracy(scores, same, folds=4)
    assert r.thresholds[0] == 0.3
    assert _brute_force(scores, same, 4)[2] == list(r.thresholds)


def test_separable_scores_give_perfect_accuracy():
    same = np.array([True, False] * 30)
    r = verification_accuracy(np.where(same, 0.9, 0.1), same)
    assert r.accuracy == 1.0 and r.std == 0.0 and (r.thresholds == 0.9).all()


@pytest.mark.parametrize("seed", range(5))
def test_roc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    same = rng.random(200) < 0.4
    scores = np.round(rng.normal(same * 1.0, 1.0), 1 + seed % 2)
    fpr, tpr, thr = roc_curve(scores, same)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(same, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])
    assert thr[0] == np.inf
    assert verification_report(scores, same, folds=5).auc == pytest.approx(
        roc_auc_score(same, scores), abs=1e-12)


def test_tar_at_far_hand_counted():
    # 5 different pairs with scores 0.1..0.5; 4 same pairs
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.35, 0.45, 0.6, 0.7]
    same = [0, 0, 0, 0, 0, 1, 1, 1, 1]
    t = tar_at_far(scores, same, 0.2)  # one false accept allowed: threshold 0.45
    assert (t.tar, t.threshold, t.achieved_far, t.resolved) == (0.75, 0.45, 0.2, True)
    t = tar_at_far(scores, same, 0.0)  # none: accept above 0.5 only
    assert (t.tar, t.threshold) == (0.5, 0.6)
    t = tar_at_far(scores, same, 1e-3)  # unresolvable with 5 different pairs: as FAR 0
    assert (t.tar, t.resolved) == (0.5, False)
    with pytest.raises(ValueError, match="both"):
        tar_at_far([0.1, 0.2], [1, 1], 0.1)


def test_report_numbers():
    rng = np.random.default_rng(0)
    same = rng.random(600) < 0.5
    scores = rng.normal(same * 2.0, 1.0)
    d = verification_report(scores, same).as_dict()
    assert set(d) >= {"accuracy", "accuracy_std", "auc", "tar@far=0.001", "tar@far=0.0001"}
    assert 0.75 < d["accuracy"] < 0.9 and d["num_same"] + d["num_different"] == 600


def test_cosine_scores():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosine_scores(a, b), [1.0, 0.0, 0.0])


def test_input_errors():
    with pytest.raises(ValueError, match="one length"):
        verification_accuracy([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="finite"):
        verification_accuracy([0.1, np.nan, 0.3], [1, 0, 1], folds=2)
    with pytest.raises(ValueError, match="folds"):
        verification_accuracy([0.1, 0.2], [1, 0], folds=3)


# ---- pairs.txt ---------------------------------------------------------------------------

LFW_STYLE = """2\t2
Aaron_Peirsol\t1\t2
Abdullah\t2\t4
Zico\t1\t3
Abdel_Madi_Shabneh\t1\tDean_Barker\t1
Abdullah\t3\tZico\t1

Alice 1 2
Bob   1    3
Carol 1 Dave 2
Eve 10 Frank 11
"""


def test_reads_both_line_forms_tabs_spaces_and_blank_lines(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(LFW_STYLE.replace("Abdullah\t2\t4\n", ""), encoding="utf-8")
    pf = read_pairs(path)
    assert (pf.folds, pf.per_fold, len(pf.pairs)) == (2, 2, 8)
    first, mism = pf.pairs[0], pf.pairs[2]
    assert (first.name1, first.n1, first.name2, first.n2, first.same, first.line) == (
        "Aaron_Peirsol", 1, "Aaron_Peirsol", 2, True, 2)
    assert (mism.name1, mism.n1, mism.name2, mism.n2, mism.same) == (
        "Abdel_Madi_Shabneh", 1, "Dean_Barker", 1, False)
    assert pf.pairs[-1] == type(mism)("Eve", 10, "Frank", 11, 10)
    assert pf.same.tolist() == [True, True, False, False] * 2


def test_one_number_header(tmp_path):
    path = tmp_path / "pairsDevTrain.txt"
    path.write_text("1\nA 1 2\nA 1 B 1\n", encoding="utf-8")
    pf = read_pairs(path)
    assert (pf.folds, pf.per_fold, pf.same.tolist()) == (1, 1, [True, False])


@pytest.mark.parametrize(("text", "message"), [
    ("", r"empty pairs file"),
    ("ten 300\n", r"pairs\.txt:1: header"),
    ("1 1 1\n", r"pairs\.txt:1: header"),
    ("1 1\nA 1\nA 1 B 2\n", r"pairs\.txt:2: expected 'name n1 n2'"),
    ("1 1\nA 1 x\nA 1 B 2\n", r"pairs\.txt:2: image numbers"),
    ("1 1\nA 0 1\nA 1 B 2\n", r"pairs\.txt:2: image numbers"),
    ("1 1\nA 1 2\nA 1 A 2\n", r"pairs\.txt:3: a mismatched pair names one person"),
    ("1 1\nA 1 2\nA 1 B 2\nC 1 2\n", r"pairs\.txt:1: the header promises 2 pairs"),
    ("\n\n1 1\nA 1 B 2\nA 1 2\n", r"pairs\.txt:4: fold 1 should hold 1 matched"),
    ("2 1\nA 1 2\nB 1 C 1\nD 1 E 1\nF 1 2\n", r"pairs\.txt:4: fold 2 should hold 1 matched"),
])
def test_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "pairs.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_pairs(path)


def test_image_paths_lfw_layout(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("1 1\nA 1 2\nA 1 B 3\n", encoding="utf-8")
    for rel in ("A/A_0001.jpg", "A/A_0002.png", "B/B_0003.jpg"):
        (tmp_path / "img" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / rel).write_bytes(b"")
    paths = read_pairs(path).image_paths(tmp_path / "img")
    assert [(a.name, b.name) for a, b in paths] == [("A_0001.jpg", "A_0002.png"),
                                                     ("A_0001.jpg", "B_0003.jpg")]
    (tmp_path / "img" / "B" / "B_0003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"pairs\.txt:3: no image .*B_0003"):
        read_pairs(path).image_paths(tmp_path / "img")
