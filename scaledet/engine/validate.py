"""COCO validation of a detector on a loader: the bridge between models and scaledet.evaluation.

The model's detections are in letterboxed input pixels; they are mapped back to original-image
pixels (``boxes / scale``, clipped to the image) and labels ``0..C-1`` to COCO category ids
before being scored against the split's ground truth. The validator also fills a confusion
matrix (class indices, score >= 0.25, IoU >= 0.5) for ``plots/confusion_matrix.png``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from scaledet.data.records import DetectionDataset

# metrics.csv / checkpoint names -> index in the 12 COCO stats
STAT_INDEX = {"mAP": 0, "mAP50": 1, "mAP75": 2, "mAP_small": 3, "mAP_medium": 4,
              "mAP_large": 5, "AR100": 8}


def to_original_pixels(boxes: torch.Tensor, scale: float, orig_size: tuple[int, int]) -> torch.Tensor:
    """``(K, 4)`` xyxy input-frame pixels -> original-image pixels, clipped to ``(h, w)``."""
    h, w = orig_size
    out = boxes.float() / scale
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


class DetectionValidator:
    """Runs a detector over a validation loader and scores it with COCO metrics.

    Args:
        loader: evaluation loader (``train=False``) over ``dataset``.
        dataset: the split, for its ground truth and category ids.
        device: where the model runs.
        amp_dtype: autocast dtype, or None for fp32.
    """

    def __init__(self, loader: Iterable, dataset: DetectionDataset,
                 device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None) -> None:
        from scaledet.data import to_coco_dict
        from scaledet.evaluation.coco import COCOEvaluator
        from scaledet.evaluation.confusion import ConfusionMatrix

        self.loader = loader
        self.category_ids = torch.as_tensor(dataset.category_ids, dtype=torch.int64)
        self.evaluator = COCOEvaluator(to_coco_dict(dataset))
        self.confusion = ConfusionMatrix(dataset.num_classes)
        self._truth = {r.image_id: r for r in dataset.records}
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.images_per_second = 0.0

    @torch.no_grad()
    def run(self, model: nn.Module):
        """Evaluate ``model`` (put in eval mode); returns the evaluation package's result."""
        model.eval()
        self.evaluator.reset()
        self.confusion.reset()
        n, start = 0, time.perf_counter()
        for images, targets in self.loader:
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                dets = model(images.to(self.device, non_blocking=True))
            for det, t in zip(dets, targets):
                boxes = to_original_pixels(det["boxes"].cpu(), t["scale"], t["orig_size"])
                scores, labels = det["scores"].float().cpu(), det["labels"].cpu().long()
                self.evaluator.update(t["image_id"], boxes, scores, self.category_ids[labels])
                truth = self._truth[t["image_id"]]
                self.confusion.update(boxes.numpy(), scores.numpy(), labels.numpy(),
                                      truth.boxes, truth.labels, truth.iscrowd)
            n += len(images)
        self.images_per_second = n / max(time.perf_counter() - start, 1e-9)
        return self.evaluator.compute()

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        """The trainer's ``evaluate`` hook: named metrics, plus the full result as ``_result``
        and the confusion matrix (:mod:`scaledet.evaluation.confusion`) as ``_confusion``."""
        result = self.run(model)
        metrics = {name: float(result.stats[i]) for name, i in STAT_INDEX.items()}
        metrics["val_images_per_s"] = round(self.images_per_second, 2)
        metrics["_result"] = result
        metrics["_confusion"] = self.confusion
        return metrics
