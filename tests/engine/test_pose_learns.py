"""Top-down pose through the real training path: ``scaledet.train`` with each pose preset on a
small generated keypoint set (five coloured dots per figure, K = 5 with their own OKS sigmas),
OKS validation on held-out images, then ``scaledet.val`` on the saved weights. A broken crop,
target encoding, decoding or mapping back leaves OKS AP near zero."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

import scaledet

COLOURS = [(255, 40, 40), (40, 255, 40), (60, 60, 255), (255, 255, 40), (40, 255, 255)]
SIGMAS = [0.08] * 5


def _write_dots(folder, split: str, n: int, seed: int, size: int = 96) -> None:
    """COCO keypoint split: one grey "figure" box per image holding five dots of fixed colours
    (joint k is always colour k; names without left/right, so a mirror keeps them)."""
    rng = np.random.default_rng(seed)
    (folder / "images" / split).mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
        draw = ImageDraw.Draw(im)
        w, h = (int(v) for v in rng.integers(36, 80, 2))
        x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=(110, 110, 110))
        points = []
        for colour in COLOURS:
            px, py = x0 + 4 + rng.random() * (w - 8), y0 + 4 + rng.random() * (h - 8)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
            points += [round(px, 2), round(py, 2), 2]
        name = f"{i:04d}.png"
        im.save(folder / "images" / split / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1,
                            "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0,
                            "keypoints": points, "num_keypoints": 5})
    (folder / "annotations").mkdir(exist_ok=True)
    cats = [{"id": 1, "name": "figure", "keypoints": ["a", "b", "c", "d", "e"],
             "skeleton": [[1, 2], [2, 3], [3, 4], [4, 5]]}]
    (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": cats}))


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose_learns") / "dots"
    _write_dots(root, "train", 192, seed=0)
    _write_dots(root, "val", 32, seed=1)
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "min_ap50", "min_ap"),
                         [("pose-heatmap-n", 0.8, 0.4), ("pose-rle-n", 0.8, 0.2)])
def test_pose_presets_learn_the_dots(dots, tmp_path, preset, min_ap50, min_ap):
    run = scaledet.train(dots, model=preset, epochs=20, batch=16, out=tmp_path / "run",
                         nproc=1, progress=False, eval_interval=0, amp="off", sigmas=SIGMAS,
                         model_options={"input_size": [64, 64]})
    with open(run.out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [float(row["loss"]) for row in rows]
    assert losses[-1] < losses[0] - 0.2 * abs(losses[0]), losses
    # the OKS stats under their own names, recall included (not the box metrics' columns)
    assert float(rows[-1]["AR50"]) == pytest.approx(run.metrics["AR50"], abs=1e-5)
    assert "mAP_small" not in rows[-1]
    assert run.metrics["mAP50"] > min_ap50 and run.metrics["mAP"] > min_ap, run.metrics
    held_out = scaledet.val(run.best, dots)
    assert held_out == pytest.approx(run.metrics, abs=0.02)
