"""The Python front end: :func:`train`, :func:`val` and :func:`load`, with the meaning of the
``scaledet train | val | predict`` commands (which call the same code).

    import scaledet
    run = scaledet.train("data/synth", model="fcos-n", minutes=5)
    run.metrics["mAP"], run.best                      # final validation, best weights
    scaledet.val(run.best, "data/synth")["mAP50"]
    scaledet.load(run.best, conf=0.25)("photos/")     # one Result per image

Sits at the top layer, beside the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scaledet.engine.fit import TrainResult, TrainSettings, fit
from scaledet.inference.predictor import Predictor


def train(data: str | os.PathLike, *, model: str = "fcos-n", epochs: int | None = None,
          minutes: float | None = None, imgsz: int = 320, batch: int = 16,
          out: str | os.PathLike = "runs/train", device: str = "cpu", seed: int = 0,
          resume: bool = False, exist_ok: bool = False,
          model_options: dict[str, Any] | None = None,
          train_options: dict[str, Any] | None = None, augment: dict[str, Any] | None = None,
          **options: Any) -> TrainResult:
    """Train ``model`` (a preset name) on ``data`` (COCO folder, YOLO ``data.yaml``, VOC
    folder) and return a :class:`~scaledet.engine.fit.TrainResult` (``best`` / ``last``
    weights, ``metrics``: the final validation's 12 COCO stats ``mAP``, ``mAP50``, ...).

    ``model_options``, ``train_options`` and ``augment`` override fields of the model config,
    the trainer config and the augmentation as ``--set``, ``--train-option`` and
    ``--augment`` do (``{"head.norm": "gn"}``, ``{"ema_tau": 600}``, ``{"mosaic": 0.5}``).
    ``options``: the other fields of :class:`~scaledet.engine.fit.TrainSettings` (``lr``,
    ``nproc``, ``workers``, ``amp``, ``eval_interval``, ...).
    """
    settings = TrainSettings(
        data=str(data), model=model, epochs=epochs, minutes=minutes, imgsz=imgsz, batch=batch,
        out=str(out), device=device, seed=seed, resume=resume, exist_ok=exist_ok,
        model_options=dict(model_options or {}), train_options=dict(train_options or {}),
        augment=dict(augment or {}), **options)
    return fit(settings)


def val(weights: str | os.PathLike, data: str | os.PathLike, *, split: str = "val",
        imgsz: int | None = None, batch: int = 16, device: str = "cpu") -> dict[str, float]:
    """Score a checkpoint on a dataset split: the 12 COCO stats as ``scaledet val`` prints
    them, named ``mAP``, ``mAP50``, ``mAP75``, ``mAP_small`` ... ``AR_large``."""
    from scaledet.evaluation.validator import validate_weights

    result, _ = validate_weights(weights, data, split=split, imgsz=imgsz, batch=batch,
                                 device=device)
    return result.metrics


def load(weights: str | os.PathLike | Path, **options: Any) -> Predictor:
    """A :class:`~scaledet.inference.predictor.Predictor` for a ``.safetensors`` checkpoint:
    ``scaledet.load("best.safetensors", conf=0.25)(images)`` -> one ``Result`` per image.
    ``options``: ``device``, ``conf``, ``imgsz``, ``batch_size``, ``nms``, ``iou``,
    ``max_det``, ``tta``, ``slicing`` (see ``Predictor``)."""
    return Predictor(weights, **options)
