"""scaledet.models.necks: feature pyramids."""

from scaledet.models.necks.pan import PAFPN, SPP, SPPF

__all__ = ["PAFPN", "SPP", "SPPF"]
