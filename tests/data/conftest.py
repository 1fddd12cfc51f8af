"""Small real datasets on disk for the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, width: int, height: int, seed: int = 0, fmt: str = "JPEG") -> Path:
    """A random RGB image of the given size (JPEG by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt)
    return path


def coco_dict(images, annotations, categories) -> dict:
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def coco_folder(tmp_path: Path) -> Path:
    """COCO folder: val split, 3 images (one without boxes), non-contiguous category ids."""
    root = tmp_path / "coco"
    for i, (w, h) in enumerate([(64, 48), (50, 40), (32, 32)]):
        write_image(root / "images" / "val" / f"im{i}.jpg", w, h, seed=i)
    images = [{"id": 10 + i, "file_name": f"im{i}.jpg", "width": w, "height": h}
              for i, (w, h) in enumerate([(64, 48), (50, 40), (32, 32)])]
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1.5, 2.25, 20.0, 10.125],
         "area": 150.0, "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [30, 5, 12, 30], "iscrowd": 0},
        {"id": 5, "image_id": 11, "category_id": 7, "bbox": [0, 0, 50, 40], "iscrowd": 1,
         "area": 900.0},
    ]
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val.json").write_text(
        json.dumps(coco_dict(images, annotations, categories)))
    return root
