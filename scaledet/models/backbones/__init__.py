"""scaledet.models.backbones: feature extractors returning a list of maps, finest first."""

from scaledet.models.backbones.csp import CSPNet

__all__ = ["CSPNet"]
