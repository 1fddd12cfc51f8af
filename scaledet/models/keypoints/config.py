"""Typed configs of the top-down pose models (:class:`~scaledet.models.keypoints.pose.PoseModel`).

A :class:`PoseConfig` describes a pose model completely, as
:class:`~scaledet.models.config.ModelConfig` does a detector: its ``asdict`` form is stored in
checkpoints (with ``task: "pose"``, which is how a checkpoint says which kind of model it
holds) and :func:`pose_config_from_dict` turns it back. The backbone and neck are the
detector's parts and configs; the head is one of two families, picked by ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scaledet.models.config import BackboneConfig, NeckConfig, from_dict
from scaledet.models.keypoints.heads import HeatmapHead, RLEHead

POSE_TASK = "pose"


@dataclass
class HeatmapHeadConfig:
    """:class:`~scaledet.models.keypoints.heads.HeatmapHead` on the neck's finest level
    (stride 8), upsampled ``num_upsample`` times (1: heatmaps at stride 4, SimpleBaseline's).
    ``sigma``: the Gaussian targets' standard deviation in heatmap pixels. ``decode``:
    ``"dark"`` or ``"argmax"`` (quarter offset); ``blur``: DARK's kernel (about ``6 sigma - 1``,
    odd)."""

    kind: str = "heatmap"
    channels: int = 64
    num_upsample: int = 1
    upsample: str = "deconv"
    sigma: float = 2.0
    decode: str = "dark"
    blur: int = 11

    def __post_init__(self) -> None:
        if self.decode not in ("dark", "argmax"):
            raise ValueError(f"head.decode must be 'dark' or 'argmax', got {self.decode!r}")
        if not self.sigma > 0:
            raise ValueError(f"head.sigma must be > 0 heatmap pixels, got {self.sigma}")

    def build(self, *, in_channels: int, num_keypoints: int, act: str) -> HeatmapHead:
        return HeatmapHead(in_channels, num_keypoints, channels=self.channels,
                           num_upsample=self.num_upsample, upsample=self.upsample, act=act)


@dataclass
class RLEHeadConfig:
    """:class:`~scaledet.models.keypoints.heads.RLEHead`. ``readout="fc"`` (RLE's): on the
    neck's deepest level (stride 32), average-pooled to a ``pool`` ``(rows, cols)`` grid and
    flattened (RLE's ResNet-50 pools to 1 x 1 over 2048 channels; a 64-channel neck keeps the
    layout of the crop instead), then ``hidden`` units, then the joints' positions and scales.
    ``readout="integral"``: on the finest level (stride 8); positions are the soft-argmax of a
    map per joint, scales come from the pooled features as above. ``flow_*`` and ``prior``
    are the loss's."""

    kind: str = "rle"
    pool: tuple[int, int] = (4, 3)
    hidden: int = 256
    flow_layers: int = 6
    flow_hidden: int = 64
    prior: str = "laplace"
    readout: str = "fc"

    def build(self, *, in_channels: int, num_keypoints: int, act: str) -> RLEHead:
        return RLEHead(in_channels, num_keypoints, pool=self.pool, hidden=self.hidden,
                       flow_layers=self.flow_layers, flow_hidden=self.flow_hidden,
                       prior=self.prior, readout=self.readout)


@dataclass
class PoseConfig:
    """Everything needed to rebuild a top-down pose model.

    ``input_size``: the crop ``(height, width)`` in pixels, multiples of the largest stride.
    ``box_padding``: a person box is widened to the crop's aspect ratio, then scaled by this
    (the joints near the box edge keep some context). ``flip_test``: average the predictions of
    the crop and of its mirror image at inference (joints swapped by the dataset's left/right
    table), as SimpleBaseline and HRNet report."""

    name: str = "pose-heatmap-n"
    task: str = POSE_TASK
    num_keypoints: int = 17
    input_size: tuple[int, int] = (128, 96)
    strides: tuple[int, ...] = (8, 16, 32)
    act: str = "silu"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    head: HeatmapHeadConfig | RLEHeadConfig = field(default_factory=HeatmapHeadConfig)
    box_padding: float = 1.25
    flip_test: bool = False

    def __post_init__(self) -> None:
        if self.task != POSE_TASK:
            raise ValueError(f"task must be {POSE_TASK!r}, got {self.task!r}")
        if len(self.input_size) != 2 or any(int(s) % max(self.strides) or s <= 0
                                            for s in self.input_size):
            raise ValueError(f"input_size must be (height, width), both positive multiples of "
                             f"{max(self.strides)}, got {self.input_size}")
        if self.num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {self.num_keypoints}")
        if not self.box_padding > 0:
            raise ValueError(f"box_padding must be > 0, got {self.box_padding}")


def is_pose_config(data: object) -> bool:
    """Whether a config (dataclass or ``asdict`` form) is a pose model's."""
    if isinstance(data, PoseConfig):
        return True
    return isinstance(data, dict) and data.get("task") == POSE_TASK


def pose_config_from_dict(data: dict) -> PoseConfig:
    """Inverse of ``dataclasses.asdict`` for :class:`PoseConfig` (errors name the field)."""
    return from_dict(PoseConfig, data, "model")
