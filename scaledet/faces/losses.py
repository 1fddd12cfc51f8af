"""Margin-softmax heads for face recognition, re-exported from :mod:`scaledet.losses.margin`
(where they live, in the losses layer, so ``scaledet.losses.margin_logits`` is the canonical
name and detectors or other tasks can use the margins without importing ``faces``)."""

from __future__ import annotations

from scaledet.losses.margin import (
    FALLBACKS,
    MarginSoftmax,
    arcface,
    cosface,
    margin_logits,
    sphereface,
)

__all__ = ["FALLBACKS", "MarginSoftmax", "arcface", "cosface", "margin_logits", "sphereface"]
