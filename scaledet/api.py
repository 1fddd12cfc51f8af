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


def train(data: str | os.PathLike, *, model: str | None = None, epochs: int | None = None,
          minutes: float | None = None, imgsz: int | None = None, batch: int = 16,
          out: str | os.PathLike = "runs/train", device: str = "cpu", seed: int = 0,
          resume: bool = False, exist_ok: bool = False,
          weights: str | os.PathLike | None = None, adapter: str | None = None, rank: int = 8,
          model_options: dict[str, Any] | None = None,
          train_options: dict[str, Any] | None = None, augment: dict[str, Any] | None = None,
          **options: Any) -> TrainResult:
    """Train ``model`` (a preset name, default ``fcos-n``) on ``data`` (COCO folder, YOLO
    ``data.yaml``, VOC folder) and return a :class:`~scaledet.engine.fit.TrainResult` (``best`` / ``last``
    weights, ``metrics``: the final validation's 12 COCO stats ``mAP``, ``mAP50``, ...).

    ``model_options``, ``train_options`` and ``augment`` override fields of the model config,
    the trainer config and the augmentation as ``--set``, ``--train-option`` and
    ``--augment`` do (``{"head.norm": "gn"}``, ``{"ema_tau": 600}``, ``{"mosaic": 0.5}``).
    ``weights``: start from this trained checkpoint (its architecture, class layers rebuilt
    for new classes); ``adapter`` (``"lora"``, ``"adapter"``, ``"prefix"``, ``"head"``) with
    ``rank``: train only that on the frozen base (:mod:`scaledet.models.adapters`).
    ``options``: the other fields of :class:`~scaledet.engine.fit.TrainSettings` (``lr``,
    ``nproc``, ``workers``, ``amp``, ``eval_interval``, ...).
    """
    settings = TrainSettings(
        data=str(data), model=model, epochs=epochs, minutes=minutes, imgsz=imgsz, batch=batch,
        out=str(out), device=device, seed=seed, resume=resume, exist_ok=exist_ok,
        weights=None if weights is None else str(weights), adapter=adapter, rank=rank,
        model_options=dict(model_options or {}), train_options=dict(train_options or {}),
        augment=dict(augment or {}), **options)
    return fit(settings)


def val(weights: str | os.PathLike, data: str | os.PathLike, *, split: str = "val",
        imgsz: int | None = None, batch: int = 16, device: str = "cpu",
        model_options: dict[str, Any] | None = None) -> dict[str, float]:
    """Score a checkpoint on a dataset split: the 12 COCO stats as ``scaledet val`` prints
    them, named ``mAP``, ``mAP50``, ``mAP75``, ``mAP_small`` ... ``AR_large``; for a pose
    checkpoint the 10 OKS stats on the ground-truth person boxes (``mAP`` = OKS AP, ``mAP50``,
    ``mAP75``, ``mAP_medium``, ``mAP_large``, ``AR`` ... ``AR_large``). ``model_options``: a
    detector's inference options as ``scaledet val --set`` takes them, e.g.
    ``{"head.steps": 4, "head.seed": 1}``."""
    from scaledet.evaluation.validator import validate_weights
    from scaledet.models.checkpoint import read_meta

    if read_meta(weights).get("task") == "pose":
        from scaledet.evaluation.pose import pose_metrics, validate_pose_weights

        result, _ = validate_pose_weights(weights, data, split=split, batch=batch,
                                          device=device)
        return pose_metrics(result)

    result, _ = validate_weights(weights, data, split=split, imgsz=imgsz, batch=batch,
                                 device=device, model_options=model_options)
    return result.metrics


def load(weights: str | os.PathLike | Path, *, merge: bool = False,
         save: str | os.PathLike | None = None, base: str | os.PathLike | None = None,
         pose_weights: str | os.PathLike | None = None, **options: Any) -> Predictor:
    """A :class:`~scaledet.inference.predictor.Predictor` for a ``.safetensors`` checkpoint:
    ``scaledet.load("best.safetensors", conf=0.25)(images)`` -> one ``Result`` per image.
    ``options``: ``device``, ``conf``, ``imgsz``, ``batch_size``, ``nms``, ``iou``,
    ``max_det``, ``tta``, ``slicing``, ``pose_classes``, ``model_options`` (inference options
    such as ``{"head.steps": 4}``; see ``Predictor``).

    ``pose_weights``: a pose checkpoint (``pose-heatmap-n`` / ``pose-rle-n`` training) run on
    the detected people: each ``Result`` then carries ``keypoints`` ``(K, J, 3)`` (x, y
    original pixels, score), and ``plot`` draws the skeletons
    (``scaledet.load("det.safetensors", pose_weights="pose.safetensors")``).

    An adapted checkpoint loads onto its base (found by the recorded path, or ``base``; its
    SHA-256 is checked). ``merge``: LoRA folded into plain weights and BatchNorm into the
    convolutions (no extra latency); without it the adapter layers stay separate (and
    BatchNorm unfolded). ``save`` (with ``merge``): also write the merged model as one
    standalone checkpoint there."""
    from scaledet.models.checkpoint import model_from_weights, read_meta, save_standalone

    if save is not None:
        if not merge:
            raise ValueError("save: a standalone checkpoint is written from the merged model; "
                             "pass merge=True")
        weights = save_standalone(weights, save, base=base)
    meta = read_meta(weights)
    if merge or meta.get("adapter") is None:
        if meta.get("base_weights") and base is not None:
            model, meta = model_from_weights(weights, base=base)
            return _from_model(model.fuse(), meta, {**options, "pose_weights": pose_weights})
        return Predictor(weights, pose_weights=pose_weights, **options)
    model, meta = model_from_weights(weights, merge=False, base=base)
    return _from_model(model, meta, {**options, "pose_weights": pose_weights})


def _from_model(model: Any, meta: dict[str, Any], options: dict[str, Any]) -> Predictor:
    """A :class:`Predictor` around a loaded model, with the checkpoint's classes and size."""
    options = dict(options)
    if options.get("imgsz") is None:
        options["imgsz"] = int(meta.get("imgsz", 320))
    n = int(meta.get("model_config", {}).get("num_classes", 0) or 0)
    names = list(meta.get("class_names") or [str(i) for i in range(n)])
    return Predictor.from_model(model, names, category_ids=meta.get("category_ids"), **options)
