"""CSPNet: a light CNN backbone for CPU training from scratch (CSP/C2f blocks as in YOLOv8)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from scaledet.models.layers import ConvBNAct, CSPBlock, checkpoint_call, conv_block, init_weights


class CSPNet(nn.Module):
    """Stem + four stages (each a stride-2 conv followed by a :class:`CSPBlock`).

    ``(B, 3, H, W)`` -> list of feature maps at ``out_strides`` (a subset of 4, 8, 16, 32) with
    channels ``self.out_channels`` (one entry per returned level, finest first).

    Args:
        widths: channels of ``(stem, stride-4, stride-8, stride-16, stride-32)``.
        depths: bottlenecks per stage ``(stride-4, stride-8, stride-16, stride-32)``; 0 skips
            the CSP block of that stage (only the downsampling conv is kept).
        depthwise: use depthwise-separable ``3 x 3`` convs in the stages (not in the stem).
        act: activation name (see :mod:`scaledet.models.layers`).
        out_strides: which strides to return.
        grad_ckpt: recompute each stage in the backward pass (``torch.utils.checkpoint``) to
            save activation memory (see :meth:`set_grad_checkpointing`).
    """

    def __init__(self, *, widths: Sequence[int] = (16, 32, 64, 128, 256),
                 depths: Sequence[int] = (1, 2, 2, 1), depthwise: bool = False,
                 act: str = "relu", out_strides: Sequence[int] = (8, 16, 32),
                 grad_ckpt: bool = False) -> None:
        super().__init__()
        if len(widths) != 5 or len(depths) != 4:
            raise ValueError(f"widths needs 5 entries and depths 4, got {widths}, {depths}")
        if not set(out_strides) <= {4, 8, 16, 32}:
            raise ValueError(f"out_strides must be a subset of (4, 8, 16, 32), got {out_strides}")
        self.stem = ConvBNAct(3, widths[0], k=3, s=2, act=act)
        self.stages = nn.ModuleList()
        for cin, cout, n in zip(widths[:-1], widths[1:], depths):
            stage = nn.Sequential(conv_block(cin, cout, s=2, depthwise=depthwise, act=act))
            if n > 0:
                stage.append(CSPBlock(cout, cout, n=n, depthwise=depthwise, act=act))
            self.stages.append(stage)
        self.out_strides = tuple(sorted(out_strides))
        self.out_channels = [widths[1 + (4, 8, 16, 32).index(s)] for s in self.out_strides]
        self.grad_ckpt = grad_ckpt
        init_weights(self)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Store only each stage's input in training and recompute the stage in the backward
        pass: less activation memory for about one extra backbone forward per step. The
        recomputation leaves BatchNorm running statistics untouched, so they are updated once
        per step as without checkpointing."""
        self.grad_ckpt = enable

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for stride, stage in zip((4, 8, 16, 32), self.stages):
            if self.grad_ckpt and self.training and torch.is_grad_enabled():
                x = checkpoint_call(stage, stage, x)
            else:
                x = stage(x)
            if stride in self.out_strides:
                outs.append(x)
        return outs
