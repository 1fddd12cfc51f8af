"""scaledet.models.heads: dense detection heads on a shared base."""

from scaledet.models.heads.dense import DenseHead, PostProcess, postprocess
from scaledet.models.heads.fcos import FCOSHead

__all__ = ["DenseHead", "FCOSHead", "PostProcess", "postprocess"]
