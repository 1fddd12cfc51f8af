"""scaledet.models.heads: dense detection heads on a shared base."""

from scaledet.models.heads.centernet import CenterNetHead
from scaledet.models.heads.dense import DenseHead, PostProcess, postprocess
from scaledet.models.heads.fcos import FCOSHead
from scaledet.models.heads.yolo import YOLOXHead

__all__ = ["CenterNetHead", "DenseHead", "FCOSHead", "PostProcess", "YOLOXHead", "postprocess"]
