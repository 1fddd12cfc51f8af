"""OKS validation of pose models on ground-truth boxes: joints mapped back to the image, person
scores, and the whole validator with models whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from scaledet.data import load_dataset, make_synthetic_dataset
from scaledet.data.pose import build_pose_loader
from scaledet.evaluation.pose import (
    POSE_METRIC_NAMES,
    PoseValidator,
    keypoint_results,
    person_score,
)
from scaledet.ops.warp import crop_matrix

SIZE = (64, 48)


@pytest.fixture(scope="module")
def kp_val(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pose_eval") / "coco"
    make_synthetic_dataset(root, n_train=1, n_val=6, seed=9, imgsz=160, task="keypoints")
    return load_dataset(root, "val")


def test_person_score_averages_confident_joints():
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.05, 0.0]])
    np.testing.assert_allclose(person_score(scores), [0.7, 0.0])


def test_keypoint_results_map_crop_pixels_back_to_the_image():
    m = crop_matrix([50, 40], [30, 40], SIZE, rotation=20)
    image_xy = np.array([[45.0, 30.0], [55.5, 52.25]])
    crop_xy = image_xy @ m[:, :2].T + m[:, 2]
    out = keypoint_results(crop_xy[None], np.array([[0.9, 0.5]]), m[None], [7], 1)
    assert out[0]["image_id"] == 7 and out[0]["category_id"] == 1
    np.testing.assert_allclose(np.reshape(out[0]["keypoints"], (2, 3))[:, :2], image_xy,
                               atol=1e-3)
    assert out[0]["score"] == pytest.approx(0.7)


class _Replay(nn.Module):
    """Answers each batch with prepared joints (in loader order)."""

    def __init__(self, answers: list[torch.Tensor]) -> None:
        super().__init__()
        self.answers = answers
        self.i = 0

    def forward(self, crops):
        coords = self.answers[self.i]
        self.i += 1
        return coords, torch.full(coords.shape[:2], 0.9)


def _truth_in_crops(loader) -> list[torch.Tensor]:
    return [torch.stack([t["keypoints"][:, :2] for t in targets]) for _, targets in loader]


def test_validator_scores_the_truth_as_perfect_and_noise_lower(kp_val):
    loader = build_pose_loader(kp_val, SIZE, batch_size=4, train=False, workers=0)
    truth = _truth_in_crops(loader)
    validator = PoseValidator(loader, kp_val)
    metrics = validator(_Replay(truth))
    assert set(POSE_METRIC_NAMES) <= set(metrics)
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    # joints 3 crop pixels off (a ~10% error of a 48-px crop): OKS AP falls, stays above 0
    rng = torch.Generator().manual_seed(0)
    noisy = [t + 3 * torch.randn(t.shape, generator=rng) for t in truth]
    noisy_map = validator(_Replay(noisy))["mAP"]
    assert 0.0 < noisy_map < 0.9
    # every joint at the crop centre: near zero
    centre = [torch.full_like(t, 0.0) + torch.tensor([23.5, 31.5]) for t in truth]
    assert validator(_Replay(centre))["mAP"] < noisy_map
