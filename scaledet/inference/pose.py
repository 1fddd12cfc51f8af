"""Top-down pose on detected boxes: the second stage of ``scaledet predict --pose-weights``.

A detector finds the people; :class:`PoseEstimator` crops each person box out of the original
image (:func:`scaledet.data.pose.crop_person`: the box widened to the model's aspect ratio and
padded by the model's ``config.box_padding``), runs the
:class:`~scaledet.models.keypoints.pose.PoseModel` on the batch of crops and maps every joint
back to the image with the inverse of its crop's affine matrix::

    pose = PoseEstimator.from_weights("pose.safetensors")
    keypoints = pose(image_hwc_uint8, boxes_xyxy)      # (N, K, 3): x, y image pixels, score

:class:`~scaledet.inference.predictor.Predictor` (``scaledet.load(det, pose_weights=POSE)``)
does this for every image; which boxes are posed is :func:`pose_labels`'s choice.

Coordinates are pixels with pixel centres at integers (:mod:`scaledet.ops.warp`), so a joint at
``(x, y)`` is drawn and scored at the same place as a COCO keypoint annotation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from scaledet.data.pose import crop_person
from scaledet.ops.warp import apply_matrix, invert_matrix

POSE_CLASS = "person"
"""The detector class posed by default (COCO's name), when the detector has it."""


@dataclass
class PoseEstimator:
    """A pose model run on person boxes of full images.

    Attributes:
        model: a :class:`~scaledet.models.keypoints.pose.PoseModel` in eval mode (or any module
            with its eval contract: ``(B, 3, H, W)`` float crops in ``[0, 1]`` ->
            ``(keypoints (B, K, 2) crop pixels, scores (B, K))``, and ``input_size``).
        padding: the box padding of the crops (the model's ``config.box_padding``).
        keypoint_names: the ``K`` joint names (``left_*`` / ``right_*`` colour the drawing).
        skeleton: limbs as COCO's 1-based joint index pairs.
        batch_size: crops per forward pass.
        source: the checkpoint, for messages.
    """

    model: nn.Module
    padding: float = 1.25
    keypoint_names: list[str] | None = None
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    batch_size: int = 32
    source: str = "pose model"

    @classmethod
    def from_weights(cls, weights: str | os.PathLike, device: str | torch.device = "cpu",
                     batch_size: int = 32) -> PoseEstimator:
        """Load a pose checkpoint (``task: "pose"`` in its metadata; BatchNorm folded).
        A detector checkpoint is a ``ValueError`` naming the file."""
        from scaledet.models.checkpoint import model_from_weights, read_meta

        meta = read_meta(weights)
        if meta.get("task") != "pose":
            what = meta.get("model") or meta.get("model_config", {}).get("name") or "unknown"
            raise ValueError(f"{weights}: a detector checkpoint (model {what}), not a pose "
                             "model; --pose-weights (pose_weights=) takes a checkpoint trained "
                             "with --model pose-heatmap-n or pose-rle-n on keypoint data")
        model, meta = model_from_weights(weights, device)
        model.fuse()
        return cls.from_model(model, keypoint_names=meta.get("keypoint_names"),
                              skeleton=meta.get("skeleton"), batch_size=batch_size,
                              source=str(weights))

    @classmethod
    def from_model(cls, model: nn.Module, *, keypoint_names: Sequence[str] | None = None,
                   skeleton: Sequence[Sequence[int]] | None = None, padding: float | None = None,
                   batch_size: int = 32, source: str = "pose model") -> PoseEstimator:
        """Around an in-memory model (put in eval mode); ``padding`` defaults to the model's
        ``config.box_padding`` (1.25 without a config)."""
        if padding is None:
            config = getattr(model, "config", None)
            padding = float(getattr(config, "box_padding", 1.25))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        names = list(keypoint_names) if keypoint_names else None
        limbs = [(int(a), int(b)) for a, b in (skeleton or [])]
        return cls(model.eval(), padding, names, limbs, batch_size, source)

    @property
    def input_size(self) -> tuple[int, int]:
        """The crop ``(height, width)`` in pixels."""
        h, w = self.model.input_size
        return int(h), int(w)

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def crops(self, image: np.ndarray, boxes: Tensor | np.ndarray) -> tuple[Tensor, np.ndarray]:
        """The crop of every box: ``(crops (N, 3, H, W) uint8, matrices (N, 2, 3) float64)``,
        each matrix mapping image pixels to its crop's pixels. ``image``: ``(H, W, 3)`` uint8
        RGB; ``boxes``: ``(N, 4)`` xyxy image pixels."""
        b = np.asarray(boxes.detach().cpu() if isinstance(boxes, Tensor) else boxes,
                       dtype=np.float64).reshape(-1, 4)
        h, w = self.input_size
        crops, matrices = [], []
        for box in b:
            crop, matrix = crop_person(image, box, (h, w), self.padding)
            crops.append(torch.from_numpy(crop).permute(2, 0, 1))
            matrices.append(matrix)
        if not crops:
            return torch.zeros(0, 3, h, w, dtype=torch.uint8), np.zeros((0, 2, 3))
        return torch.stack(crops), np.stack(matrices)

    @torch.no_grad()
    def __call__(self, image: np.ndarray | Tensor, boxes: Tensor | np.ndarray) -> Tensor:
        """Joints of the people in ``boxes`` (``(N, 4)`` xyxy pixels of ``image``):
        ``(N, K, 3)`` float32 rows ``x, y`` (image pixels) and the joint's score.

        ``image``: ``(H, W, 3)`` uint8 RGB numpy, or a ``(3, H, W)`` uint8 tensor."""
        hwc = image.permute(1, 2, 0).contiguous().numpy() if isinstance(image, Tensor) else image
        crops, matrices = self.crops(hwc, boxes)
        k = self.num_keypoints
        if not len(crops):
            return torch.zeros(0, k, 3)
        coords, scores = [], []
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start:start + self.batch_size].to(self.device).float().div_(255)
            xy, s = self.model(batch)
            coords.append(xy.float().cpu())
            scores.append(s.float().cpu())
        xy = to_image_pixels(torch.cat(coords).double().numpy(), matrices)
        return torch.cat([torch.from_numpy(xy).float(), torch.cat(scores)[..., None]], -1)

    @property
    def num_keypoints(self) -> int:
        return int(getattr(self.model, "num_keypoints", len(self.keypoint_names or [])))


def to_image_pixels(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """``(N, K, 2)`` crop pixels -> image pixels, each row through the inverse of its
    ``(2, 3)`` image -> crop matrix (``matrices (N, 2, 3)``); float64."""
    p = np.asarray(points, dtype=np.float64)
    return np.stack([apply_matrix(q, invert_matrix(m)) for q, m in zip(p, matrices)]) \
        if len(p) else p.copy()


def pose_labels(class_names: Sequence[str], pose_classes: Sequence[str] | None = None
                ) -> tuple[list[int] | None, str]:
    """Which detector classes get a pose: ``(class indices or None for every class, a note
    saying so)``.

    ``pose_classes`` names them (a ``ValueError`` lists the detector's classes when one is
    not among them); by default the class named ``"person"`` when the detector has one, else
    every box (a detector trained on people alone, under another name)."""
    names = list(class_names)
    if pose_classes:
        missing = [c for c in pose_classes if c not in names]
        if missing:
            raise ValueError(f"pose classes {', '.join(missing)} are not classes of the "
                             f"detector (it has {', '.join(names) or 'none'})")
        labels = sorted({names.index(c) for c in pose_classes})
        return labels, f"pose: keypoints for boxes of class {', '.join(pose_classes)}"
    if POSE_CLASS in names:
        return [names.index(POSE_CLASS)], f"pose: keypoints for boxes of class {POSE_CLASS!r}"
    return None, (f"pose: the detector has no {POSE_CLASS!r} class: keypoints for every box "
                  "(choose classes with pose_classes / --pose-classes)")
