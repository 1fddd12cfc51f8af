"""Box coders: between xyxy boxes and what a head regresses.

:class:`PointDistanceCoder` is FCOS's: the distances from a location (point) to the four box
sides, ``(left, top, right, bottom)`` ("ltrb"), divided by the level's stride so that targets
have similar magnitude on every pyramid level.
"""

from __future__ import annotations

import torch
from torch import Tensor


class PointDistanceCoder:
    """xyxy boxes <-> stride-normalised ``ltrb`` distances from points.

    ``encode(points, boxes, strides)``: ``points (..., 2)`` xy pixels, ``boxes (..., 4)`` xyxy
    pixels, ``strides (...)`` -> ``(..., 4)`` ``(x - x1, y - y1, x2 - x, y2 - y) / stride``
    (negative when the point lies outside the box). ``decode`` is its exact inverse.
    """

    def encode(self, points: Tensor, boxes: Tensor, strides: Tensor) -> Tensor:
        lt = points - boxes[..., :2]
        rb = boxes[..., 2:] - points
        return torch.cat([lt, rb], dim=-1) / strides.unsqueeze(-1)

    def decode(self, points: Tensor, distances: Tensor, strides: Tensor) -> Tensor:
        d = distances * strides.unsqueeze(-1)
        return torch.cat([points - d[..., :2], points + d[..., 2:]], dim=-1)


class PointOffsetCoder:
    """Keypoints <-> stride-normalised offsets from locations (RetinaFace / SCRFD landmarks).

    ``encode(points, keypoints, strides)``: ``points (..., 2)`` location centres (xy pixels),
    ``keypoints (..., K, 2)`` xy pixels, ``strides (...)`` -> ``(..., K, 2)``
    ``(x_k - x, y_k - y) / stride``. ``decode`` is its exact inverse (strides are powers of
    two, so the division and the multiplication do not round).
    """

    def encode(self, points: Tensor, keypoints: Tensor, strides: Tensor) -> Tensor:
        return (keypoints - points.unsqueeze(-2)) / strides[..., None, None]

    def decode(self, points: Tensor, offsets: Tensor, strides: Tensor) -> Tensor:
        return points.unsqueeze(-2) + offsets * strides[..., None, None]
