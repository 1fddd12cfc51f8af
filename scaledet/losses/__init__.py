"""scaledet.losses."""

from scaledet.losses.iou_loss import iou_loss

__all__ = ["iou_loss"]
