"""``Result``: the detections of one image, in original-image pixels, with export helpers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor


@dataclass
class Result:
    """Detections of one image, sorted by descending score.

    Attributes:
        boxes: ``(K, 4)`` float32 xyxy, pixels of the original image (clipped to it).
        scores: ``(K,)`` float32 in ``[0, 1]``.
        labels: ``(K,)`` int64 class indices ``0..C-1``.
        names: the model's class names (index -> name).
        image_size: ``(height, width)`` of the original image.
        path: the image file, when the input was a path.
        category_ids: COCO category id of each class index (default ``1..C``).
        image: the ``(3, H, W)`` uint8 input, kept for :meth:`plot` (not in :meth:`to_dict`).
        keypoints: with a pose model, ``(K, J, 3)`` float32: each detection's ``J`` joints as
            ``x, y`` original-image pixels (pixel centres at integers) and the joint's score;
            rows of boxes that were not posed (not of a posed class) are NaN. None without
            a pose model.
        keypoint_names: the ``J`` joint names (``left_*`` / ``right_*`` are drawn in two
            colours), or None.
        skeleton: the limbs, as COCO's 1-based joint index pairs, or None.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    names: Sequence[str]
    image_size: tuple[int, int]
    path: str | None = None
    category_ids: Sequence[int] | None = None
    image: Tensor | None = field(default=None, repr=False)
    keypoints: Tensor | None = None
    keypoint_names: Sequence[str] | None = None
    skeleton: Sequence[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def class_names(self) -> list[str]:
        """The class name of every detection, ``(K,)`` strings."""
        return [self._name(lab) for lab in self.labels.tolist()]

    @property
    def detection_category_ids(self) -> list[int]:
        """The dataset's category id of every detection, ``(K,)`` ints (as :meth:`to_coco`
        writes them; ``labels`` are the model's 0-based class indices)."""
        ids = self._category_ids()
        return [int(ids[lab]) for lab in self.labels.tolist()]

    def _name(self, label: int) -> str:
        return self.names[label] if 0 <= label < len(self.names) else str(label)

    @property
    def posed(self) -> Tensor:
        """``(K,)`` bool: which detections have keypoints (all False without a pose model)."""
        if self.keypoints is None:
            return torch.zeros(len(self), dtype=torch.bool)
        return ~torch.isnan(self.keypoints).flatten(1).any(1)

    def as_dict_of_tensors(self) -> dict[str, Tensor]:
        """``{"boxes", "scores", "labels"}`` (and ``"keypoints"`` with a pose model): the
        plain form :class:`Predictor.predict` returns."""
        out = {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}
        if self.keypoints is not None:
            out["keypoints"] = self.keypoints
        return out

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO results entries ``{image_id, category_id, bbox [x, y, w, h], score}``; a posed
        detection's also has ``keypoints``, COCO's flat ``[x, y, score] * J`` list (what
        ``scaledet eval --iou-type keypoints`` and pycocotools read)."""
        return to_coco_results(self.as_dict_of_tensors(), image_id, self._category_ids())

    def _category_ids(self) -> Sequence[int]:
        if self.category_ids is not None:
            return self.category_ids
        return range(1, len(self.names) + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python (JSON-serialisable): boxes as ``[[x1, y1, x2, y2], ...]`` etc.; with a
        pose model ``keypoints`` ``[[[x, y, score] * J] or None per box]``."""
        out = {"path": self.path, "image_size": list(self.image_size),
               "boxes": self.boxes.tolist(), "scores": self.scores.tolist(),
               "labels": self.labels.tolist(), "class_names": self.class_names}
        if self.keypoints is not None:
            out["keypoints"] = [k.tolist() if ok else None
                                for k, ok in zip(self.keypoints, self.posed.tolist())]
        return out

    def plot(self, path: str | os.PathLike | None = None) -> Image.Image:
        """The image with boxes and ``"name 95%"`` labels drawn (PIL's built-in font, nothing
        downloaded), and the skeletons of posed boxes; also saved to ``path`` when given
        (format from the suffix)."""
        if self.image is None:
            raise ValueError("plot: this Result holds no image (keep_images=False)")
        from scaledet.plots.draw import draw_detections

        hwc = self.image.permute(1, 2, 0).contiguous().numpy()
        im = draw_detections(hwc, self.as_dict_of_tensors(), self.names, skeleton=self.skeleton,
                             keypoint_names=self.keypoint_names)
        if path is not None:
            os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
            im.save(path)
        return im


def to_coco_results(det: dict[str, Tensor], image_id: int,
                    category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results entries for a ``{"boxes" (K, 4) xyxy, "scores", "labels"}`` dict; label
    ``i`` becomes ``category_ids[i]``; bbox is ``[x, y, w, h]`` rounded to 0.01 px. With
    ``"keypoints"`` ``(K, J, 3)``, each row without NaN adds ``keypoints``: the flat
    ``[x, y, score] * J`` list of COCO's keypoint results (pixels rounded to 0.01, scores to
    1e-5)."""
    rows = []
    boxes = det["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
    wh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).round(2)
    points = keypoint_lists(det.get("keypoints"), len(wh))
    for b, s, lab, kp in zip(wh.tolist(), det["scores"].tolist(), det["labels"].tolist(),
                             points):
        row = {"image_id": int(image_id), "category_id": int(category_ids[lab]),
               "bbox": b, "score": round(float(s), 5)}
        if kp is not None:
            row["keypoints"] = kp
        rows.append(row)
    return rows


def keypoint_lists(keypoints: Tensor | None, n: int) -> list[list[float] | None]:
    """Each detection's joints as COCO's flat ``[x, y, score] * J`` list (x, y rounded to 0.01
    px, scores to 1e-5), or None for a NaN row (not posed) and for all ``n`` without
    keypoints."""
    if keypoints is None:
        return [None] * n
    k = keypoints.detach().cpu().double().numpy()
    if len(k) != n:
        raise ValueError(f"{len(k)} keypoint rows for {n} detections")
    out: list[list[float] | None] = []
    for row in k:
        if np.isnan(row).any():
            out.append(None)
            continue
        row = np.concatenate([row[:, :2].round(2), row[:, 2:].round(5)], axis=1)
        out.append(row.reshape(-1).tolist())
    return out


def empty_detections() -> dict[str, Tensor]:
    """No detections: ``boxes (0, 4)``, ``scores (0,)``, ``labels (0,)``."""
    return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64)}
