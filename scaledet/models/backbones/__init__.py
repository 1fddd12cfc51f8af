"""scaledet.models.backbones: feature extractors returning a list of maps, finest first."""

from scaledet.models.backbones.csp import CSPNet
from scaledet.models.backbones.dilation import dilate_last_stage
from scaledet.models.backbones.mobilenet import MobileNet
from scaledet.models.backbones.snet import SNet

__all__ = ["CSPNet", "MobileNet", "SNet", "dilate_last_stage"]
