"""The validator's plumbing (input px -> original px, labels -> category ids) against pycocotools."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from scaledet.data import make_synthetic_dataset, read_coco
from scaledet.data.loader import build_dataloader
from scaledet.evaluation.validator import DetectionValidator
from scaledet.ops.boxes import to_original_pixels


class _Replay(nn.Module):
    """Returns pre-computed detections in loader order (the loader is deterministic)."""

    def __init__(self, batches: list[list[dict]]) -> None:
        super().__init__()
        self.batches = batches
        self.i = 0

    def forward(self, images):
        out = self.batches[self.i % len(self.batches)]
        self.i += 1
        return out


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    root = make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "d", n_train=0, n_val=6,
                                  seed=3, imgsz=96)
    ds = read_coco(root / "annotations" / "instances_val.json", root / "images" / "val")
    # non-contiguous category ids make a wrong label -> id mapping visible
    ds.category_ids = [10 + 3 * i for i in range(ds.num_classes)]
    return ds


def _detections(loader, jitter: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    batches, flat = [], []
    for _, targets in loader:
        batch = []
        for t in targets:
            boxes = t["boxes"] + torch.from_numpy(rng.normal(0, jitter, t["boxes"].shape)).float()
            scores = torch.from_numpy(rng.uniform(0.1, 1.0, len(boxes))).float()
            batch.append({"boxes": boxes, "scores": scores, "labels": t["labels"]})
            flat.append((t, boxes, scores))
        batches.append(batch)
    return batches, flat


def _pycocotools_stats(ds, flat) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from scaledet.data import to_coco_dict

    results = []
    for t, boxes, scores in flat:
        for b, s, lab in zip(boxes.tolist(), scores.tolist(), t["labels"].tolist()):
            x1, y1, x2, y2 = (v / t["scale"] for v in b)
            h, w = t["orig_size"]
            x1, x2 = min(max(x1, 0), w), min(max(x2, 0), w)
            y1, y2 = min(max(y1, 0), h), min(max(y2, 0), h)
            results.append({"image_id": t["image_id"], "category_id": ds.category_ids[lab],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(to_coco_dict(ds)))
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("jitter", [0.0, 2.0])
def test_validator_matches_pycocotools(val_split, jitter):
    loader = build_dataloader(val_split, imgsz=64, batch_size=4, train=False, workers=0)
    batches, flat = _detections(loader, jitter)
    validator = DetectionValidator(loader, val_split)
    metrics = validator(_Replay(batches))
    stats = metrics["_result"].stats
    if jitter == 0.0:
        assert stats[0] == pytest.approx(1.0)  # the ground truth itself, through the letterbox
    np.testing.assert_allclose(stats, _pycocotools_stats(val_split, flat), atol=1e-9)
    assert metrics["mAP"] == stats[0] and metrics["mAP50"] == stats[1]
    assert metrics["AR100"] == stats[8] and metrics["val_images_per_s"] > 0


def test_to_original_pixels_divides_and_clips():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 300.0], [-4.0, 0.0, 8.0, 8.0]])
    out = to_original_pixels(boxes, 0.5, (400, 90))
    assert out.tolist() == [[20.0, 40.0, 90.0, 400.0], [0.0, 0.0, 16.0, 16.0]]
