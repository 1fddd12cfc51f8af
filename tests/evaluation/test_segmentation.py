"""SegmentationMetrics against a brute-force numpy computation and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scaledet.evaluation import SegmentationMetrics


def _brute_force(preds, targets, C, ignore):
    """Per-pixel loops over the whole data set, no confusion matrix."""
    p = np.concatenate([x.ravel() for x in preds])
    t = np.concatenate([x.ravel() for x in targets])
    keep = t != ignore
    p, t = p[keep], t[keep]
    pa = float(np.mean(p == t))
    accs, ious, fw = [], [], 0.0
    for c in range(C):
        in_t, in_p = t == c, p == c
        if in_t.any():
            accs.append(np.sum(in_t & in_p) / np.sum(in_t))
        union = np.sum(in_t | in_p)
        if union:
            iou = np.sum(in_t & in_p) / union
            ious.append(iou)
            fw += np.sum(in_t) / len(t) * iou
    return pa, float(np.mean(accs)), float(np.mean(ious)), fw


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_over_batches(seed):
    rng = np.random.default_rng(seed)
    C = 6
    metrics = SegmentationMetrics(C, ignore_index=255)
    preds, targets = [], []
    for _ in range(3):
        t = rng.integers(0, C - 1, (2, 9, 7))  # class C-1 never in the target
        t[rng.random(t.shape) < 0.1] = 255
        p = np.where(rng.random(t.shape) < 0.6, t, rng.integers(0, C, t.shape))
        p = np.where(p == 255, 0, p)
        if seed % 2:  # scores instead of ids
            scores = rng.random((2, C, 9, 7))
            scores[np.arange(2)[:, None, None], p, np.arange(9)[:, None], np.arange(7)] += 2
            metrics.update(torch.from_numpy(scores), torch.from_numpy(t))
        else:
            metrics.update(torch.from_numpy(p), torch.from_numpy(t))
        preds.append(p)
        targets.append(t)
    out = metrics.compute()
    expected = _brute_force(preds, targets, C, 255)
    got = (out["pixel_accuracy"], out["mean_pixel_accuracy"], out["mean_iou"], out["fw_iou"])
    assert got == pytest.approx(expected, abs=1e-12)
    assert math.isnan(out["class_accuracy"][C - 1])


def test_hand_worked_example():
    # target  [[0, 0, 1, 1]]   pred [[0, 1, 1, 1]]  plus one ignored pixel
    target = torch.tensor([[[0, 0, 1, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1, 0]]])
    m = SegmentationMetrics(3)
    m.update(pred, target)
    out = m.compute()
    assert out["pixel_accuracy"] == pytest.approx(3 / 4)
    assert out["mean_pixel_accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # class 2 absent
    # IoU_0 = 1 / 2, IoU_1 = 2 / 3
    assert out["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert out["fw_iou"] == pytest.approx(0.5 * 1 / 2 + 0.5 * 2 / 3)
    assert out["iou"][:2].tolist() == pytest.approx([0.5, 2 / 3])
    assert math.isnan(out["iou"][2])
    assert m.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_perfect_prediction_and_reset():
    t = torch.randint(0, 4, (2, 5, 5), generator=torch.Generator().manual_seed(0))
    m = SegmentationMetrics(4, ignore_index=None)
    m.update(t, t)
    out = m.compute()
    assert out["pixel_accuracy"] == out["mean_iou"] == 1.0
    assert out["fw_iou"] == pytest.approx(1.0)  # a sum of class frequencies
    m.reset()
    assert math.isnan(m.compute()["pixel_accuracy"])


def test_bad_input():
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="same shape"):
        m.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="target has class ids outside 0..2"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="pred has class ids outside"):
        m.update(torch.full((1, 2, 2), 3), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        m.update(torch.zeros(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
