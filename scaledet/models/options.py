"""Inference options of a built detector: the fields of its
:class:`~scaledet.models.config.ModelConfig` that may change on trained weights (``scaledet
predict --set`` / ``scaledet val --set``, ``Predictor(model_options=...)``).

They are every :class:`~scaledet.models.heads.dense.PostProcess` field (``postprocess.*``)
and the head fields its config class lists in ``INFERENCE_FIELDS`` (``head.*``; e.g. the
number of boxes, sampling steps and noise seed of DiffusionDet). Anything else shapes the
network or its training, and a change would not match the weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from scaledet.models.config import apply_overrides, nest
from scaledet.models.heads.dense import PostProcess


def inference_fields(model: nn.Module) -> list[str]:
    """The dotted names :func:`set_inference_options` accepts for ``model`` (a detector built
    from a :class:`~scaledet.models.config.ModelConfig`), head fields first."""
    head = getattr(model.config, "head", None)
    own = getattr(type(head), "INFERENCE_FIELDS", ())
    return ([f"head.{f}" for f in own]
            + [f"postprocess.{f.name}" for f in dataclasses.fields(PostProcess)])


def set_inference_options(model: nn.Module, options: dict[str, Any],
                          where: str = "options") -> None:
    """Apply ``{"head.steps": 4, "postprocess.max_det": 300, ...}`` to the detector ``model``
    in place: its head attributes, its :class:`PostProcess` and its ``config`` (so a saved or
    reported config says what ran). Values are checked as the config checks them (types,
    ranges, a sampler that fits the objective). ``ValueError`` naming ``where`` and the
    field for a name that is not an inference option (listing the valid ones) or a bad value.
    """
    if not options:
        return
    if getattr(model, "config", None) is None or not hasattr(model, "postprocess"):
        raise ValueError(f"{where}: inference options need a detector built from a "
                         "ModelConfig (scaledet.models.build or a checkpoint)")
    valid = inference_fields(model)
    for key in options:
        if key not in valid:
            head = type(model.config.head).__name__
            raise ValueError(f"{where} {key}: not an inference option of {model.config.name} "
                             f"(head {head}); valid: {', '.join(valid)}")
    current = dataclasses.replace(model.config, postprocess=model.postprocess)  # live settings
    try:
        cfg = apply_overrides(current, nest(dict(options)))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    for key in options:
        section, name = key.split(".", 1)
        if section == "head":
            setattr(model.head, name, getattr(cfg.head, name))
    model.postprocess = dataclasses.replace(cfg.postprocess)
    model.config = cfg


def current_inference_options(model: nn.Module) -> dict[str, Any]:
    """The values of :func:`inference_fields` that ``model`` runs with now, by dotted name
    (read from the head and postprocess themselves, so direct attribute changes count)."""
    if getattr(model, "config", None) is None or not hasattr(model, "postprocess"):
        return {}
    out: dict[str, Any] = {}
    for key in inference_fields(model):
        section, name = key.split(".", 1)
        out[key] = getattr(model.head if section == "head" else model.postprocess, name)
    return out


def describe_inference(model: nn.Module) -> str | None:
    """One line on how the head samples its detections, e.g. DiffusionDet's ``"ddim sampler,
    1 step, 100 boxes, box renewal at score 0.5, ensemble over steps, noise seed 0"``; None
    for a head whose inference has no such options."""
    describe = getattr(getattr(model, "head", None), "describe_inference", None)
    return describe() if describe is not None else None


__all__ = ["current_inference_options", "describe_inference", "inference_fields",
           "set_inference_options"]
