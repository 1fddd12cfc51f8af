"""Small building blocks shared by backbones, necks and heads.

Every block is ``Conv2d(bias=False) -> BatchNorm2d -> activation`` (or a depthwise-separable
pair of those) so that models train from scratch without pretrained weights: BatchNorm keeps
activations well scaled and the convolutions use Kaiming-normal init (see :func:`init_weights`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

ACTIVATIONS = ("relu", "silu", "leaky_relu", "hardswish")


def make_act(name: str) -> nn.Module:
    """Return the activation module called ``name`` (one of :data:`ACTIVATIONS`).

    SiLU and Hardswish are not in-place: their backward needs the input, so autograd would
    clone it before an in-place call, so out of place is cheaper. ReLU's backward needs only
    its output, so it stays in-place."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "silu":
        return nn.SiLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "hardswish":
        return nn.Hardswish()
    raise ValueError(f"act must be one of {ACTIVATIONS}, got {name!r}")


def make_norm(name: str, channels: int) -> nn.Module:
    """``"bn"``: BatchNorm2d; ``"gn"``: GroupNorm with 16 groups (fewer if ``channels`` is not
    divisible), independent of the batch, so it suits heads shared across pyramid levels."""
    if name == "bn":
        return nn.BatchNorm2d(channels)
    if name == "gn":
        groups = next(g for g in (16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm must be 'bn' or 'gn', got {name!r}")


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``groups == in_channels``; strided ones run in float32 under CPU
    autocast.

    oneDNN's bfloat16 depthwise kernels at stride 2 are many times slower than its float32
    ones on CPUs without native bf16 convolutions; at stride 1 they are about as fast, and
    casting would cost more than it saves. Same parameters and ``state_dict`` keys as
    ``nn.Conv2d``.
    """

    def __init__(self, channels: int, k: int = 3, s: int = 1) -> None:
        super().__init__(channels, channels, k, s, k // 2, groups=channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride[0] > 1 and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def _conv(cin: int, cout: int, k: int, s: int, groups: int) -> nn.Conv2d:
    if groups == cin == cout and groups > 1:
        return DepthwiseConv2d(cin, k, s)
    return nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False)


class ConvBNAct(nn.Sequential):
    """``k x k`` convolution (no bias) + norm (BatchNorm by default) + activation;
    ``(B, cin, H, W) -> (B, cout, ceil(H / s), ceil(W / s))``."""

    def __init__(self, cin: int, cout: int, *, k: int = 3, s: int = 1, groups: int = 1,
                 act: str | None = "relu", norm: str = "bn") -> None:
        super().__init__(
            _conv(cin, cout, k, s, groups),
            make_norm(norm, cout),
        )
        if act is not None:
            self.append(make_act(act))
        self.out_channels = cout


class DWSepConv(nn.Sequential):
    """Depthwise-separable convolution (MobileNet): depthwise ``k x k`` (stride ``s``) then
    pointwise ``1 x 1``, each with BatchNorm and activation. About ``k*k`` times fewer FLOPs than
    a dense ``k x k`` convolution when ``cout`` is large."""

    def __init__(self, cin: int, cout: int, *, k: int = 3, s: int = 1, act: str = "relu",
                 norm: str = "bn") -> None:
        super().__init__(
            ConvBNAct(cin, cin, k=k, s=s, groups=cin, act=act, norm=norm),
            ConvBNAct(cin, cout, k=1, act=act, norm=norm),
        )
        self.out_channels = cout


def conv_block(cin: int, cout: int, *, k: int = 3, s: int = 1, depthwise: bool = False,
               act: str = "relu", norm: str = "bn") -> nn.Module:
    """A dense :class:`ConvBNAct` or, with ``depthwise``, a :class:`DWSepConv` (only for k > 1)."""
    if depthwise and k > 1:
        return DWSepConv(cin, cout, k=k, s=s, act=act, norm=norm)
    return ConvBNAct(cin, cout, k=k, s=s, act=act, norm=norm)


class LevelNormTower(nn.Module):
    """Conv blocks whose convolutions are shared by all pyramid levels but whose BatchNorms are
    per level (as in EfficientDet's box/class nets): BatchNorm statistics differ between levels,
    so one shared BatchNorm would normalise with the wrong running statistics at test time.

    Same layers as ``num_convs`` :func:`conv_block` s (depthwise-separable when ``depthwise``),
    but no GroupNorm: on a CPU GroupNorm is a large share of a light head's training step,
    while BatchNorm is cheap and folds into the conv at inference.
    ``forward(x, level)``: ``(B, c, H, W) -> (B, c, H, W)``.
    """

    def __init__(self, channels: int, *, num_convs: int, num_levels: int, depthwise: bool = True,
                 act: str = "relu") -> None:
        super().__init__()
        c, convs = channels, []
        for _ in range(num_convs):
            if depthwise:
                convs += [DepthwiseConv2d(c), nn.Conv2d(c, c, 1, bias=False)]
            else:
                convs.append(nn.Conv2d(c, c, 3, 1, 1, bias=False))
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(c) for _ in convs)
                                   for _ in range(num_levels))
        self.act = make_act(act)
        self.fused: nn.ModuleList | None = None  # set by fuse()

    def forward(self, x: Tensor, level: int) -> Tensor:
        if self.fused is not None:
            for conv in self.fused[level]:
                x = self.act(conv(x))
            return x
        for conv, norm in zip(self.convs, self.norms[level]):
            x = self.act(norm(conv(x)))
        return x

    def fuse(self) -> None:
        """Inference only: one conv per level with that level's BatchNorm folded in."""
        self.fused = nn.ModuleList(
            nn.ModuleList(nn.utils.fusion.fuse_conv_bn_eval(conv, norm)
                          for conv, norm in zip(self.convs, norms))
            for norms in self.norms)
        del self.convs, self.norms


class Bottleneck(nn.Module):
    """Two ``3 x 3`` convolutions with an identity shortcut (ResNet basic block without the
    final activation); ``(B, c, H, W) -> (B, c, H, W)``."""

    def __init__(self, c: int, *, depthwise: bool = False, act: str = "relu") -> None:
        super().__init__()
        self.conv1 = conv_block(c, c, depthwise=depthwise, act=act)
        self.conv2 = conv_block(c, c, depthwise=depthwise, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class CSPBlock(nn.Module):
    """Cross-stage-partial block in the C2f form of YOLOv8.

    A ``1 x 1`` conv splits the input into two halves; ``n`` bottlenecks run on one half and
    every intermediate output is concatenated with the untouched half before a final ``1 x 1``
    conv. Only half the channels pass through the ``3 x 3`` convolutions, which is what makes CSP
    blocks cheap, and the concatenation keeps a short gradient path for training from scratch.
    ``(B, cin, H, W) -> (B, cout, H, W)``.
    """

    def __init__(self, cin: int, cout: int, *, n: int = 1, depthwise: bool = False,
                 act: str = "relu") -> None:
        super().__init__()
        self.hidden = max(cout // 2, 8)
        self.cv1 = ConvBNAct(cin, 2 * self.hidden, k=1, act=act)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, depthwise=depthwise, act=act)
                                    for _ in range(n))
        self.cv2 = ConvBNAct((2 + n) * self.hidden, cout, k=1, act=act)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.cv1(x).split(self.hidden, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan-out) init for convolutions, BatchNorm to identity; for training from
    scratch. Heads re-initialise their prediction layers afterwards (prior-probability bias)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def checkpoint_call(module: nn.Module, forward: Callable, *args, **kwargs):
    """``forward(*args, **kwargs)`` under ``torch.utils.checkpoint``: ``module``'s activations are
    recomputed in the backward pass instead of stored. The recomputation leaves BatchNorm running
    statistics untouched, so they are updated once per step, as without checkpointing."""
    return checkpoint(forward, *args, use_reentrant=False,
                      context_fn=functools.partial(_recompute_contexts, module), **kwargs)


def _recompute_contexts(module: nn.Module):
    return contextlib.nullcontext(), _frozen_bn_stats(module)


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm still normalises with batch statistics, but momentum 0 makes its running-statistics
    update a no-op; the batch counter is restored afterwards."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def fuse_conv_bn(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm of a :class:`ConvBNAct` or :class:`LevelNormTower` into its
    convolution, in place (``y = gamma (conv(x) - mean) / sqrt(var + eps) + beta`` becomes one
    conv with a bias); for inference only: the fused model must not be trained. Returns the
    number folded."""
    count = 0
    for m in list(module.modules()):
        if isinstance(m, ConvBNAct) and isinstance(m[1], nn.BatchNorm2d) and not m[1].training:
            m[0] = nn.utils.fusion.fuse_conv_bn_eval(m[0], m[1])
            m[1] = nn.Identity()
            count += 1
        elif isinstance(m, LevelNormTower) and m.fused is None and not m.training:
            count += sum(len(norms) for norms in m.norms)
            m.fuse()
    return count
