"""scaledet.models.keypoints: parts of top-down pose models (issue 23): the heatmap and RLE
heads, heatmap decoding (arg-max + quarter offset, DARK) and the RealNVP flow of RLE's loss.
Their losses and targets are in :mod:`scaledet.losses.keypoints`."""

from scaledet.models.keypoints.decode import decode_argmax, decode_dark, gaussian_blur
from scaledet.models.keypoints.flow import AffineCoupling, RealNVP
from scaledet.models.keypoints.heads import HeatmapHead, RLEHead

__all__ = ["AffineCoupling", "HeatmapHead", "RLEHead", "RealNVP", "decode_argmax", "decode_dark",
           "gaussian_blur"]
