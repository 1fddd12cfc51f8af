"""scaledet.losses."""

from scaledet.losses.focal import sigmoid_focal_loss, varifocal_loss
from scaledet.losses.iou_loss import iou_loss

__all__ = ["iou_loss", "sigmoid_focal_loss", "varifocal_loss"]
