"""Heatmap decoding: from ``(N, K, H, W)`` joint heatmaps to sub-pixel joint positions.

Coordinates are in **heatmap pixels**: ``x`` is the column and ``y`` the row, integer values at
cell centres (the convention of :func:`scaledet.losses.keypoints.gaussian_heatmaps`). Mapping
to crop or image pixels (the heatmap-to-crop scale and the crop's affine transform) is the
pipeline's job.

Two decoders, both starting from the arg-max cell:

- :func:`decode_argmax`: the classic SimpleBaseline/HRNet shift of a quarter pixel towards the
  higher neighbour, per axis. It halves the arg-max's quantisation error (at most 0.5 px) to at
  most 0.25 px but cannot do better: the shift is always 0 or +-0.25.
- :func:`decode_dark` (Zhang et al., "Distribution-Aware Coordinate Representation for Human
  Pose Estimation", CVPR 2020): smooth the heatmap with a Gaussian (predicted maps are not
  Gaussian; smoothing makes them closer to one), take its log (a Gaussian's log is a
  quadratic) and move to the maximum of its second-order Taylor expansion at the arg-max:
  ``offset = -H^{-1} g`` with the gradient ``g`` and Hessian ``H`` by central differences. On an
  exact Gaussian the log is exactly quadratic and this recovers the centre exactly.

Both return ``coords (N, K, 2)`` float32 ``(x, y)`` and ``scores (N, K)``: the maximum of the
original (unsmoothed) heatmap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _argmax(heatmaps: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(N, K, H, W)`` -> flat maps ``(N*K, H, W)``, ``x``, ``y`` (int64) and max ``(N*K,)``."""
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    maps = heatmaps.detach().float().reshape(n * k, h, w)
    scores, idx = maps.reshape(n * k, h * w).max(-1)
    return maps, idx % w, idx // w, scores


def _sampler(maps: Tensor, x: Tensor, y: Tensor):
    """``at(dx, dy)``: the value of each map at its ``(x + dx, y + dy)`` (clamped to the map)."""
    b = torch.arange(maps.shape[0], device=maps.device)
    h, w = maps.shape[-2:]

    def at(dx: int, dy: int) -> Tensor:
        return maps[b, (y + dy).clamp(0, h - 1), (x + dx).clamp(0, w - 1)]

    return at


def decode_argmax(heatmaps: Tensor, quarter_offset: bool = True) -> tuple[Tensor, Tensor]:
    """Arg-max decoding with the quarter-pixel shift towards the higher neighbour.

    Per axis: ``x += 0.25 * sign(h[y, x + 1] - h[y, x - 1])`` where both neighbours exist
    (no shift on the border or between equal neighbours); likewise for ``y``. HRNet shifts only
    when the cell is inside on both axes (and skips the second row and column); the per-axis
    rule is the same wherever HRNet shifts.

    Args:
        heatmaps: ``(N, K, H, W)``.
        quarter_offset: apply the shift (``False``: the plain arg-max cell).

    Returns:
        ``coords (N, K, 2)`` ``(x, y)`` in heatmap pixels, ``scores (N, K)`` (map maxima).
    """
    n, k, h, w = heatmaps.shape
    maps, x, y, scores = _argmax(heatmaps)
    coords = torch.stack([x, y], -1).float()
    if quarter_offset:
        at = _sampler(maps, x, y)
        ox = torch.sign(at(1, 0) - at(-1, 0)) * ((x >= 1) & (x <= w - 2))
        oy = torch.sign(at(0, 1) - at(0, -1)) * ((y >= 1) & (y <= h - 2))
        coords = coords + 0.25 * torch.stack([ox, oy], -1)
    return coords.reshape(n, k, 2), scores.reshape(n, k)


def gaussian_blur(heatmaps: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian smoothing of ``(N, K, H, W)`` maps, zero-padded (DARK pads with zeros
    before its blur), same shape. The standard deviation follows OpenCV's rule for
    ``GaussianBlur(ksize, 0)``: ``0.3 * ((kernel_size - 1) / 2 - 1) + 0.8`` (2.0 for 11, DARK's
    kernel for 64 x 48 maps trained with ``sigma = 2``)."""
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
    n, k, h, w = heatmaps.shape
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    r = kernel_size // 2
    taps = torch.arange(-r, r + 1, dtype=torch.float32, device=heatmaps.device)
    kernel = torch.exp(-taps**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = heatmaps.float().reshape(n * k, 1, h, w)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, r))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1), padding=(r, 0))
    return x.reshape(n, k, h, w)


def decode_dark(heatmaps: Tensor, kernel_size: int = 11, eps: float = 1e-3
                ) -> tuple[Tensor, Tensor]:
    """DARK sub-pixel decoding (see the module docstring).

    Steps per map: arg-max cell ``(x, y)`` and score on the original map; Gaussian blur
    (``kernel_size``; 0 or 1: none; DARK then rescales the blurred map to the original maximum,
    which shifts its log by a constant and changes no derivative, so it is skipped);
    ``log(max(h, eps * max h))`` (a floor relative to the peak, so the result does not depend on
    the heatmap's scale; mmpose clips at 0.001 for unit peaks); then at ``(x, y)``::

        g = (dL/dx, dL/dy)            central differences  (L[x+1] - L[x-1]) / 2
        H = [[Lxx, Lxy], [Lxy, Lyy]]  Lxx = L[x+1] - 2 L[x] + L[x-1], Lxy from the 4 diagonals
        offset = -H^{-1} g

    The ``+-1`` stencils are exact on quadratics (DARK's code uses ``+-2`` for ``Lxx``, equally
    exact on an exact Gaussian) and need only one cell of margin. The offset is applied only
    where the cell has all 8 neighbours and ``H`` is negative definite (a true local maximum of
    the log-map), and is clamped to ``[-1, 1]`` per axis as a guard on flat, noisy maps
    (the continuous peak of a sampled unimodal map lies within half a cell of its arg-max).

    Args:
        heatmaps: ``(N, K, H, W)`` predicted (or target) heatmaps.
        kernel_size: odd blur kernel, in heatmap pixels; match the training ``sigma``
            (11 for ``sigma = 2``, DARK's setting); 0 or 1 to skip the blur.
        eps: log floor, relative to each map's maximum.

    Returns:
        ``coords (N, K, 2)`` ``(x, y)`` in heatmap pixels, ``scores (N, K)`` (original maxima).
    """
    n, k, h, w = heatmaps.shape
    maps, x, y, scores = _argmax(heatmaps)
    smooth = maps
    if kernel_size > 1:
        smooth = gaussian_blur(maps.reshape(n, k, h, w), kernel_size).reshape(n * k, h, w)
    peak = smooth.reshape(n * k, -1).amax(-1).clamp(min=1e-12)
    log_map = torch.log(torch.maximum(smooth, eps * peak[:, None, None]))
    at = _sampler(log_map, x, y)
    centre = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = at(1, 0) - 2 * centre + at(-1, 0)
    hyy = at(0, 1) - 2 * centre + at(0, -1)
    hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    ok = ((x >= 1) & (x <= w - 2) & (y >= 1) & (y <= h - 2) & (hxx < 0) & (det > 1e-12)
          & (scores > 0))
    safe_det = torch.where(ok, det, torch.ones_like(det))
    # H^{-1} = [[hyy, -hxy], [-hxy, hxx]] / det
    ox = -(hyy * gx - hxy * gy) / safe_det
    oy = -(hxx * gy - hxy * gx) / safe_det
    offset = torch.stack([ox, oy], -1).clamp(-1.0, 1.0) * ok[:, None]
    coords = torch.stack([x, y], -1).float() + offset
    return coords.reshape(n, k, 2), scores.reshape(n, k)
