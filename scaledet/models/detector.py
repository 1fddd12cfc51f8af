"""``Detector(backbone, neck, head)``: the one model class of scaledet.

The three parts are plain modules composed in Python: any backbone returning a list of
feature maps (finest first) with an ``out_channels`` list, any neck mapping that list to
another one, and any :class:`~scaledet.models.heads.dense.DenseHead`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.models.heads.dense import PostProcess, postprocess
from scaledet.models.layers import fuse_conv_bn

SIZE_DIVISOR = 32
"""Default ``size_divisor``: the stride of the deepest backbone stage, so that every level's
map has exactly ``1 / stride`` of the padded input's side."""


MOE_LOSS_WEIGHT = 0.01
"""Weight of the mixture-of-experts load-balancing loss (Switch Transformer's)."""


def _setting(name: str, cast: type) -> property:
    """A model attribute that reads/writes ``model.postprocess.<name>`` (validated)."""

    def set_value(self: Detector, value) -> None:
        self.postprocess = dataclasses.replace(self.postprocess, **{name: cast(value)})

    return property(lambda self: getattr(self.postprocess, name), set_value)


class Detector(nn.Module):
    """Object detector: normalise and pad the images, backbone -> neck -> head.

    ``model.train(); model(images, targets)`` returns a dict of named scalar losses with
    ``"loss"`` the total to back-propagate; ``model.eval(); model(images)`` returns one dict
    per image with ``boxes (K, 4)`` xyxy input pixels, ``scores (K,)``, ``labels (K,)`` int64,
    and, when the head predicts keypoints (its ``predict`` returns them as a fourth output,
    :class:`~scaledet.models.heads.fcos_keypoints.KeypointFCOSHead`), ``keypoints (K, J, 3)``
    (``x, y`` input pixels, the point's score). Targets may carry ``keypoints (N, J, 3)``
    (``x, y`` input pixels, visibility ``v``), passed on to the head.

    Args:
        backbone, neck, head: the parts (see the module docstring).
        pixel_mean, pixel_std: RGB normalisation of images given in ``[0, 1]``.
        size_divisor: inputs are zero-padded (after normalisation, i.e. with the mean colour)
            at the bottom/right to a multiple of this, so any ``H, W`` works.
        postprocess: inference settings (:class:`PostProcess`); also reachable as the
            attributes ``score_thresh``, ``nms``, ``nms_iou``, ``max_det`` of the model.
        channels_last: run the convolutions in NHWC memory layout, which oneDNN's CPU
            kernels prefer.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, *,
                 pixel_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 pixel_std: Sequence[float] = (0.229, 0.224, 0.225),
                 size_divisor: int = SIZE_DIVISOR,
                 postprocess: PostProcess | None = None, channels_last: bool = True) -> None:
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)
        self.size_divisor = size_divisor
        self.postprocess = postprocess if postprocess is not None else PostProcess()
        self.channels_last = channels_last
        self.config = None  # the ModelConfig when built by scaledet.models.build

    # Postprocess settings as plain attributes: model.score_thresh = 0.001 etc.
    score_thresh = _setting("score_thresh", float)
    nms = _setting("nms", str)
    nms_iou = _setting("nms_iou", float)
    max_det = _setting("max_det", int)

    def fuse(self) -> Detector:
        """Switch to eval mode and fold BatchNorm into the preceding convolutions (faster CPU
        inference, same outputs to float rounding). Inference only: do not train or
        save-and-rebuild a fused model (its state dict no longer matches the config)."""
        self.eval()
        fuse_conv_bn(self)
        return self

    def preprocess(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> normalised, padded to ``size_divisor``."""
        _check_images(images)
        x = (images - self.pixel_mean) / self.pixel_std
        h, w = images.shape[-2:]
        pad_h, pad_w = (-h) % self.size_divisor, (-w) % self.size_divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def features(self, images: Tensor) -> list[Tensor]:
        """Neck outputs for ``images`` ``(B, 3, H, W)`` in ``[0, 1]``."""
        return self.neck(self.backbone(self.preprocess(images)))

    def predict_raw(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Dense predictions before NMS: boxes ``(B, P, 4)`` xyxy input pixels clipped to the
        image, scores ``(B, P, C)``. No data-dependent control flow: exportable to ONNX.
        (A keypoint head's keypoints are not among these outputs.)"""
        boxes, scores = self._predict(images)[:2]
        return boxes, scores

    def _predict(self, images: Tensor) -> tuple[Tensor, Tensor, list[int], Tensor | None]:
        """Clipped boxes, scores, locations per level, keypoints ``(B, P, J, 3)`` or None."""
        boxes, scores, sizes, *keypoints = self.head.predict(*self.head(self.features(images)))
        h, w = images.shape[-2:]
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                             boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], dim=-1)
        return boxes, scores, sizes, (keypoints[0] if keypoints else None)

    def forward(self, images: Tensor, targets: list[dict] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        _check_images(images)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode (call model.eval() "
                                 "for detections)")
            targets = _check_targets(targets, images, self.head.num_classes)
            losses = self.head.loss(*self.head(self.features(images)), targets)
            aux = self.neck.aux_losses() if hasattr(self.neck, "aux_losses") else []
            if aux:  # mixture-of-experts load balancing
                losses["loss_moe"] = MOE_LOSS_WEIGHT * sum(aux)
                losses["loss"] = losses["loss"] + losses["loss_moe"]
            return losses
        boxes, scores, sizes, keypoints = self._predict(images)
        return postprocess(boxes, scores, sizes, self.postprocess, keypoints)


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")


def _check_targets(targets: list[dict], images: Tensor, num_classes: int) -> list[dict]:
    """Validate and move targets to the images' device: boxes float32, labels int64, and when
    given ``keypoints (N, J, 3)`` float32 and ``ignore (K, 4)`` xyxy regions where the heads
    neither reward nor punish detections (:func:`~scaledet.models.heads.dense.ignore_weight`)."""
    if len(targets) != images.shape[0]:
        raise ValueError(f"got {len(targets)} targets for a batch of {images.shape[0]} images")
    out = []
    for i, t in enumerate(targets):
        if "boxes" not in t or "labels" not in t:
            raise ValueError(f"targets[{i}] needs 'boxes' and 'labels', has {sorted(t)}")
        boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=images.device)
        labels = torch.as_tensor(t["labels"], device=images.device)
        n = labels.shape[0] if labels.dim() == 1 else -1
        if boxes.shape != (n, 4) or labels.is_floating_point():
            raise ValueError(f"targets[{i}]: boxes must be (N, 4) and labels (N,) integers, "
                             f"got {tuple(boxes.shape)} and {tuple(labels.shape)} {labels.dtype}")
        labels = labels.long()
        if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"targets[{i}]: labels must be in 0..{num_classes - 1}, got "
                             f"{int(labels.min())}..{int(labels.max())}")
        checked = {"boxes": boxes, "labels": labels}
        if t.get("keypoints") is not None:
            points = torch.as_tensor(t["keypoints"], dtype=torch.float32, device=images.device)
            if points.dim() != 3 or points.shape[0] != n or points.shape[2] != 3:
                raise ValueError(f"targets[{i}]: keypoints must be (N, K, 3) for N = {n} "
                                 f"boxes, got {tuple(points.shape)}")
            checked["keypoints"] = points
        if t.get("ignore") is not None:  # crowd regions (and SNIPER chips' cut objects)
            ignore = torch.as_tensor(t["ignore"], dtype=torch.float32, device=images.device)
            if ignore.dim() != 2 or ignore.shape[1] != 4:
                raise ValueError(f"targets[{i}]: ignore must be (K, 4) xyxy regions, got "
                                 f"{tuple(ignore.shape)}")
            checked["ignore"] = ignore
        out.append(checked)
    return out
