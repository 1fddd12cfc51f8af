"""Keypoint losses against explicit formulas: Gaussian heatmap targets cell by cell, the
weighted MSE, and the RLE negative log-likelihood computed by hand with an identity flow (a
standard-normal residual density)."""

from __future__ import annotations

import math

import pytest
import torch

from scaledet.losses.keypoints import gaussian_heatmaps, heatmap_loss, rle_loss
from scaledet.models.keypoints.flow import RealNVP


class StandardNormal2d:
    """An independent identity "flow": the standard normal density on 2-D points."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x.pow(2).sum(-1) - math.log(2 * math.pi)


def test_gaussian_heatmaps_match_the_explicit_formula():
    h, w, sigma = 9, 7, 1.5
    points = torch.tensor([[[3.0, 4.0], [2.3, 6.7], [-1.0, 2.5]],
                           [[6.9, 0.2], [float("nan"), 1.0], [-20.0, 3.0]]])
    visible = torch.tensor([[True, True, True], [True, False, True]])
    maps, weight = gaussian_heatmaps(points, visible, (h, w), sigma)
    assert maps.shape == (2, 3, h, w) and weight.shape == (2, 3)
    # (-1, 2.5) is outside but within 3 sigma: kept; (-20, 3) is 20 px out: dropped
    assert weight.tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    for n in range(2):
        for k in range(3):
            x, y = points[n, k].tolist()
            for i in range(h):
                for j in range(w):
                    ref = (math.exp(-((j - x) ** 2 + (i - y) ** 2) / (2 * sigma**2))
                           if weight[n, k] else 0.0)
                    assert maps[n, k, i, j].item() == pytest.approx(ref, abs=1e-6)
    assert maps[0, 0, 4, 3].item() == 1.0  # peak 1 exactly at an integer point
    assert maps[0, 0].argmax().item() == 4 * w + 3


def test_heatmap_loss_is_half_the_weighted_mean_square():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 4, 5, generator=g), torch.rand(2, 3, 4, 5, generator=g)
    weight = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    total = 0.0
    for n in range(2):
        for k in range(3):
            for i in range(4):
                for j in range(5):
                    total += 0.5 * (weight[n, k].item() * (pred[n, k, i, j] - target[n, k, i, j])
                                    .item()) ** 2
    assert heatmap_loss(pred, target, weight).item() == pytest.approx(total / (2 * 3 * 4 * 5),
                                                                      rel=1e-5)
    assert heatmap_loss(target, target, weight).item() == 0.0


def _hand_rle(mu, log_sigma, target, visible, prior):
    """Per-joint RLE NLL with a standard-normal flow, written out coordinate by coordinate."""
    total, count = 0.0, 0
    for n in range(len(mu)):
        for k in range(len(mu[n])):
            if not visible[n][k]:
                continue
            loss = math.log(2 * math.pi)  # -log N(u; 0, I) = |u|^2 / 2 + log(2 pi)
            for d in range(2):
                u = (target[n][k][d] - mu[n][k][d]) / math.exp(log_sigma[n][k][d])
                loss += 0.5 * u * u + log_sigma[n][k][d]
                if prior == "laplace":
                    loss += abs(u) + math.log(2)
                elif prior == "gaussian":
                    loss += 0.5 * u * u + 0.5 * math.log(2 * math.pi)
            total += loss
            count += 1
    return total / count


@pytest.mark.parametrize("prior", ["laplace", "gaussian", "none"])
def test_rle_loss_is_the_closed_form_nll_with_an_identity_flow(prior):
    mu = [[[0.40, 0.55], [0.20, 0.80], [0.5, 0.5]]]
    log_sigma = [[[math.log(0.1), math.log(0.05)], [math.log(0.3), math.log(0.2)],
                  [0.0, 0.0]]]
    target = [[[0.47, 0.50], [0.25, 0.60], [float("nan"), float("nan")]]]
    visible = [[True, True, False]]
    ref = _hand_rle(mu, log_sigma, target, visible, prior)
    args = [torch.tensor(v) for v in (mu, log_sigma, target, visible)]
    for flow in (StandardNormal2d(), RealNVP(zero_init=True)):  # zero couplings = identity
        loss = rle_loss(*args, flow=flow, prior=prior)
        assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_rle_gradient_pushes_mu_towards_the_target_and_ignores_invisible_joints():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(4, 5, 2, generator=g)
    target[0, 1] = float("nan")
    visible = torch.ones(4, 5, dtype=torch.bool)
    visible[0, 1] = visible[2, 3] = False
    mu = (target.nan_to_num(0.5) + 0.2 * torch.randn(4, 5, 2, generator=g)).requires_grad_()
    log_sigma = torch.full((4, 5, 2), math.log(0.1), requires_grad=True)
    loss = rle_loss(mu, log_sigma, target, visible, RealNVP(zero_init=True))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(mu.grad).all()
    assert mu.grad[~visible].abs().max() == 0 and log_sigma.grad[~visible].abs().max() == 0
    towards = (mu.grad * (mu.detach() - target))[visible]  # > 0: descent moves mu to target
    assert (towards > 0).all()
    stepped = mu.detach() - 1e-5 * mu.grad
    err_before = (mu.detach() - target)[visible].abs()
    err_after = (stepped - target)[visible].abs()
    assert (err_after < err_before).all()


def test_rle_sigma_gradient_grows_sigma_for_large_residuals_and_shrinks_it_for_small():
    # Gaussian prior + standard-normal flow: L(sigma) = r^2 / sigma^2 + log sigma per coordinate
    # (+ const), minimised at sigma = sqrt(2) |r|
    mu = torch.zeros(1, 2, 2)
    target = torch.tensor([[[0.5, 0.5], [0.01, 0.01]]])
    log_sigma = torch.full((1, 2, 2), math.log(0.1), requires_grad=True)
    rle_loss(mu, log_sigma, target, torch.ones(1, 2, dtype=torch.bool), StandardNormal2d(),
             prior="gaussian").backward()
    assert (log_sigma.grad[0, 0] < 0).all() and (log_sigma.grad[0, 1] > 0).all()


def test_rle_reductions_and_no_visible_joint():
    mu = torch.rand(2, 3, 2, requires_grad=True)
    log_sigma = torch.zeros(2, 3, 2)
    visible = torch.zeros(2, 3, dtype=torch.bool)
    loss = rle_loss(mu, log_sigma, torch.rand(2, 3, 2), visible, StandardNormal2d())
    assert loss.item() == 0.0
    loss.backward()  # still a graph
    visible[1, 2] = True
    per = rle_loss(mu, log_sigma, torch.rand(2, 3, 2), visible, StandardNormal2d(),
                   reduction="none")
    assert per.shape == (2, 3) and (per[~visible] == 0).all() and per[1, 2] != 0


def test_bad_arguments_raise():
    x = torch.zeros(1, 2, 2)
    vis = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="prior"):
        rle_loss(x, x, x, vis, StandardNormal2d(), prior="cauchy")
    with pytest.raises(ValueError, match="visible"):
        rle_loss(x, x, x, vis[:, :1], StandardNormal2d())
    with pytest.raises(ValueError, match="must all be"):
        rle_loss(x, x[:, :1], x, vis, StandardNormal2d())
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(x, vis, (4, 4), 0.0)
    with pytest.raises(ValueError, match="weight"):
        heatmap_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.ones(1, 3))
