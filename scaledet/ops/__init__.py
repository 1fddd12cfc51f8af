"""scaledet.ops: box formats, the IoU family, the NMS family, receptive fields.

All boxes are xyxy unless a function takes a format argument. The lowest layer of scaledet:
nothing here imports another scaledet package. ``device`` picks devices and autocast dtypes.
"""

from scaledet.ops.boxes import (
    BOX_FORMATS,
    box_area,
    box_convert,
    check_boxes,
    clip_boxes,
    remove_small_boxes,
    scale_boxes,
    to_original_pixels,
)
from scaledet.ops.iou import IOU_KINDS, box_iou
from scaledet.ops.nms import (
    batched_diou_nms,
    batched_nms,
    batched_soft_nms,
    diou_nms,
    nms,
    soft_nms,
)
from scaledet.ops.receptive_field import RFLayer, receptive_field, receptive_field_table

__all__ = [
    "BOX_FORMATS",
    "IOU_KINDS",
    "RFLayer",
    "batched_diou_nms",
    "batched_nms",
    "batched_soft_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "check_boxes",
    "clip_boxes",
    "diou_nms",
    "nms",
    "receptive_field",
    "receptive_field_table",
    "remove_small_boxes",
    "scale_boxes",
    "soft_nms",
    "to_original_pixels",
]

