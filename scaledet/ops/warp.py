"""Affine warps of images and points, and the crop geometry of top-down models.

Coordinates are pixels with pixel centres at integer positions (``(0, 0)`` is the centre of the
top-left pixel, an image of width ``W`` spans ``[-0.5, W - 0.5]``), ``x`` to the right and ``y``
down: the convention of OpenCV's ``warpAffine`` and scikit-image. A ``(2, 3)`` matrix ``M`` maps
a point ``p`` to ``M[:, :2] @ p + M[:, 2]``.

:func:`warp_affine` is written here rather than taken from OpenCV (not a dependency) or
torchvision (its ``affine`` takes angle/scale/shear parameters about the image centre and
returns an image of the input's size, not a crop of another size): it is ``grid_sample`` on the
part of the image that is read. :func:`crop_matrix` is the map of a person box (or any box) to a
fixed-size crop with random scale, rotation and mirror, as top-down pose models use
(SimpleBaseline, HRNet).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        got = (f"{type(image).__name__} {getattr(image, 'dtype', '')} "
               f"{tuple(getattr(image, 'shape', ()))}")
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB numpy array (as "
                         f"scaledet.data.read_image returns), got {got}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image


def _matrix(matrix: Any) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3) or not np.isfinite(m).all():
        raise ValueError(f"matrix must be a finite (2, 3) affine matrix, got {m.shape} {m}")
    if abs(np.linalg.det(m[:, :2])) < 1e-12:
        raise ValueError(f"matrix is singular (it maps the image onto a line): {m.tolist()}")
    return m


def warp_affine(image: np.ndarray, matrix: Any, size: int | tuple[int, int],
                fill: int = 0) -> np.ndarray:
    """Warp ``image`` by the affine ``matrix`` into an output of ``size``.

    Output pixel ``(u, v)`` takes the input's value at ``matrix^-1 (u, v)``, read with bilinear
    interpolation (``torch.nn.functional.grid_sample`` in float32); points outside the image
    read as ``fill`` (black by default), and a pixel within one pixel of the border blends
    with it, as ``cv2.warpAffine`` does with its constant border. There is no antialiasing: a face
    much larger than the output (a shrink by 3× or more) aliases, as with OpenCV.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, as ``scaledet.data.read_image`` returns.
        matrix: ``(2, 3)`` forward map from input to output pixel coordinates (pixel centres
            at integers).
        size: output ``(height, width)``, or one int for a square.

    Returns:
        ``(height, width, 3)`` uint8 RGB (interpolated values rounded to nearest).
    """
    image, m = _image(image), _matrix(matrix)
    out_h, out_w = (size, size) if isinstance(size, int | np.integer) else size
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    inverse = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]  # output -> input pixels
    u, v = np.meshgrid(np.arange(out_w, dtype=np.float64), np.arange(out_h, dtype=np.float64))
    x = inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]
    y = inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]
    # Only the part of the image that is read (plus the one-pixel reach of bilinear sampling)
    # becomes float: a face crop from a large photo converts a few hundred pixels, not all.
    h, w = image.shape[:2]
    x0, x1 = max(int(np.floor(x.min())) - 1, 0), min(int(np.ceil(x.max())) + 2, w)
    y0, y1 = max(int(np.floor(y.min())) - 1, 0), min(int(np.ceil(y.max())) + 2, h)
    if x0 >= x1 or y0 >= y1:  # the output lies wholly outside the image
        return np.full((out_h, out_w, 3), fill, np.uint8)
    patch = np.ascontiguousarray(image[y0:y1, x0:x1])
    x, y = x - x0, y - y0
    h, w = patch.shape[:2]
    # grid_sample with align_corners=False: -1 and 1 are the outer edges of the border pixels,
    # so the centre of pixel i (our coordinate i) is at (2 i + 1) / W - 1.
    grid = np.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], axis=-1)
    grid_t = torch.from_numpy(grid).to(torch.float32)[None]  # (1, out_h, out_w, 2)
    pixels = torch.from_numpy(patch).permute(2, 0, 1)[None].float() - fill  # (1, 3, h, w)
    out = fill + F.grid_sample(pixels, grid_t, mode="bilinear", padding_mode="zeros",
                               align_corners=False)  # (1, 3, out_h, out_w)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy().copy()


def apply_matrix(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(..., 2)`` points mapped by the ``(2, 3)`` affine ``matrix`` (float64)."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def invert_matrix(matrix: np.ndarray) -> np.ndarray:
    """The ``(2, 3)`` inverse of an invertible ``(2, 3)`` affine map."""
    m = _matrix(matrix)
    return np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]


def crop_box(box: Any, aspect: float, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(x, y)`` and size ``(w, h)`` of the crop window of an xyxy ``box``: the box
    widened (or heightened) to ``aspect = width / height``, then scaled by ``padding``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    return centre, np.array([w, h]) * padding


def crop_matrix(centre: Any, size: Any, out_hw: tuple[int, int], *, rotation: float = 0.0,
                scale: float = 1.0, flip: bool = False) -> np.ndarray:
    """The ``(2, 3)`` map from image pixels to the pixels of an ``out_hw`` crop.

    The window of ``size`` ``(w, h)`` image pixels centred at ``centre`` (continuous
    coordinates) fills the crop, after the window is scaled by ``scale`` (> 1 zooms out) and
    rotated by ``rotation`` degrees about its centre (counter-clockwise as seen on screen);
    ``flip`` mirrors the crop left to right (the caller swaps left/right joints).
    """
    out_h, out_w = out_hw
    w, h = float(size[0]) * scale, float(size[1]) * scale
    if w <= 0 or h <= 0:
        raise ValueError(f"crop window must have a positive size, got {size} x {scale}")
    a = np.deg2rad(rotation)
    # y points down, so a counter-clockwise turn on screen is a clockwise one in (x, y)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    lin = np.diag([out_w / w, out_h / h]) @ rot
    if flip:
        lin = np.diag([-1.0, 1.0]) @ lin
    crop_centre = np.array([(out_w - 1) / 2, (out_h - 1) / 2])
    shift = crop_centre - lin @ np.asarray(centre, dtype=np.float64)
    return np.concatenate([lin, shift[:, None]], axis=1)
