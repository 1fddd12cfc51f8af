"""Feature pyramid necks: FPN (top-down) with an optional PAN bottom-up path, and SPPF."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.models.layers import ConvBNAct, CSPBlock, conv_block, init_weights


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast (YOLOv5): ``1x1`` conv, then ``k x k`` stride-1 max-pool
    applied three times in sequence, the four maps concatenated, then a ``1x1`` conv.

    Three chained ``5x5`` pools see ``5, 9, 13`` pixels, so ``SPPF(k=5)`` computes exactly
    :class:`SPP` with ``kernels=(5, 9, 13)`` at a fraction of the cost (max is idempotent over
    overlapping windows). ``(B, cin, H, W) -> (B, cout, H, W)``.
    """

    def __init__(self, cin: int, cout: int, *, k: int = 5, act: str = "relu") -> None:
        super().__init__()
        hidden = cin // 2
        self.cv1 = ConvBNAct(cin, hidden, k=1, act=act)
        self.pool = nn.MaxPool2d(k, stride=1, padding=k // 2)
        self.cv2 = ConvBNAct(4 * hidden, cout, k=1, act=act)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], dim=1))


class SPP(nn.Module):
    """Spatial pyramid pooling (He et al.; YOLOv3-SPP form): parallel stride-1 max-pools of
    sizes ``kernels`` on the ``1x1``-reduced input, concatenated with it. Same parameters as
    :class:`SPPF`; kept as the reference the SPPF equivalence is tested against."""

    def __init__(self, cin: int, cout: int, *, kernels: Sequence[int] = (5, 9, 13),
                 act: str = "relu") -> None:
        super().__init__()
        hidden = cin // 2
        self.cv1 = ConvBNAct(cin, hidden, k=1, act=act)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernels)
        self.cv2 = ConvBNAct((len(kernels) + 1) * hidden, cout, k=1, act=act)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [pool(x) for pool in self.pools], dim=1))


def _upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    # Nearest upsampling to the reference's exact size: odd input sizes give levels that are
    # not exact multiples of each other (e.g. 8 -> 15), so a fixed scale factor would not fit.
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


class PAFPN(nn.Module):
    """FPN top-down path (Lin et al.) plus an optional PAN bottom-up path (Liu et al.).

    ``in_channels`` are the backbone's channels per level, finest first. The deepest input first
    goes through :class:`SPPF`. Lateral ``1x1`` convs bring every level to ``channels``; levels
    are merged by addition (cheaper than YOLO's concatenation) and each merge is followed by a
    :class:`CSPBlock` (``depth`` bottlenecks, 0 means a single ``3x3`` conv).

    list of ``(B, in_channels[i], H_i, W_i)`` -> list of ``(B, channels, H_i, W_i)``.

    ``strides`` (the input levels' strides, default: each twice the previous) only matter to the
    bottom-up path: two levels of equal stride (an atrous last backbone stage, see
    :mod:`scaledet.models.backbones.dilation`) are joined by a stride-1 conv instead of stride 2.
    """

    def __init__(self, *, in_channels: Sequence[int], channels: int = 64,
                 bottom_up: bool = True, sppf_k: int = 5, depth: int = 1,
                 depthwise: bool = False, act: str = "relu",
                 strides: Sequence[int] | None = None) -> None:
        super().__init__()
        n = len(in_channels)
        self.sppf = SPPF(in_channels[-1], in_channels[-1], k=sppf_k, act=act)
        self.lateral = nn.ModuleList(ConvBNAct(c, channels, k=1, act=act) for c in in_channels)

        def fuse() -> nn.Module:
            if depth == 0:
                return conv_block(channels, channels, depthwise=depthwise, act=act)
            return CSPBlock(channels, channels, n=depth, depthwise=depthwise, act=act)

        self.top_down = nn.ModuleList(fuse() for _ in range(n - 1))
        self.bottom_up = bottom_up
        if bottom_up:
            steps = [2] * (n - 1) if strides is None else [
                strides[i + 1] // strides[i] for i in range(n - 1)]
            self.down = nn.ModuleList(conv_block(channels, channels, s=s, depthwise=depthwise,
                                                 act=act) for s in steps)
            self.bottom_up_fuse = nn.ModuleList(fuse() for _ in range(n - 1))
        self.out_channels = [channels] * n
        init_weights(self)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        feats = list(feats[:-1]) + [self.sppf(feats[-1])]
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        outs = [lat[-1]]
        for i in range(len(lat) - 2, -1, -1):  # coarse to fine
            outs.insert(0, self.top_down[i](lat[i] + _upsample_to(outs[0], lat[i])))
        if self.bottom_up:
            for i in range(1, len(outs)):  # fine to coarse
                # a 3x3 stride-2 conv gives ceil(n / 2) like the backbone's, so sizes match
                down = self.down[i - 1](outs[i - 1])
                outs[i] = self.bottom_up_fuse[i - 1](outs[i] + down)
        return outs

