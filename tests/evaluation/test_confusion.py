"""Detection confusion matrix: a hand-worked image, invariants on random ones, IoU vs ops."""

import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.evaluation.confusion import ConfusionMatrix, iou_matrix
from scaledet.ops import box_iou


def test_hand_worked_image():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 80, 80]]
    gt_labels, crowd = [0, 1, 1, 1], [False, False, False, True]
    dets = [([0, 0, 10, 10], 0.9, 0),      # on object 0, right class      -> [0, 0]
            ([21, 21, 30, 30], 0.8, 0),    # on object 1 (IoU 0.81), wrong -> [1, 0]
            ([100, 100, 110, 110], 0.9, 1),  # on nothing                  -> [bg, 1]
            ([60, 60, 79, 80], 0.9, 1),    # on the crowd region: no error
            ([40, 40, 50, 50], 0.1, 1),    # below conf: object 2 missed  -> [1, bg]
            ([1, 0, 10, 10], 0.7, 0)]      # second box on object 0        -> [bg, 0]
    cm = ConfusionMatrix(2)
    cm.update([d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets], gt, gt_labels,
              crowd)
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [1, 0, 1], [1, 1, 0]])
    cm.update(np.zeros((0, 4)), [], [], [[0, 0, 5, 5]], [1])  # a second image: one miss
    assert cm.matrix[1, 2] == 2
    cm.reset()
    assert cm.matrix.sum() == 0


def test_best_iou_pairs_first():
    """Detection 0 overlaps both objects; object 1 is its better match, so object 0 goes to
    detection 1 although detection 0 has the higher score."""
    gt = [[0, 0, 10, 10], [2, 0, 12, 10]]
    dets = [[2, 0, 12, 10], [0, 0, 10, 10]]
    cm = ConfusionMatrix(2, conf=0.0)
    cm.update(dets, [0.9, 0.5], [1, 0], gt, [0, 1])
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("seed", range(5))
def test_every_object_and_kept_detection_counted_once(seed):
    rng = np.random.default_rng(seed)

    def boxes(n):
        xy = rng.uniform(0, 80, (n, 2))
        return np.concatenate([xy, xy + rng.uniform(2, 30, (n, 2))], axis=1)

    cm = ConfusionMatrix(3)
    n_obj = n_det = 0
    for _ in range(10):
        gt, dt = boxes(rng.integers(0, 8)), boxes(rng.integers(0, 12))
        scores = rng.uniform(0, 1, len(dt))
        cm.update(dt, scores, rng.integers(0, 3, len(dt)), gt, rng.integers(0, 3, len(gt)))
        n_obj += len(gt)
        n_det += int((scores >= 0.25).sum())
    assert cm.matrix[:3].sum() == n_obj  # each object: matched once or missed
    assert cm.matrix[:, :3].sum() == n_det  # each kept detection: matched once or a false alarm
    assert cm.matrix[3, 3] == 0


def test_iou_matrix_matches_ops_box_iou():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 50, (7, 2, 2)), axis=1).reshape(7, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.uniform(0, 50, (5, 2, 2)), axis=1).reshape(5, 4)[:, [0, 2, 1, 3]]
    b[0] = [3, 3, 3, 9]  # empty box
    expected = box_iou(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    np.testing.assert_allclose(iou_matrix(a, b), expected, atol=1e-12)


def test_plot(tmp_path):
    cm = ConfusionMatrix(3)
    cm.update([[0, 0, 10, 10]], [0.9], [2], [[0, 0, 10, 10]], [1])
    from scaledet.plots.confusion import plot_confusion

    path = plot_confusion(cm, tmp_path / "cm.png", ["a", "b", "c"])
    assert Image.open(path).size[0] > 300
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
