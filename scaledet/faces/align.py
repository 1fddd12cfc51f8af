"""Face alignment: the least-squares similarity between two point sets (Umeyama 1991) and the
warp of a face onto the standard five-point 112×112 template.

Recognition networks are trained on faces put into one canonical frame by their landmarks
(eyes, nose tip, mouth corners); the frame removes in-plane rotation, scale and position, so
the network spends its capacity on identity. A *similarity* (rotation, uniform scale,
translation: 4 degrees of freedom) is used rather than a full affine map (6) because it keeps
the face's proportions: an affine fit to five noisy landmarks would also shear and stretch the
face, which changes what identifies it.

Coordinates are pixels with pixel centres at integer positions (``(0, 0)`` is the centre of
the top-left pixel), ``x`` to the right and ``y`` down: the convention of OpenCV's
``warpAffine``, scikit-image and InsightFace, whose template ``ARCFACE_TEMPLATE_112`` is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from scaledet.ops.warp import warp_affine

__all__ = ["ARCFACE_TEMPLATE_112", "align", "similarity_transform", "warp_affine"]

ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],   # left eye (in the image: the subject's right eye)
    [73.5318, 51.5014],   # right eye
    [56.0252, 71.7366],   # nose tip
    [41.5493, 92.3655],   # left mouth corner
    [70.7299, 92.2041],   # right mouth corner
], dtype=np.float64)
"""``(5, 2)`` ``(x, y)`` pixels: where ``align`` puts the five landmarks in a 112×112 crop.

The template of InsightFace (ArcFace, RetinaFace, SCRFD), the one most published face
recognition models are trained on. The order is the order of RetinaFace's and WIDER FACE's
landmark labels: eyes, nose tip, mouth corners, each pair left before right *in the image*.
Read-only: copy it to change it.
"""
ARCFACE_TEMPLATE_112.flags.writeable = False

# All points coincide when they lie within this fraction of the largest coordinate (at least 1)
# of their mean.
_COINCIDE_RTOL = 1e-9
# The covariance of the point sets has rank 1 (the points lie on one line) when its smaller
# singular value is below this fraction of the larger one; then no reflection can be told from
# a rotation, and the rotation is taken.
_RANK_RTOL = 1e-9


def _points(points: Any, name: str) -> np.ndarray:
    """``points`` as a ``(N, 2)`` float64 array, or a ValueError naming what is wrong."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().double().numpy()
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an (N, 2) array of (x, y) points: {e}") from e
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be an (N, 2) array of (x, y) points, "
                         f"got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise ValueError(f"{name} point {int(bad[0])} is not finite: {arr[bad[0]].tolist()}")
    return arr


def _refuse_coincident(points: np.ndarray, name: str) -> None:
    """Raise a ValueError naming the first pair of coincident (equal) points, or saying that
    they all coincide: a similarity fitted to them is degenerate or means a broken landmark
    set. ``O(N log N)``: equal points are neighbours once sorted."""
    radius = float(np.linalg.norm(points - points.mean(axis=0), axis=1).max())
    if radius <= _COINCIDE_RTOL * max(1.0, float(np.abs(points).max())):
        raise ValueError(f"all {len(points)} {name} points coincide at "
                         f"{points[0].tolist()}: a similarity needs at least 2 distinct points")
    order = np.lexsort((points[:, 1], points[:, 0]))  # stable: equal points keep index order
    equal = np.flatnonzero((points[order[1:]] == points[order[:-1]]).all(axis=1))
    if len(equal):
        i, j = min((int(order[k]), int(order[k + 1])) for k in equal)
        raise ValueError(f"{name} points {i} and {j} coincide at {points[i].tolist()}: "
                         "every point must be distinct")


def similarity_transform(src: Any, dst: Any) -> np.ndarray:
    """The least-squares similarity that maps ``src`` points onto ``dst`` points.

    Finds the rotation ``R``, scale ``c > 0`` and translation ``t`` minimising
    ``sum_i |dst_i - (c R src_i + t)|^2``, in closed form (Umeyama, "Least-squares estimation of
    transformation parameters between two point patterns", TPAMI 1991): with both sets centred
    on their means, the SVD ``U D V^T`` of their covariance ``dst_c^T src_c / N`` gives
    ``R = U V^T``, ``c = trace(D) / var(src)`` and ``t = mean(dst) - c R mean(src)``. This is
    what ``skimage.transform.SimilarityTransform.estimate`` computes.

    A reflection is never returned. When the covariance has a negative determinant the best
    orthogonal fit is a mirror image, which means ``src`` is the mirror of ``dst`` (typically
    the left and right landmarks are swapped); that is refused rather than fitted with the
    best rotation (which would be wrong by up to 180°). Points on one line have no handedness:
    then the rotation is taken.

    Args:
        src: ``(N, 2)`` ``(x, y)`` points, ``N >= 2``, all distinct (array-like or tensor).
        dst: ``(N, 2)`` the points that ``src[i]`` should map to, all distinct.

    Returns:
        ``(2, 3)`` float64 matrix ``[c R | t]``: ``dst ≈ src @ M[:, :2].T + M[:, 2]``.

    Raises:
        ValueError: shapes differ or are not ``(N, 2)``, fewer than 2 points, a non-finite
            coordinate, coincident points (named by index), the best fit is a reflection, or
            the sets are uncorrelated (the best scale is 0).
    """
    return _fit(src, dst, "src", "dst")


def _fit(src: Any, dst: Any, src_name: str, dst_name: str) -> np.ndarray:
    """``similarity_transform`` with the two point sets named as the caller knows them."""
    src, dst = _points(src, src_name), _points(dst, dst_name)
    if src.shape != dst.shape:
        raise ValueError(f"{src_name} and {dst_name} must have the same number of points, got "
                         f"{len(src)} and {len(dst)}")
    if len(src) < 2:
        raise ValueError(f"a similarity needs at least 2 point pairs, got {len(src)}")
    _refuse_coincident(src, src_name)
    _refuse_coincident(dst, dst_name)

    n = len(src)
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mean_src, dst - mean_dst
    var_src = float((a * a).sum()) / n
    cov = b.T @ a / n  # (2, 2)
    u, d, vt = np.linalg.svd(cov)
    spread = np.sqrt(var_src * float((b * b).sum()) / n)
    if d[0] <= 1e-12 * spread:
        raise ValueError(f"{src_name} and {dst_name} are uncorrelated (their covariance is "
                         "zero): the best similarity would shrink every point onto one")
    handed = np.sign(np.linalg.det(u) * np.linalg.det(vt))  # sign of det(cov)
    if d[1] <= _RANK_RTOL * d[0]:  # collinear: pick the rotation of the two possible fits
        signs = np.array([1.0, handed])
    elif handed < 0:
        raise ValueError(f"the best fit from {src_name} to {dst_name} is a reflection "
                         f"({src_name} is the mirror image of {dst_name}; are left and right "
                         "points swapped?), which a similarity transform excludes")
    else:
        signs = np.ones(2)
    rotation = u @ np.diag(signs) @ vt
    scale = float((d * signs).sum()) / var_src
    translation = mean_dst - scale * rotation @ mean_src
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def align(image: np.ndarray, landmarks: Any, size: int = 112, *,
          template: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Warp a face onto the five-point template by its landmarks.

    The similarity from ``landmarks`` to the template (``similarity_transform``) is applied with
    ``warp_affine`` (bilinear, black outside the image). For ``size`` other than 112 the
    template is scaled by ``size / 112`` (the face fills the crop the same way).

    Args:
        image: ``(H, W, 3)`` uint8 RGB, as ``scaledet.data.read_image`` returns.
        landmarks: ``(5, 2)`` ``(x, y)`` pixels in ``image``, in the template's order (eyes,
            nose tip, mouth corners; left before right in the image).
        size: side of the square crop in pixels.
        template: ``(N, 2)`` points in ``size`` × ``size`` crop pixels to use instead of the
            scaled ``ARCFACE_TEMPLATE_112``; ``landmarks`` then has ``N`` points.

    Returns:
        ``(crop, matrix)``: ``(size, size, 3)`` uint8 RGB, and the ``(2, 3)`` float64 matrix that
        maps image pixels to crop pixels (apply it to boxes or landmarks with
        ``p @ matrix[:, :2].T + matrix[:, 2]``).

    Raises:
        ValueError: a malformed image, landmarks that ``similarity_transform`` refuses
            (coincident points, mirrored order), or a non-positive size.
    """
    if not isinstance(size, int | np.integer) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    dst = ARCFACE_TEMPLATE_112 * (size / 112) if template is None else _points(template,
                                                                                "template")
    src = _points(landmarks, "landmarks")
    if len(src) != len(dst):
        raise ValueError(f"landmarks has {len(src)} points, the template {len(dst)}")
    matrix = _fit(src, dst, "landmarks", "template")
    return warp_affine(image, matrix, int(size)), matrix
