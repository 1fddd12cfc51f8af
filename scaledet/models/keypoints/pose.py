"""``PoseModel``: top-down pose estimation on person crops.

A crop of fixed ``(H, W)`` around one person (:func:`scaledet.ops.warp.crop_matrix`) goes
through the detector's backbone and neck, then one of two heads (Xiao et al., SimpleBaseline,
ECCV 2018; Li et al., RLE, ICCV 2021):

- heatmaps (:class:`~scaledet.models.keypoints.heads.HeatmapHead`) on the finest neck level,
  upsampled to stride 4, trained with the weighted MSE against Gaussian targets and decoded by
  DARK or arg-max + quarter offset;
- direct regression (:class:`~scaledet.models.keypoints.heads.RLEHead`) of each joint's
  position and scale from the deepest level, trained with the RLE likelihood.

Coordinates are **crop pixels** with pixel centres at integers (the crop spans
``[-0.5, W - 0.5]``); mapping to the image is the caller's (the inverse of the crop matrix).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from scaledet.models.keypoints.heads import HeatmapHead, RLEHead
from scaledet.models.layers import fuse_conv_bn


class PoseModel(nn.Module):
    """Backbone -> neck -> pose head on ``(B, 3, H, W)`` crops in ``[0, 1]``.

    ``model.train(); model(crops, targets)`` returns the dict of losses (``"loss"`` the total);
    ``targets[i]["keypoints"]`` is ``(K, 3)`` (or ``(1, K, 3)``): ``x, y`` crop pixels and the
    visibility flag (joints with ``v = 0`` or outside the crop do not count).
    ``model.eval(); model(crops)`` returns ``(keypoints (B, K, 2) crop pixels, scores (B, K))``
    with no data-dependent control flow (exportable to ONNX). Scores: the heatmap maximum, or
    ``1 - sigma`` of RLE (both in about ``[0, 1]``).

    Args:
        backbone, neck: as a :class:`~scaledet.models.detector.Detector`'s.
        head: a ``HeatmapHead`` (on the first neck level) or an ``RLEHead`` (on the last).
        input_size: the crop ``(H, W)``.
        strides: the neck levels' strides.
        sigma, decode, blur: the heatmap head's target width (heatmap pixels), decoder
            (``"dark"`` / ``"argmax"``) and DARK blur kernel.
        flip_index: the joint each joint becomes in a mirrored crop (``flip_test``).
        flip_test: average with the prediction on the mirrored crop.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, *,
                 input_size: tuple[int, int], strides: Sequence[int], sigma: float = 2.0,
                 decode: str = "dark", blur: int = 11, flip_index: Sequence[int] | None = None,
                 flip_test: bool = False,
                 pixel_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 pixel_std: Sequence[float] = (0.229, 0.224, 0.225),
                 channels_last: bool = True) -> None:
        super().__init__()
        if not isinstance(head, (HeatmapHead, RLEHead)):
            raise TypeError(f"head must be a HeatmapHead or an RLEHead, got {type(head).__name__}")
        self.backbone, self.neck, self.head = backbone, neck, head
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.strides = tuple(int(s) for s in strides)
        self.sigma, self.decode, self.blur = float(sigma), decode, int(blur)
        self.num_keypoints = head.num_keypoints
        k = self.num_keypoints
        flip = list(range(k)) if flip_index is None else [int(i) for i in flip_index]
        if sorted(flip) != list(range(k)):
            raise ValueError(f"flip_index must be a permutation of 0..{k - 1}, got {flip}")
        self.register_buffer("flip_index", torch.tensor(flip, dtype=torch.long), False)
        self.flip_test = flip_test
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)
        self.channels_last = channels_last
        self.config = None  # the PoseConfig when built by scaledet.models.build
        # the head reads one neck level: the layers that only feed the others get no gradient
        # (data-parallel training has to know, scaledet.engine.trainer)
        self.has_unused_parameters = True

    @property
    def heatmap_stride(self) -> float:
        """Crop pixels per heatmap pixel (heatmap head only)."""
        return self.strides[0] / self.head.upsample_factor

    def fuse(self) -> PoseModel:
        """Eval mode with BatchNorm folded into the convolutions (inference only)."""
        self.eval()
        fuse_conv_bn(self)
        return self

    def features(self, crops: Tensor) -> Tensor:
        """The head's input: the first neck level (heatmaps), or the RLE head's ``level``."""
        _check_crops(crops, self.input_size)
        x = (crops - self.pixel_mean) / self.pixel_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        levels = self.neck(self.backbone(x))
        return levels[0] if isinstance(self.head, HeatmapHead) else levels[self.head.level]

    def forward(self, crops: Tensor, targets: list[dict] | None = None
                ) -> dict[str, Tensor] | tuple[Tensor, Tensor]:
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode (call model.eval() "
                                 "for keypoints)")
            points, visible = self._targets(targets, crops)
            out = self.head(self.features(crops))
            if isinstance(self.head, HeatmapHead):
                s = self.heatmap_stride
                loss = self.head.loss(out, (points + 0.5) / s - 0.5, visible, self.sigma)
                return {"loss": loss, "loss_heatmap": loss.detach()}
            size = points.new_tensor([self.input_size[1], self.input_size[0]])
            loss = self.head.loss(*out, (points + 0.5) / size, visible)
            return {"loss": loss, "loss_rle": loss.detach()}
        coords, scores = self._predict(crops)
        if self.flip_test:
            flipped, f_scores = self._predict(crops.flip(-1))
            flipped = flipped[:, self.flip_index]
            flipped = torch.stack([self.input_size[1] - 1 - flipped[..., 0], flipped[..., 1]], -1)
            coords, scores = (coords + flipped) / 2, (scores + f_scores[:, self.flip_index]) / 2
        return coords, scores

    def _predict(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        out = self.head(self.features(crops))
        if isinstance(self.head, HeatmapHead):
            coords, scores = self.head.decode(out.float(), self.decode, self.blur)
            return (coords + 0.5) * self.heatmap_stride - 0.5, scores
        mu, log_sigma = out
        size = mu.new_tensor([self.input_size[1], self.input_size[0]])
        return mu.float() * size - 0.5, RLEHead.scores(log_sigma.float())

    def _targets(self, targets: list[dict], crops: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, K, 2)`` points and ``(B, K)`` visibility (labelled and inside the crop)."""
        if len(targets) != crops.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {crops.shape[0]} crops")
        k = self.num_keypoints
        points = []
        for i, t in enumerate(targets):
            if "keypoints" not in t:
                raise ValueError(f"targets[{i}] needs 'keypoints' (K, 3), has {sorted(t)}")
            p = torch.as_tensor(t["keypoints"], dtype=torch.float32, device=crops.device)
            p = p.reshape(-1, 3)
            if p.shape[0] != k:
                raise ValueError(f"targets[{i}]['keypoints'] has {p.shape[0]} points, the model "
                                 f"{k}")
            points.append(p)
        p = torch.stack(points)
        h, w = self.input_size
        xy = p[..., :2]
        inside = (xy[..., 0] >= -0.5) & (xy[..., 0] <= w - 0.5) & (xy[..., 1] >= -0.5) & (
            xy[..., 1] <= h - 0.5)
        return xy, (p[..., 2] > 0) & inside


def _check_crops(crops: Tensor, size: tuple[int, int]) -> None:
    if not isinstance(crops, Tensor) or crops.dim() != 4 or crops.shape[1] != 3:
        shape = tuple(crops.shape) if isinstance(crops, Tensor) else type(crops).__name__
        raise ValueError(f"crops must be a (B, 3, H, W) tensor, got {shape}")
    if tuple(crops.shape[-2:]) != tuple(size):
        raise ValueError(f"crops must be {size[0]} x {size[1]} (the model's input_size), got "
                         f"{crops.shape[-2]} x {crops.shape[-1]}")
    if not crops.is_floating_point():
        raise ValueError(f"crops must be floating point in [0, 1], got {crops.dtype}")
