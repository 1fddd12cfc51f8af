"""Skeletons drawn on predictions and on a pose training batch (person crops, no boxes)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from scaledet.plots.draw import LEFT, MIDDLE, RIGHT, draw_keypoints, plot_train_batch

NAMES = ["nose", "left_eye", "right_eye", "left_knee"]


def test_joints_above_the_threshold_drawn_by_side():
    im = Image.new("RGB", (200, 200))
    points = torch.tensor([[[100.0, 20.0, 0.9], [60.0, 60.0, 0.9], [140.0, 60.0, 0.9],
                            [60.0, 160.0, 0.1]]])
    draw_keypoints(im, points, [(2, 4), (1, 2)], NAMES, threshold=0.3)
    a = np.asarray(im)
    assert tuple(a[20, 100]) == MIDDLE and tuple(a[60, 60]) == LEFT
    assert tuple(a[60, 140]) == RIGHT
    assert tuple(a[160, 60]) == (0, 0, 0)          # score 0.1: not drawn, nor its limb
    assert tuple(a[110, 60]) == (0, 0, 0)
    assert tuple(a[40, 80]) == MIDDLE              # nose-left_eye limb joins two sides


def test_nan_rows_and_no_skeleton():
    im = Image.new("RGB", (50, 50))
    draw_keypoints(im, torch.full((2, 4, 3), float("nan")), None)
    assert not np.asarray(im).any()
    draw_keypoints(im, torch.tensor([[25.0, 25.0, 2.0]]), None)  # (K, 3), no names, no limbs
    assert tuple(np.asarray(im)[25, 25]) == MIDDLE


def test_train_batch_of_pose_crops(tmp_path):
    images = torch.zeros(2, 3, 128, 96)
    targets = [{"keypoints": torch.tensor([[48.0, 30.0, 2.0], [30.0, 60.0, 1.0],
                                           [66.0, 60.0, 2.0], [40.0, 100.0, 0.0]]),
                "box": torch.tensor([1.0, 2.0, 3.0, 4.0])} for _ in range(2)]
    for skeleton, names in [([(1, 2), (1, 3), (2, 4)], NAMES), (None, None)]:
        path = plot_train_batch(images, targets, ["person"], tmp_path / "b.jpg",
                                skeleton=skeleton, keypoint_names=names)
        grid = np.asarray(Image.open(path).convert("RGB")).astype(int)
        assert grid.shape == (128, 2 * 96, 3)
        for dx in (0, 96):
            assert grid[30, 48 + dx].sum() > 150     # labelled joints drawn
            assert grid[60, 30 + dx].sum() > 150
            assert grid[100, 40 + dx].sum() < 60     # v = 0: not drawn
