"""OKS validation of a top-down pose model on ground-truth person boxes (:class:`PoseValidator`,
used by training) and of a pose checkpoint on a dataset split (:func:`validate_pose_weights`,
behind ``scaledet val``).

Protocol (SimpleBaseline / HRNet / mmpose "with ground-truth boxes"): every non-crowd person
with a labelled joint is cropped from its annotated box, the model's joints are mapped back to
image pixels by the inverse crop matrix, and each person's result is scored as the mean of its
joint scores above ``joint_thresh`` (1 when none is). The results are evaluated by
:class:`~scaledet.evaluation.keypoints.KeypointEvaluator` (identical to pycocotools'
``COCOeval(iouType="keypoints")``), so the numbers measure the pose model alone; end-to-end
numbers with a detector's boxes come from ``scaledet predict --pose-weights`` and
``scaledet eval --iou-type keypoints``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scaledet.data.records import DetectionDataset
from scaledet.evaluation.keypoints import KEYPOINT_STAT_NAMES, KeypointEvalResult

POSE_METRIC_NAMES = ("mAP", "mAP50", "mAP75", "mAP_medium", "mAP_large",
                     "AR", "AR50", "AR75", "AR_medium", "AR_large")
"""The 10 OKS stats under the names training logs use (``mAP`` is OKS AP@[.5:.95])."""

JOINT_THRESH = 0.2
"""Joints scoring below this do not count in a person's score (SimpleBaseline's rescoring)."""


def person_score(scores: np.ndarray, joint_thresh: float = JOINT_THRESH) -> np.ndarray:
    """``(N, K)`` joint scores -> ``(N,)`` person scores: the mean of those above
    ``joint_thresh``, 0 where none is."""
    keep = scores > joint_thresh
    total = (scores * keep).sum(1)
    return np.where(keep.any(1), total / np.maximum(keep.sum(1), 1), 0.0)


def keypoint_results(coords: np.ndarray, scores: np.ndarray, matrices: np.ndarray,
                     image_ids: Sequence[int], category_id: int,
                     box_scores: np.ndarray | None = None) -> list[dict[str, Any]]:
    """COCO keypoint results from crop-pixel predictions.

    Args:
        coords: ``(N, K, 2)`` joints in crop pixels.
        scores: ``(N, K)`` joint scores.
        matrices: ``(N, 2, 3)`` image-to-crop maps of the crops.
        image_ids: the N crops' image ids.
        category_id: the person category's id.
        box_scores: ``(N,)`` detector scores multiplied into the person scores (None: 1).

    Returns:
        ``[{"image_id", "category_id", "keypoints": [x, y, score] * K, "score"}]`` with
        ``x, y`` in image pixels.
    """
    from scaledet.ops.warp import apply_matrix, invert_matrix

    out = []
    person = person_score(scores)
    if box_scores is not None:
        person = person * box_scores
    for i in range(len(coords)):
        xy = apply_matrix(coords[i], invert_matrix(matrices[i]))
        flat = np.concatenate([xy, scores[i][:, None]], 1).reshape(-1)
        out.append({"image_id": int(image_ids[i]), "category_id": int(category_id),
                    "keypoints": [round(float(v), 3) for v in flat],
                    "score": round(float(person[i]), 5)})
    return out


def pose_metrics(result: KeypointEvalResult) -> dict[str, float]:
    """The 10 OKS stats under :data:`POSE_METRIC_NAMES`."""
    return {name: float(result.metrics[k]) for name, k in zip(POSE_METRIC_NAMES,
                                                              KEYPOINT_STAT_NAMES)}


class PoseValidator:
    """Runs a pose model over a crop loader (``scaledet.data.pose.build_pose_loader`` with
    ``train=False``) of ``dataset`` and scores it with OKS.

    Args:
        loader: evaluation crop loader over ``dataset``'s people.
        dataset: the split, for its ground truth.
        device: where the model runs.
        sigmas: per-joint OKS sigmas (default: the ground truth's, or COCO's for 17 joints).
        amp_dtype: autocast dtype, or None for fp32.
    """

    def __init__(self, loader: Iterable, dataset: DetectionDataset,
                 device: torch.device | str = "cpu", sigmas: Sequence[float] | None = None,
                 amp_dtype: torch.dtype | None = None) -> None:
        from scaledet.data import to_coco_dict
        from scaledet.evaluation.keypoints import KeypointEvaluator

        self.loader = loader
        self.dataset = dataset
        self.evaluator = KeypointEvaluator(to_coco_dict(dataset), sigmas)
        self.category_id = int(dataset.category_ids[0])
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.crops_per_second = 0.0
        self.results: list[dict[str, Any]] = []

    @torch.no_grad()
    def run(self, model: nn.Module) -> KeypointEvalResult:
        """Evaluate ``model`` (put in eval mode) on every person of the split."""
        model.eval()
        self.evaluator.reset()
        results: list[dict[str, Any]] = []
        n, start = 0, time.perf_counter()
        for crops, targets in self.loader:
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                coords, scores = model(crops.to(self.device, non_blocking=True))
            matrices = np.stack([t["matrix"].numpy() for t in targets])
            results += keypoint_results(coords.float().cpu().numpy(),
                                        scores.float().cpu().numpy(), matrices,
                                        [t["image_id"] for t in targets], self.category_id)
            n += len(crops)
        self.crops_per_second = n / max(time.perf_counter() - start, 1e-9)
        self.results = results
        self.evaluator.add_results(results)
        return self.evaluator.compute()

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        """The trainer's ``evaluate`` hook: the 10 OKS stats (``mAP`` = OKS AP) and
        ``val_images_per_s`` (crops per second)."""
        metrics: dict[str, Any] = pose_metrics(self.run(model))
        metrics["val_images_per_s"] = round(self.crops_per_second, 2)
        return metrics


def validate_pose_weights(weights: str | Path, data: str | Path, *, split: str = "val",
                          batch: int = 32, device: str = "cpu", workers: int = 1,
                          sigmas: Sequence[float] | None = None
                          ) -> tuple[KeypointEvalResult, PoseValidator]:
    """Score a pose checkpoint on a keypoint dataset split with ground-truth boxes:
    ``(KeypointEvalResult, the validator)`` (the latter for its results and crops/s)."""
    from scaledet.data import load_dataset
    from scaledet.data.pose import build_pose_loader
    from scaledet.models.checkpoint import model_from_weights
    from scaledet.ops.device import resolve_device

    dev = resolve_device(device)
    model, meta = model_from_weights(weights, dev)
    if meta.get("task") != "pose":
        raise ValueError(f"{weights} is not a pose checkpoint")
    model.fuse()
    dataset = load_dataset(data, split)
    if dataset.num_keypoints != model.num_keypoints:
        raise ValueError(f"{weights} predicts {model.num_keypoints} keypoints but {data} "
                         f"({split}) has {dataset.num_keypoints or 'no'} keypoints per object")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    loader = build_pose_loader(dataset, model.input_size, batch, train=False, workers=workers,
                               padding=model.config.box_padding,
                               device=str(dev) if dev.type == "cuda" else None)
    validator = PoseValidator(loader, dataset, dev, sigmas if sigmas is not None
                              else meta.get("sigmas"))
    return validator.run(model), validator
