"""scaledet.losses."""

from scaledet.losses.distribution import distribution_expectation, distribution_focal_loss
from scaledet.losses.focal import sigmoid_focal_loss, varifocal_loss
from scaledet.losses.heatmap import penalty_reduced_focal_loss
from scaledet.losses.iou_loss import iou_loss
from scaledet.losses.margin import (
    FALLBACKS,
    MarginSoftmax,
    arcface,
    cosface,
    margin_logits,
    sphereface,
)

__all__ = ["FALLBACKS", "MarginSoftmax", "arcface", "cosface", "distribution_expectation", "distribution_focal_loss", "iou_loss", "margin_logits", "penalty_reduced_focal_loss", "sigmoid_focal_loss", "sphereface", "varifocal_loss"]
