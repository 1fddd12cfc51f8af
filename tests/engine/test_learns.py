"""The real training path learns: ``scaledet.train`` with a preset's own defaults (recipe,
augmentation, loader, EMA, validation) on a small generated dataset, then ``scaledet.val`` on
held-out images. A broken recipe, loader, augmentation or EMA leaves AP50 near zero."""

import csv
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

import scaledet


def _write_shapes(folder, split: str, n: int, size: int, seed: int) -> None:
    """COCO split of images with 1-3 bright rectangles (class 1) and ellipses (class 2) on a
    dark background."""
    rng = np.random.default_rng(seed)
    (folder / "images" / split).mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
        draw = ImageDraw.Draw(im)
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            w, h = (int(v) for v in rng.integers(size // 6, size // 2, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            if any(x < o[2] and o[0] < x + w and y < o[3] and o[1] < y + h for o in boxes):
                continue
            boxes.append((x, y, x + w, y + h))
            cat = int(rng.integers(1, 3))
            colour = tuple(int(v) for v in rng.integers(150, 256, 3))
            (draw.rectangle if cat == 1 else draw.ellipse)([x, y, x + w - 1, y + h - 1],
                                                            fill=colour)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": cat, "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": 0})
        name = f"{i:04d}.png"
        im.save(folder / "images" / split / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    (folder / "annotations").mkdir(exist_ok=True)
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "rectangle"}, {"id": 2, "name": "ellipse"}]}
    (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


@pytest.mark.slow
def test_fcos_n_defaults_learn_the_shapes(tmp_path):
    data = tmp_path / "shapes"
    _write_shapes(data, "train", 128, 96, seed=0)
    _write_shapes(data, "val", 32, 96, seed=1)
    run = scaledet.train(data, model="fcos-n", epochs=24, imgsz=96, batch=16,
                         out=tmp_path / "run", nproc=1, progress=False, eval_interval=0)
    held_out = scaledet.val(run.best, data)
    assert held_out["mAP50"] > 0.8 and held_out["mAP"] > 0.5, held_out
    assert held_out == pytest.approx(run.metrics, abs=0.02)


@pytest.mark.slow
def test_rtdetr_n_learns_the_shapes_without_nms(tmp_path):
    """The set-prediction preset through the same path: Hungarian matching, denoising and
    NMS-free inference must give real detections on held-out images."""
    data = tmp_path / "shapes"
    _write_shapes(data, "train", 128, 96, seed=0)
    _write_shapes(data, "val", 32, 96, seed=1)
    run = scaledet.train(data, model="rtdetr-n", epochs=20, imgsz=96, batch=16,
                         out=tmp_path / "run", nproc=1, progress=False, eval_interval=0)
    with open(run.out / "metrics.csv", newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert losses[-1] < 0.6 * losses[0], losses
    held_out = scaledet.val(run.best, data)
    assert held_out["mAP50"] > 0.5 and held_out["mAP"] > 0.3, held_out
