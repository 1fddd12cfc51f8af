"""Atrous (dilated) last stage for any staged backbone (DeepLab; torchvision's
``replace_stride_with_dilation`` does the same for ResNets only).

The last stage's stride-2 convolutions become stride 1 and every later ``k x k`` convolution of
that stage (``k > 1``) gets dilation 2: the stage's output keeps the stride-16 resolution while
its theoretical receptive field stays that of the stride-32 original (a dilated ``3 x 3`` at
jump 16 spans ``2 * 2 * 16 = 64`` pixels, like a plain ``3 x 3`` at jump 32). Without the
dilation the field would shrink. The weights keep their shapes, so the change is free in
parameters; the stage costs about 4x its original FLOPs (4x as many output positions).

Necks must then merge two levels of equal stride: :class:`~scaledet.models.necks.pan.PAFPN`
takes ``strides`` for that (its bottom-up convolution between them has stride 1).
"""

from __future__ import annotations

from torch import nn

from scaledet.models.backbones.staged import STAGE_STRIDES


def dilate_last_stage(backbone: nn.Module) -> tuple[int, ...]:
    """Make ``backbone.stages[-1]`` atrous (in place) and return the actual output strides.

    ``backbone`` needs ``stages`` (four modules for strides 4, 8, 16, 32) and ``out_strides``
    (which of those it returns); ``out_strides`` keeps naming the stages, the return value (also
    stored as ``backbone.feature_strides``) has 16 in place of 32. Raises ``ValueError`` if the
    last stage has no stride-2 convolution (already dilated).
    """
    stage = backbone.stages[-1]
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    strided = [c for c in convs if c.stride == (2, 2)]
    if not strided:
        raise ValueError("the backbone's last stage has no stride-2 convolution to dilate")
    for conv in convs:
        if conv.stride == (2, 2):
            conv.stride = (1, 1)
        elif conv.kernel_size[0] > 1:
            conv.dilation = (2, 2)
            conv.padding = (conv.kernel_size[0] // 2 * 2, conv.kernel_size[1] // 2 * 2)
    strides = tuple(16 if s == STAGE_STRIDES[-1] else s for s in backbone.out_strides)
    backbone.feature_strides = strides
    return strides
