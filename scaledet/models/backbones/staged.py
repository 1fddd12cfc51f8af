"""The skeleton the SNet and MobileNet backbones share: a stem, four stages (strides 4, 8, 16,
32), and the feature maps of the chosen stages returned finest first."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

STAGE_STRIDES = (4, 8, 16, 32)


class StagedBackbone(nn.Module):
    """``stem`` then ``stages`` (four modules, strides 4, 8, 16, 32 of the input).

    ``(B, 3, H, W)`` -> list of maps at ``out_strides`` with channels ``out_channels``; stride
    ``s`` gives ``ceil(H / s) x ceil(W / s)`` maps. ``widths`` are the channels of
    ``(stem, stride-4, stride-8, stride-16, stride-32)``.
    """

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], widths: Sequence[int],
                 out_strides: Sequence[int]) -> None:
        super().__init__()
        if not set(out_strides) <= set(STAGE_STRIDES) or not out_strides:
            raise ValueError(f"out_strides must be a non-empty subset of {STAGE_STRIDES}, got "
                             f"{tuple(out_strides)}")
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.out_strides = tuple(sorted(out_strides))
        self.feature_strides = self.out_strides  # differs once the last stage is dilated
        self.out_channels = [widths[1 + STAGE_STRIDES.index(s)] for s in self.out_strides]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for stride, stage in zip(STAGE_STRIDES, self.stages):
            x = stage(x)
            if stride in self.out_strides:
                outs.append(x)
        return outs


def check_widths_depths(widths: Sequence[int], depths: Sequence[int]) -> None:
    if len(widths) != 5 or len(depths) != 4:
        raise ValueError(f"widths needs 5 entries and depths 4, got {tuple(widths)}, "
                         f"{tuple(depths)}")
    if min(widths) < 1 or min(depths) < 0:
        raise ValueError(f"widths must be >= 1 and depths >= 0, got {tuple(widths)}, "
                         f"{tuple(depths)}")
