"""SNet: the ShuffleNetV2-style backbone of ThunderNet (Qin et al., ICCV 2019).

ShuffleNetV2 units (Ma et al., ECCV 2018) with every ``3 x 3`` depthwise convolution replaced
by a ``5 x 5`` one: depthwise convolutions cost little, so the larger kernel buys a much larger
receptive field (ThunderNet's argument for detection on small inputs) for a few percent more
FLOPs. ThunderNet's SNet49 is ``widths=(24, 24, 60, 120, 240)``, ``depths=(0, 3, 7, 3)``
(without its final ``1 x 1`` conv5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from scaledet.models.backbones.staged import StagedBackbone, check_widths_depths
from scaledet.models.layers import ConvBNAct, init_weights


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    """``(B, C, H, W)`` with channels ``[g0 ..., g1 ...]`` -> interleaved ``[g0_0, g1_0, ...]``
    (ShuffleNet), so information crosses the two branches of the next unit."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit with ``k x k`` depthwise convolutions.

    Stride 1: half the channels pass unchanged, the other half go through ``1x1 -> dw kxk ->
    1x1``; stride 2: both branches see the whole input (``dw kxk s2 -> 1x1`` and ``1x1 -> dw
    kxk s2 -> 1x1``), each giving ``cout / 2`` channels. Then concatenation and a channel
    shuffle. ``(B, cin, H, W) -> (B, cout, ceil(H / s), ceil(W / s))``; ``cout`` must be even
    and equal ``cin`` at stride 1.
    """

    def __init__(self, cin: int, cout: int, *, s: int = 1, k: int = 5, act: str = "relu") -> None:
        super().__init__()
        if cout % 2 or (s == 1 and cin != cout):
            raise ValueError(f"ShuffleUnit needs an even cout (== cin at stride 1), got "
                             f"cin={cin}, cout={cout}, s={s}")
        half = cout // 2
        self.stride = s
        branch_in = cin if s == 2 else half
        if s == 2:
            self.branch1 = nn.Sequential(ConvBNAct(cin, cin, k=k, s=2, groups=cin, act=None),
                                         ConvBNAct(cin, half, k=1, act=act))
        self.branch2 = nn.Sequential(
            ConvBNAct(branch_in, half, k=1, act=act),
            ConvBNAct(half, half, k=k, s=s, groups=half, act=None),
            ConvBNAct(half, half, k=1, act=act),
        )
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return channel_shuffle(out)


class SNet(StagedBackbone):
    """Stem (``3 x 3`` conv, stride 2), then the stride-4 stage (``3 x 3`` max-pool, a ``1 x 1``
    conv if ``widths[1] != widths[0]``, ``depths[0]`` stride-1 units), then three stages of one
    stride-2 :class:`ShuffleUnit` and ``depths[i]`` stride-1 units.

    Args:
        widths: channels of ``(stem, stride-4, stride-8, stride-16, stride-32)``; the last three
            must be even.
        depths: stride-1 units per stage ``(stride-4, stride-8, stride-16, stride-32)``.
        kernel: depthwise kernel size (5 in ThunderNet, 3 in ShuffleNetV2).
        act: activation name (see :mod:`scaledet.models.layers`).
        out_strides: which of the strides 4, 8, 16, 32 to return.
    """

    def __init__(self, *, widths: Sequence[int] = (24, 24, 60, 120, 240),
                 depths: Sequence[int] = (0, 3, 7, 3), kernel: int = 5, act: str = "relu",
                 out_strides: Sequence[int] = (8, 16, 32)) -> None:
        check_widths_depths(widths, depths)
        stem = ConvBNAct(3, widths[0], k=3, s=2, act=act)
        first = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1))
        if widths[1] != widths[0]:
            first.append(ConvBNAct(widths[0], widths[1], k=1, act=act))
        first.extend(ShuffleUnit(widths[1], widths[1], k=kernel, act=act)
                     for _ in range(depths[0]))
        stages = [first]
        for cin, cout, n in zip(widths[1:-1], widths[2:], depths[1:]):
            units = [ShuffleUnit(cin, cout, s=2, k=kernel, act=act)]
            units += [ShuffleUnit(cout, cout, k=kernel, act=act) for _ in range(n)]
            stages.append(nn.Sequential(*units))
        super().__init__(stem, stages, widths, out_strides)
        init_weights(self)
