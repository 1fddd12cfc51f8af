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
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    names: Sequence[str]
    image_size: tuple[int, int]
    path: str | None = None
    category_ids: Sequence[int] | None = None
    image: Tensor | None = field(default=None, repr=False)

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

    def as_dict_of_tensors(self) -> dict[str, Tensor]:
        """``{"boxes", "scores", "labels"}``: the plain form :class:`Predictor.predict` returns."""
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO results entries ``{image_id, category_id, bbox [x, y, w, h], score}``."""
        return to_coco_results(self.as_dict_of_tensors(), image_id, self._category_ids())

    def _category_ids(self) -> Sequence[int]:
        if self.category_ids is not None:
            return self.category_ids
        return range(1, len(self.names) + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python (JSON-serialisable): boxes as ``[[x1, y1, x2, y2], ...]`` etc."""
        return {"path": self.path, "image_size": list(self.image_size),
                "boxes": self.boxes.tolist(), "scores": self.scores.tolist(),
                "labels": self.labels.tolist(), "class_names": self.class_names}

    def plot(self, path: str | os.PathLike | None = None) -> Image.Image:
        """The image with boxes and ``"name 95%"`` labels drawn (PIL's built-in font, nothing
        downloaded); also saved to ``path`` when given (format from the suffix)."""
        if self.image is None:
            raise ValueError("plot: this Result holds no image (keep_images=False)")
        from scaledet.plots.draw import draw_detections

        hwc = self.image.permute(1, 2, 0).contiguous().numpy()
        im = draw_detections(hwc, self.as_dict_of_tensors(), self.names)
        if path is not None:
            os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
            im.save(path)
        return im


def to_coco_results(det: dict[str, Tensor], image_id: int,
                    category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results entries for a ``{"boxes" (K, 4) xyxy, "scores", "labels"}`` dict; label
    ``i`` becomes ``category_ids[i]``; bbox is ``[x, y, w, h]`` rounded to 0.01 px."""
    rows = []
    boxes = det["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
    wh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).round(2)
    for b, s, lab in zip(wh.tolist(), det["scores"].tolist(), det["labels"].tolist()):
        rows.append({"image_id": int(image_id), "category_id": int(category_ids[lab]),
                     "bbox": b, "score": round(float(s), 5)})
    return rows


def empty_detections() -> dict[str, Tensor]:
    """No detections: ``boxes (0, 4)``, ``scores (0,)``, ``labels (0,)``."""
    return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64)}
