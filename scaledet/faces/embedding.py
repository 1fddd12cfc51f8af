"""The face embedding network: MobileFaceNet-style (Chen et al., 2018), aligned face crop in,
L2-normalised embedding out.

A recognition network maps an aligned face to a point on the unit sphere such that two faces of
one person lie at a small angle. MobileFaceNet does this for mobile budgets with:

- a stride-2 ``3x3`` convolution and a depthwise ``3x3`` at the input;
- MobileNetV2 inverted residual blocks (``1x1`` expansion, depthwise ``3x3``, linear ``1x1``
  projection, a residual where the shape allows) in stages that bring the total stride to 16;
- a ``1x1`` convolution to ``head_channels``, then the *global depthwise convolution* (GDC): a
  depthwise convolution whose kernel covers the whole final map (``7x7`` at 112 px). Global
  average pooling would weight the face's centre and its corners alike; the GDC learns a
  weight per position and channel (the eyes matter more than the background corners);
- a linear ``1x1`` to ``embedding_dim`` and BatchNorm (no activation), then L2 normalisation.

Activations are PReLU, as in the paper. ``input_size`` must be a multiple of 16: 112 is the
standard aligned crop (:data:`scaledet.faces.ARCFACE_TEMPLATE_112`); smaller multiples (64, 48)
and ``width < 1`` make CPU training fast on small data. The final map is
``input_size / 16`` square and sets the GDC's kernel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.models.layers import DepthwiseConv2d

__all__ = ["EMBEDDING_ARCHS", "MOBILEFACENET_STAGES", "EmbeddingConfig", "FaceEmbedder",
           "embedding_config"]

MOBILEFACENET_STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2),
                        (2, 128, 2, 1))
"""The paper's bottleneck stages: ``(expansion, out_channels, blocks, first_stride)``."""


@dataclass
class EmbeddingConfig:
    """Architecture of :class:`FaceEmbedder`.

    Attributes:
        input_size: side of the square aligned crop in pixels, a multiple of 16.
        embedding_dim: size of the embedding (128 in MobileFaceNet, 512 in ArcFace's models).
        width: multiplier of every channel count (rounded to a multiple of 8, at least 8).
        stem_channels: channels of the input convolution and the depthwise one after it.
        stages: ``(expansion, out_channels, blocks, first_stride)`` per stage; the strides of
            the stem (2) and of the stages must multiply to 16.
        head_channels: channels of the ``1x1`` convolution before the GDC.
        dropout: dropout on the GDC output during training (0: none).
    """

    input_size: int = 112
    embedding_dim: int = 128
    width: float = 1.0
    stem_channels: int = 64
    stages: tuple[tuple[int, int, int, int], ...] = field(
        default_factory=lambda: MOBILEFACENET_STAGES)
    head_channels: int = 512
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.stages = tuple(tuple(int(v) for v in s) for s in self.stages)
        if self.input_size <= 0 or self.input_size % 16:
            raise ValueError(f"input_size must be a positive multiple of 16, got "
                             f"{self.input_size}")
        if self.embedding_dim <= 0 or self.width <= 0 or self.head_channels <= 0:
            raise ValueError("embedding_dim, width and head_channels must be positive")
        stride = 2
        for s in self.stages:
            if len(s) != 4 or min(s) < 1:
                raise ValueError(f"each stage is (expansion, out_channels, blocks, stride) of "
                                 f"positive integers, got {s}")
            stride *= s[3]
        if stride != 16:
            raise ValueError(f"the stem (2) and the stages' strides must multiply to 16, got "
                             f"{stride}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return {**asdict(self), "stages": [list(s) for s in self.stages]}

    @classmethod
    def from_dict(cls, d: dict) -> EmbeddingConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown EmbeddingConfig fields {sorted(unknown)}")
        return cls(**{**d, "stages": tuple(tuple(s) for s in d.get("stages",
                                                                    MOBILEFACENET_STAGES))})


def _ch(c: int, width: float) -> int:
    return max(8, int(round(c * width / 8)) * 8)


class _ConvBN(nn.Sequential):
    """Convolution (no bias) + BatchNorm (+ PReLU unless ``linear``)."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, *, depthwise: bool = False,
                 linear: bool = False, padding: int | None = None) -> None:
        if depthwise and padding is None:
            conv: nn.Module = DepthwiseConv2d(cin, k, s)
        else:
            conv = nn.Conv2d(cin, cout, k, s, k // 2 if padding is None else padding,
                             groups=cin if depthwise else 1, bias=False)
        super().__init__(conv, nn.BatchNorm2d(cout))
        if not linear:
            self.append(nn.PReLU(cout))


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: expand ``1x1``, depthwise ``3x3`` (stride ``s``), linear ``1x1``;
    residual when the stride is 1 and the channels match."""

    def __init__(self, cin: int, cout: int, expansion: int, s: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.body = nn.Sequential(_ConvBN(cin, hidden), _ConvBN(hidden, hidden, 3, s,
                                                                 depthwise=True),
                                  _ConvBN(hidden, cout, linear=True))
        self.residual = s == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class FaceEmbedder(nn.Module):
    """MobileFaceNet-style embedding network (see the module docstring).

    ``forward(images)``: ``(B, 3, S, S)`` float images (``S = cfg.input_size``, values as the
    training normalised them: :meth:`normalize` maps uint8-range RGB to about [-1, 1]) to
    ``(B, embedding_dim)`` L2-normalised embeddings. ``features(images)`` gives them before
    the normalisation (the margin heads normalise themselves; the norm carries no identity).
    """

    def __init__(self, cfg: EmbeddingConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or EmbeddingConfig()
        stem = _ch(cfg.stem_channels, cfg.width)
        layers: list[nn.Module] = [_ConvBN(3, stem, 3, 2), _ConvBN(stem, stem, 3, 1,
                                                                   depthwise=True)]
        cin = stem
        for expansion, cout, blocks, stride in cfg.stages:
            cout = _ch(cout, cfg.width)
            for i in range(blocks):
                layers.append(_InvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
                cin = cout
        head = _ch(cfg.head_channels, cfg.width)
        layers.append(_ConvBN(cin, head))
        self.body = nn.Sequential(*layers)
        final = cfg.input_size // 16
        self.gdc = _ConvBN(head, head, final, 1, depthwise=True, linear=True, padding=0)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.project = nn.Conv2d(head, cfg.embedding_dim, 1, bias=False)
        self.bn = nn.BatchNorm1d(cfg.embedding_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def normalize(images: Tensor) -> Tensor:
        """uint8-range RGB (0-255, any float or integer dtype) to ``(x - 127.5) / 128``."""
        return (images.float() - 127.5) / 128.0

    def features(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S)`` to the ``(B, embedding_dim)`` embedding before L2 normalisation."""
        s = self.cfg.input_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (s, s):
            raise ValueError(f"FaceEmbedder expects (B, 3, {s}, {s}) aligned crops, got "
                             f"{tuple(images.shape)}")
        x = self.gdc(self.body(images))
        x = self.project(self.dropout(x)).flatten(1)
        return self.bn(x)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.features(images), dim=1)

    @torch.no_grad()
    def embed(self, images: Tensor, batch: int = 64) -> Tensor:
        """Embeddings of many crops in eval mode, ``batch`` at a time (no gradients)."""
        was = self.training
        self.eval()
        out = [self(images[i:i + batch]) for i in range(0, len(images), batch)]
        self.train(was)
        return torch.cat(out) if out else images.new_zeros(0, self.cfg.embedding_dim)


EMBEDDING_ARCHS = ("small", "mobilefacenet")
SMALL_STAGES = ((2, 64, 2, 2), (4, 128, 1, 2), (2, 128, 2, 1), (4, 128, 1, 2), (2, 128, 1, 1))
"""``small``: MobileFaceNet at half width with fewer blocks, for CPU budgets and small crops."""


def embedding_config(arch: str = "small", input_size: int = 112,
                     embedding_dim: int = 128) -> EmbeddingConfig:
    """The embedder ``scaledet face train --arch`` builds: ``"mobilefacenet"`` (the paper's
    network) or ``"small"`` (:data:`SMALL_STAGES`, width 0.5, a 256-channel head), for
    ``input_size`` px aligned crops and ``embedding_dim``-d embeddings."""
    if arch == "mobilefacenet":
        return EmbeddingConfig(input_size=input_size, embedding_dim=embedding_dim)
    if arch == "small":
        return EmbeddingConfig(input_size=input_size, embedding_dim=embedding_dim, width=0.5,
                               stages=SMALL_STAGES, head_channels=256)
    raise ValueError(f"arch must be one of {EMBEDDING_ARCHS}, got {arch!r}")
