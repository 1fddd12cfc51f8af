"""MobileNet: a plain stack of depthwise-separable convolutions (Howard et al., 2017).

Every block is a :class:`~scaledet.models.layers.DWSepConv` (``3 x 3`` depthwise then ``1 x 1``
pointwise, each with BatchNorm and activation); no residuals, no channel split. MobileNetV1 1.0
is ``widths=(32, 128, 256, 512, 1024)``, ``depths=(1, 1, 5, 1)`` (without V1's first stride-1
64-channel block). The simplest of the three backbones, and the one whose FLOPs are almost all
in ``1 x 1`` convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from scaledet.models.backbones.staged import StagedBackbone, check_widths_depths
from scaledet.models.layers import ConvBNAct, DWSepConv, init_weights


class MobileNet(StagedBackbone):
    """Stem (dense ``3 x 3`` conv, stride 2), then four stages of one stride-2
    :class:`~scaledet.models.layers.DWSepConv` and ``depths[i]`` stride-1 ones.

    Args:
        widths: channels of ``(stem, stride-4, stride-8, stride-16, stride-32)``.
        depths: stride-1 blocks per stage ``(stride-4, stride-8, stride-16, stride-32)``.
        act: activation name (see :mod:`scaledet.models.layers`).
        out_strides: which of the strides 4, 8, 16, 32 to return.
    """

    def __init__(self, *, widths: Sequence[int] = (16, 32, 64, 128, 256),
                 depths: Sequence[int] = (1, 1, 3, 1), act: str = "relu",
                 out_strides: Sequence[int] = (8, 16, 32)) -> None:
        check_widths_depths(widths, depths)
        stem = ConvBNAct(3, widths[0], k=3, s=2, act=act)
        stages = []
        for cin, cout, n in zip(widths[:-1], widths[1:], depths):
            blocks = [DWSepConv(cin, cout, s=2, act=act)]
            blocks += [DWSepConv(cout, cout, act=act) for _ in range(n)]
            stages.append(nn.Sequential(*blocks))
        super().__init__(stem, stages, widths, out_strides)
        init_weights(self)
