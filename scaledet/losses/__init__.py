"""scaledet.losses."""

from scaledet.losses.distribution import distribution_expectation, distribution_focal_loss
from scaledet.losses.focal import sigmoid_focal_loss, varifocal_loss
from scaledet.losses.heatmap import penalty_reduced_focal_loss
from scaledet.losses.iou_loss import iou_loss

__all__ = ["distribution_expectation", "distribution_focal_loss", "iou_loss", "penalty_reduced_focal_loss", "sigmoid_focal_loss", "varifocal_loss"]
