"""postprocess: threshold, per-level top-k, class-aware NMS variants, max_det, on hand-built
predictions."""

import math

import torch

from scaledet.models import PostProcess, postprocess

A = [0.0, 0.0, 10.0, 10.0]
A2 = [0.5, 0.0, 10.5, 10.0]  # IoU with A = 9.5 / 10.5 = 0.905
FAR = [50.0, 50.0, 60.0, 60.0]


def _run(boxes, scores, sizes, **cfg):
    out = postprocess(torch.tensor([boxes]), torch.tensor([scores]), sizes, PostProcess(**cfg))
    return out[0]


def test_threshold_and_per_level_topk():
    # level 0: 3 locations, level 1: 2 locations; 2 classes
    boxes = [A, FAR, [20.0, 0, 30, 10], [0, 20.0, 10, 30], [40.0, 0, 50, 10]]
    scores = [[0.9, 0.01], [0.3, 0.6], [0.2, 0.04], [0.05, 0.5], [0.7, 0.8]]
    out = _run(boxes, scores, [3, 2], score_thresh=0.1, topk_per_level=2, nms="none")
    # level 0 above 0.1: 0.9, 0.3, 0.6, 0.2 -> best two 0.9 (loc 0, c0), 0.6 (loc 1, c1);
    # level 1 above 0.1: 0.5, 0.7, 0.8 -> 0.8 (loc 4, c1), 0.7 (loc 4, c0)
    assert out["scores"].tolist() == torch.tensor([0.9, 0.8, 0.7, 0.6]).tolist()
    assert out["labels"].tolist() == [0, 1, 0, 1]
    assert out["boxes"].tolist() == [A, [40.0, 0, 50, 10], [40.0, 0, 50, 10], FAR]


def test_nms_is_class_aware():
    boxes = [A, A2, A2]
    scores = [[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]]
    out = _run(boxes, scores, [3], nms="hard", nms_iou=0.5)
    assert out["labels"].tolist() == [0, 1]  # A2 of class 0 suppressed, class 1 kept
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.7]))
    out = _run(boxes, scores, [3], nms="diou", nms_iou=0.5)
    assert out["labels"].tolist() == [0, 1]


def test_soft_nms_decays_instead_of_dropping():
    boxes, scores = [A, A2], [[0.9], [0.8]]
    iou = 9.5 / 10.5
    out = _run(boxes, scores, [2], nms="soft-gaussian", soft_sigma=0.5)
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.8 * math.exp(-(iou**2) / 0.5)]))
    out = _run(boxes, scores, [2], nms="soft-linear", nms_iou=0.3)
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.8 * (1 - iou)]))


def test_max_det_keeps_the_best():
    boxes = [[10.0 * i, 0, 10.0 * i + 5, 5] for i in range(6)]
    scores = [[0.1 * (i + 1)] for i in range(6)]
    out = _run(boxes, scores, [6], max_det=2)
    torch.testing.assert_close(out["scores"], torch.tensor([0.6, 0.5]))
    assert out["boxes"].tolist() == [boxes[5], boxes[4]]


def test_nothing_above_threshold_gives_empty_outputs():
    out = _run([A], [[0.01, 0.02]], [1])
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,)
    assert out["labels"].dtype == torch.int64
