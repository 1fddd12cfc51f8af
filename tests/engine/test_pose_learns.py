"""Top-down pose through the real training path: ``scaledet.train`` with a pose preset on a small
generated keypoint set, validation with OKS on held-out images, ``scaledet.val`` on the saved
weights. A broken crop, target encoding, decoding or mapping back leaves OKS AP near zero."""

from __future__ import annotations

import csv

import pytest

import scaledet
from scaledet.data import make_synthetic_dataset


@pytest.fixture(scope="module")
def pose_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose_learns") / "coco"
    return make_synthetic_dataset(root, n_train=96, n_val=24, seed=0, imgsz=160,
                                  task="keypoints")


def _losses(run) -> list[float]:
    with open(run.out / "metrics.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "min_ap50"), [("pose-heatmap-n", 0.2), ("pose-rle-n", 0.1)])
def test_pose_presets_learn_the_figures(pose_data, tmp_path, preset, min_ap50):
    run = scaledet.train(pose_data, model=preset, epochs=EPOCHS, batch=16, out=tmp_path / "run",
                         nproc=1, progress=False, eval_interval=0, amp="off",
                         model_options={"input_size": [64, 64]})
    losses = _losses(run)
    assert losses[-1] < losses[0] - 0.1 * abs(losses[0]), losses
    assert run.metrics["mAP50"] > min_ap50, run.metrics
    held_out = scaledet.val(run.best, pose_data)
    assert held_out == pytest.approx(run.metrics, abs=0.02)


EPOCHS = 12
