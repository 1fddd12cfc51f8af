"""COCO validation of a detector on a loader (:class:`DetectionValidator`, used by training)
and of a checkpoint on a dataset split (:func:`validate_weights`, behind ``scaledet val``).

The model's detections are in letterboxed input pixels; they are mapped back to original-image
pixels (``boxes / scale``, clipped to the image) and labels ``0..C-1`` to COCO category ids
before being scored against the split's ground truth. The validator also fills a confusion
matrix (class indices, score >= 0.25, IoU >= 0.5) for ``plots/confusion_matrix.png``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scaledet.data.records import DetectionDataset
from scaledet.ops.boxes import to_original_pixels


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
        self.dataset = dataset
        self.category_ids = torch.as_tensor(dataset.category_ids, dtype=torch.int64)
        self.evaluator = COCOEvaluator(to_coco_dict(dataset))
        self.confusion = ConfusionMatrix(dataset.num_classes)
        self._truth = {r.image_id: r for r in dataset.records}
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.images_per_second = 0.0
        # What the last run sampled with (scaledet.models.options): e.g. DiffusionDet's
        # steps, boxes and noise seed, by dotted name, and that as one line (None: no such
        # options beyond post-processing).
        self.inference_options: dict[str, Any] = {}
        self.inference_note: str | None = None

    @torch.no_grad()
    def run(self, model: nn.Module):
        """Evaluate ``model`` (put in eval mode); returns the evaluation package's result."""
        from scaledet.models.options import current_inference_options, describe_inference

        model.eval()
        self.inference_options = current_inference_options(model)
        self.inference_note = describe_inference(model)
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
        metrics: dict[str, Any] = result.metrics
        metrics["val_images_per_s"] = round(self.images_per_second, 2)
        metrics["_result"] = result
        metrics["_confusion"] = self.confusion
        return metrics


def validate_weights(weights: str | Path, data: str | Path, *, split: str = "val",
                     imgsz: int | None = None, batch: int = 16, device: str = "cpu",
                     workers: int = 1, model_options: dict[str, Any] | None = None
                     ) -> tuple[Any, DetectionValidator]:
    """Score a checkpoint on a dataset split: ``(COCOEvalResult, the validator)``, the latter
    for its confusion matrix and images/s. ``imgsz`` defaults to the training size and is
    rounded up to a multiple of the model's largest stride (with a note on stderr,
    :func:`~scaledet.models.sizes.check_imgsz`); the model must have been trained on the
    dataset's classes (a ``ValueError`` names both lists). ``model_options``: inference
    options by dotted name (``scaledet val --set``, e.g. ``{"head.steps": 4}``;
    :func:`~scaledet.models.options.set_inference_options`)."""
    from scaledet.data import load_dataset
    from scaledet.data.loader import build_dataloader
    from scaledet.models.checkpoint import model_from_weights
    from scaledet.models.options import set_inference_options
    from scaledet.models.sizes import check_imgsz, model_stride
    from scaledet.ops.device import resolve_device

    dev = resolve_device(device)
    model, meta = model_from_weights(weights, dev)
    model.fuse()
    set_inference_options(model, model_options or {}, "model_options (--set)")
    dataset = load_dataset(data, split)
    names = meta.get("class_names")
    if names is not None and list(names) != list(dataset.class_names):
        raise ValueError(f"{weights} was trained on classes {names} but {data} has "
                         f"{list(dataset.class_names)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    size, note = check_imgsz(imgsz if imgsz is not None else int(meta.get("imgsz", 320)),
                             model_stride(model))
    if note:
        print(note, file=sys.stderr)
    on_gpu = dev.type == "cuda"
    loader = build_dataloader(dataset, imgsz=size, batch_size=batch, train=False,
                              workers=workers, seed=0, device=str(dev) if on_gpu else None)
    validator = DetectionValidator(loader, dataset, dev)
    return validator.run(model), validator
