"""Keypoint losses: Gaussian heatmap targets with the per-joint weighted MSE of SimpleBaseline /
HRNet, and the Residual Log-likelihood Estimation loss (RLE; Li et al., "Human Pose Regression
with Residual Log-likelihood Estimation", ICCV 2021) for direct regression.

Units. Heatmap functions work in **heatmap pixels**: ``x`` is the column and ``y`` the row of
the heatmap, integer values at cell centres (cell ``(i, j)`` is the point ``x = j, y = i``), the
same convention as :mod:`scaledet.models.keypoints.decode`. :func:`rle_loss` takes any unit as
long as ``mu``, ``sigma`` and ``target`` share it; the RLE head uses **crop-normalised**
coordinates (``x / crop_width``, ``y / crop_height``, in ``[0, 1]`` inside the crop).

RLE, as written here (the paper's Eq. for the residual log-likelihood with reparameterisation).
A joint is predicted as ``mu`` and ``sigma`` (per coordinate); the target's normalised residual
``u = (target - mu) / sigma`` has density ``P(u) = Q(u) G(u) / s`` where ``Q`` is a fixed simple
density (the "residual" prior: Laplace by default, or Gaussian), ``G`` the density that a
normalizing flow learns (how the true residual distribution differs from ``Q``), and ``s`` the
normaliser, which the paper drops (computing it would cost an integral over the flow per
step; the official code drops it too). The change of variables ``target = mu + sigma * u``
divides the density by ``prod(sigma)``, so

    L = -log G(u) - sum_d log Q(u_d) + sum_d log sigma_d          (per joint, d = x, y)

with ``Q`` normalised: Laplace ``-log Q(u) = |u| + log 2``, Gaussian ``-log Q(u) = u^2 / 2 +
log(2 pi) / 2``. With an identity flow (``G`` a standard normal) and the Laplace prior this is
a closed form that the tests check by hand.

Difference from the official code (github.com/Jeff-sjtu/res-loglikelihood-regression,
``RLELoss`` and ``RegressFlow``): there the flow term ``log sigma - log G`` is per coordinate
with ``log G`` broadcast to both coordinates, and the prior term is ``log(sigma sqrt(2 pi)) +
|r| / (sqrt(2) sigma)``; summed over a joint that is ``2 sum_d log sigma_d - 2 log G(u) +
sum_d |u_d| / sqrt(2) + const``, i.e. ``log sigma`` and ``log G`` counted twice and an
unnormalised Laplace. We follow the paper's formula (each term once, normalised priors): it is
a negative log-likelihood, so its value is comparable across priors and flows (the official
balance gives the flow and ``log sigma`` twice the weight of the prior term, and a Laplace
slope of ``1 / sqrt(2)`` instead of 1). Averaging: over visible joints (the official code
divides the sum by the batch size).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

PRIORS = ("laplace", "gaussian", "none")


class LogDensity(Protocol):
    """Anything with ``log_prob((M, 2)) -> (M,)``: the RLE flow
    (:class:`scaledet.models.keypoints.flow.RealNVP`) or a fixed distribution in tests."""

    def log_prob(self, x: Tensor) -> Tensor: ...


def gaussian_heatmaps(points: Tensor, visible: Tensor, size: tuple[int, int],
                      sigma: float) -> tuple[Tensor, Tensor]:
    """Unnormalised Gaussian heatmap targets, one map per joint.

    ``target[n, k, i, j] = exp(-((j - x)^2 + (i - y)^2) / (2 sigma^2))`` with ``(x, y) =
    points[n, k]``: peak 1 exactly at the (sub-pixel) point, not truncated and not rounded to the
    nearest cell (DARK's "unbiased" encoding; HRNet rounds the centre to a cell and cuts the
    Gaussian at ``3 sigma``, which biases the targets by up to half a cell).

    Args:
        points: ``(N, K, 2)`` ``(x, y)`` in heatmap pixels (cell centres at integers); values of
            invisible joints are ignored (NaN allowed).
        visible: ``(N, K)`` bool, joints that have a target.
        size: ``(H, W)`` of the heatmap.
        sigma: Gaussian standard deviation in heatmap pixels (2 for 64 x 48 maps in HRNet).

    Returns:
        ``heatmaps (N, K, H, W)`` float32 in ``[0, 1]``, all zero for joints without a target,
        and ``weight (N, K)`` float32: 1 for a visible joint within ``3 sigma`` of the map
        (a joint further out would have an empty map: HRNet drops those too), else 0.
    """
    if points.dim() != 3 or points.shape[-1] != 2 or visible.shape != points.shape[:2]:
        raise ValueError(f"points must be (N, K, 2) and visible (N, K), got "
                         f"{tuple(points.shape)} and {tuple(visible.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    h, w = size
    pts = torch.nan_to_num(points.float(), nan=-1e6, posinf=-1e6, neginf=-1e6)
    x, y = pts[..., 0], pts[..., 1]
    reach = 3.0 * sigma
    inside = (x >= -reach) & (x <= w - 1 + reach) & (y >= -reach) & (y <= h - 1 + reach)
    weight = (visible.bool() & inside).float()
    cols = torch.arange(w, dtype=torch.float32, device=points.device)
    rows = torch.arange(h, dtype=torch.float32, device=points.device)
    # separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dy^2 / 2s^2) * exp(-dx^2 / 2s^2)
    gx = torch.exp(-(cols - x[..., None]) ** 2 / (2 * sigma**2))  # (N, K, W)
    gy = torch.exp(-(rows - y[..., None]) ** 2 / (2 * sigma**2))  # (N, K, H)
    heatmaps = gy[..., :, None] * gx[..., None, :] * weight[..., None, None]
    return heatmaps, weight


def heatmap_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Per-joint weighted MSE of SimpleBaseline / HRNet (``JointsMSELoss`` with target weight):
    ``0.5 * mean over (N, K, H, W) of (w_nk * (pred - target))^2``.

    A joint with weight 0 (invisible, or far outside the map) contributes nothing but still
    counts in the mean, as in HRNet: the loss scale does not depend on how many joints are
    visible in the batch.

    Args:
        pred: ``(N, K, H, W)`` predicted heatmaps (raw conv outputs, no activation).
        target: ``(N, K, H, W)`` from :func:`gaussian_heatmaps`.
        weight: ``(N, K)`` per-joint weights.

    Returns:
        Scalar float32 loss.
    """
    if pred.shape != target.shape or weight.shape != pred.shape[:2]:
        raise ValueError(f"pred and target must be (N, K, H, W) and weight (N, K), got "
                         f"{tuple(pred.shape)}, {tuple(target.shape)} and {tuple(weight.shape)}")
    diff = (pred.float() - target.float()) * weight.float()[..., None, None]
    return 0.5 * diff.pow(2).mean()


def rle_loss(mu: Tensor, log_sigma: Tensor, target: Tensor, visible: Tensor, flow: LogDensity,
             *, prior: str = "laplace", reduction: str = "mean") -> Tensor:
    """RLE negative log-likelihood of the targets (see the module docstring for the formula).

    Args:
        mu: ``(N, K, 2)`` predicted joint positions (any unit shared with ``target``; the RLE
            head gives crop-normalised ``[0, 1]``).
        log_sigma: ``(N, K, 2)`` natural log of the predicted scale per coordinate, same unit.
        target: ``(N, K, 2)`` ground truth; values of invisible joints are ignored (NaN allowed).
        visible: ``(N, K)`` bool, joints that count.
        flow: the learned residual density ``G`` on 2-D normalised residuals.
        prior: ``"laplace"`` (the paper's choice), ``"gaussian"`` or ``"none"`` (no ``Q``:
            the flow alone models the residual, the paper's "direct likelihood" variant).
        reduction: ``"mean"`` over visible joints (0 if there are none) or ``"none"`` for the
            ``(N, K)`` per-joint losses (0 at invisible joints).

    Returns:
        Scalar float32 loss, or ``(N, K)`` with ``reduction="none"``.
    """
    if mu.shape != log_sigma.shape or mu.shape != target.shape or mu.shape[-1] != 2:
        raise ValueError(f"mu, log_sigma and target must all be (N, K, 2), got "
                         f"{tuple(mu.shape)}, {tuple(log_sigma.shape)}, {tuple(target.shape)}")
    if visible.shape != mu.shape[:-1]:
        raise ValueError(f"visible must be {tuple(mu.shape[:-1])}, got {tuple(visible.shape)}")
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    mu, log_sigma = mu.float(), log_sigma.float()
    vis = visible.bool()
    # invisible targets -> mu (detached): no NaN reaches the flow or the gradients
    target = torch.where(vis[..., None], target.float(), mu.detach())
    u = (target - mu) * torch.exp(-log_sigma)
    with torch.autocast(u.device.type, enabled=False):  # a log-density: keep it in float32
        log_g = flow.log_prob(u.reshape(-1, 2)).reshape(u.shape[:-1])
    nll = log_sigma.sum(-1) - log_g.float()
    if prior == "laplace":
        nll = nll + (u.abs() + math.log(2.0)).sum(-1)
    elif prior == "gaussian":
        nll = nll + (0.5 * u.pow(2) + 0.5 * math.log(2 * math.pi)).sum(-1)
    nll = torch.where(vis, nll, torch.zeros_like(nll))
    if reduction == "none":
        return nll
    return nll.sum() / vis.sum().clamp(min=1)
