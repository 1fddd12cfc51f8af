"""Detection confusion matrix: which classes are mistaken for which, and for the background.

COCO AP scores each class on its own, so it cannot say that "cat" detections land on dogs.
The confusion matrix can: per image, detections with score ``>= conf`` are matched one to one
to ground-truth objects of *any* class with ``IoU >= iou``, the pairs with the highest IoU
first (as Ultralytics' ``ConfusionMatrix`` does, written here in numpy). Then, with ``C``
classes and index ``C`` standing for the background:

* a matched pair adds 1 to ``matrix[true class, predicted class]`` (the diagonal: right class);
* an unmatched object adds 1 to ``matrix[true class, C]`` (missed);
* an unmatched detection adds 1 to ``matrix[C, predicted class]`` (a false alarm), except when
  it lies on a crowd region (``IoU >= iou`` with a crowd box), which, as in COCO, is not an
  error.

Rows are the truth, columns the prediction. Boxes are ``xyxy`` in any one pixel frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes (0 where a union is empty)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class ConfusionMatrix:
    """Accumulates the ``(C + 1, C + 1)`` detection confusion matrix over images.

    Args:
        num_classes: ``C``; labels are ``0..C-1``.
        conf: detections below this score are left out (the working point, not AP's 0.001).
        iou: IoU a detection needs with an object to be matched to it.
    """

    def __init__(self, num_classes: int, conf: float = 0.25, iou: float = 0.5) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.conf, self.iou = num_classes, conf, iou
        self.matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, boxes: Any, scores: Any, labels: Any, gt_boxes: Any, gt_labels: Any,
               gt_crowd: Any = None) -> None:
        """Add one image: detections ``boxes (K, 4)``, ``scores (K,)``, ``labels (K,)`` and
        objects ``gt_boxes (N, 4)``, ``gt_labels (N,)``, optionally ``gt_crowd (N,)`` bool."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        keep = np.asarray(scores, dtype=np.float64).reshape(-1) >= self.conf
        boxes, labels = boxes[keep], labels[keep]
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
        crowd = (np.zeros(len(gt_boxes), dtype=bool) if gt_crowd is None
                 else np.asarray(gt_crowd, dtype=bool).reshape(-1))
        objects, regions = gt_boxes[~crowd], gt_boxes[crowd]
        object_labels = gt_labels[~crowd]
        bg = self.num_classes
        iou = iou_matrix(objects, boxes)  # (N, K)
        pairs = np.argwhere(iou >= self.iou)
        pairs = pairs[np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")]
        gt_done, dt_done = np.zeros(len(objects), bool), np.zeros(len(boxes), bool)
        for g, d in pairs:
            if not gt_done[g] and not dt_done[d]:
                gt_done[g] = dt_done[d] = True
                self.matrix[object_labels[g], labels[d]] += 1
        np.add.at(self.matrix, (object_labels[~gt_done], bg), 1)
        on_crowd = (iou_matrix(boxes, regions) >= self.iou).any(axis=1)
        np.add.at(self.matrix, (bg, labels[~dt_done & ~on_crowd]), 1)
