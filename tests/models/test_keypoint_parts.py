"""Pose-model parts against independent references: the RealNVP log-density vs a numerical
Jacobian determinant and a grid integral, its invertibility and that it fits a 2-D density;
heatmap decoding on hand-built Gaussians at sub-pixel centres (DARK vs arg-max + quarter
offset) and a hand-worked quarter-offset case; the heads' shapes, and that the RLE flow is used
only by the loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from scaledet.losses.keypoints import gaussian_heatmaps
from scaledet.models.keypoints import HeatmapHead, RealNVP, RLEHead, decode_argmax, decode_dark


def _random_flow(seed: int, scale: float = 0.5, layers: int = 4, hidden: int = 16) -> RealNVP:
    """A float64 flow far from the identity: every weight redrawn from N(0, scale^2)."""
    flow = RealNVP(num_layers=layers, hidden=hidden, zero_init=False).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return flow


@pytest.mark.parametrize("seed", [0, 1])
def test_flow_log_det_and_log_prob_match_the_numerical_jacobian(seed):
    flow = _random_flow(seed)
    g = torch.Generator().manual_seed(10 + seed)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64) * 1.5
    z, log_det = flow.to_base(x)
    log_prob = flow.log_prob(x)
    assert not torch.allclose(z, x)  # not trivially the identity
    for i in range(len(x)):
        jac = jacobian(lambda v: flow.to_base(v[None])[0][0], x[i])
        sign, ref = torch.linalg.slogdet(jac)
        assert sign != 0 and log_det[i].item() == pytest.approx(ref.item(), abs=1e-9)
        base = -0.5 * z[i].pow(2).sum() - math.log(2 * math.pi)
        assert log_prob[i].item() == pytest.approx((base + ref).item(), abs=1e-9)
        # the generative direction's log-det at z is minus the inverse's at x
        jac_gen = jacobian(lambda v: flow.from_base(v[None])[0][0], z[i])
        assert flow.from_base(z[i:i + 1])[1].item() == pytest.approx(
            torch.linalg.slogdet(jac_gen)[1].item(), abs=1e-9)
        assert torch.linalg.slogdet(jac_gen)[1].item() == pytest.approx(-ref.item(), abs=1e-9)


def test_flow_is_invertible_and_batched_log_prob_keeps_leading_dims():
    flow = _random_flow(3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64) * 2
    z, ld = flow.to_base(x)
    back, ld_back = flow.from_base(z)
    assert torch.allclose(back, x, atol=1e-10) and torch.allclose(ld_back, -ld, atol=1e-10)
    again, _ = flow.to_base(flow.from_base(x)[0])
    assert torch.allclose(again, x, atol=1e-10)
    lp = flow.log_prob(x.reshape(4, 16, 2))
    assert lp.shape == (4, 16) and torch.allclose(lp.reshape(-1), flow.log_prob(x))


def test_flow_density_integrates_to_one():
    flow = _random_flow(5, scale=0.3)
    step = 0.04
    axis = torch.arange(-12, 12, step, dtype=torch.float64) + step / 2
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum().item() * step * step
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_zero_initialised_flow_is_a_standard_normal():
    flow = RealNVP()
    x = torch.randn(10, 2)
    ref = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)).log_prob(x)
    assert torch.allclose(flow.log_prob(x), ref, atol=1e-6)
    assert torch.equal(flow.to_base(x)[0], x)


def test_flow_fits_a_simple_2d_distribution():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def draw(n: int) -> torch.Tensor:  # a shifted, stretched banana: y depends on x^2
        a, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
        return torch.stack([1.0 + 2.0 * a, 0.3 * b + 0.5 * a**2], -1)

    data, held_out = draw(512), draw(2048)
    flow = RealNVP(num_layers=4, hidden=32)
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    with torch.no_grad():
        before = -flow.log_prob(held_out).mean().item()
    for _ in range(200):
        loss = -flow.log_prob(data).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = -flow.log_prob(held_out).mean().item()
    # identity flow: ~4.8 nats; the true entropy is ~2.3
    assert after < before - 1.0, (before, after)


def test_quarter_offset_hand_worked():
    hm = torch.zeros(1, 3, 5, 6)
    hm[0, 0, 1, 2] = 1.0  # peak at x=2, y=1
    hm[0, 0, 1, 3], hm[0, 0, 1, 1] = 0.6, 0.3  # right neighbour higher: x + 0.25
    hm[0, 0, 0, 2], hm[0, 0, 2, 2] = 0.5, 0.2  # upper neighbour (y=0) higher: y - 0.25
    hm[0, 1, 3, 0] = 0.8  # peak on the left border at y=3: no x shift
    hm[0, 1, 3, 1] = 0.7
    hm[0, 1, 2, 0] = hm[0, 1, 4, 0] = 0.4  # equal neighbours: no y shift
    hm[0, 2, 4, 5] = 0.9  # bottom-right corner
    hm[0, 2, 3, 5] = 0.5
    coords, scores = decode_argmax(hm)
    assert coords[0].tolist() == [[2.25, 0.75], [0.0, 3.0], [5.0, 4.0]]
    assert scores[0].tolist() == pytest.approx([1.0, 0.8, 0.9])
    plain, _ = decode_argmax(hm, quarter_offset=False)
    assert plain[0].tolist() == [[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]]


def _hand_gaussians(centres: torch.Tensor, h: int, w: int, sigma: float) -> torch.Tensor:
    """``(N, K, 2)`` sub-pixel centres -> ``(N, K, h, w)`` sampled Gaussians, peak <= 1."""
    cols = torch.arange(w, dtype=torch.float64)
    rows = torch.arange(h, dtype=torch.float64)
    dx2 = (cols - centres[..., 0, None].double()) ** 2
    dy2 = (rows - centres[..., 1, None].double()) ** 2
    return torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma**2)).float()


def test_dark_recovers_sub_pixel_centres_where_the_quarter_offset_cannot():
    h, w, sigma = 64, 48, 2.0
    g = torch.Generator().manual_seed(0)
    centres = torch.stack([8 + torch.rand(4, 17, generator=g) * (w - 17),
                           8 + torch.rand(4, 17, generator=g) * (h - 17)], -1)
    maps = _hand_gaussians(centres, h, w, sigma)
    quarter, _ = decode_argmax(maps)
    exact, _ = decode_dark(maps, kernel_size=0)  # no blur: log is an exact quadratic
    dark, scores = decode_dark(maps, kernel_size=11)  # DARK's setting for sigma = 2
    err_quarter = (quarter - centres).abs()
    assert err_quarter.max() <= 0.25 + 1e-5 and err_quarter.max() > 0.2
    assert (exact - centres).abs().max() < 1e-3
    assert (dark - centres).abs().max() < 0.01  # measured: ~4e-5
    assert (dark - centres).abs().mean() < 0.5 * err_quarter.mean()
    assert torch.allclose(scores, maps.flatten(2).amax(-1))


def test_dark_blur_helps_on_noisy_maps():
    """Predicted maps are not exact Gaussians: on noisy ones the log-Taylor step without blur
    is thrown off by the noise, the blurred one is not (measured: 0.012 px vs 0.074 px mean
    error, quarter offset 0.15 px)."""
    h, w = 64, 48
    g = torch.Generator().manual_seed(0)
    centres = torch.stack([8 + torch.rand(4, 17, generator=g) * (w - 17),
                           8 + torch.rand(4, 17, generator=g) * (h - 17)], -1)
    maps = _hand_gaussians(centres, h, w, 2.0) + 0.02 * torch.randn(4, 17, h, w, generator=g)
    err_blur = (decode_dark(maps, kernel_size=11)[0] - centres).abs().mean()
    err_raw = (decode_dark(maps, kernel_size=0)[0] - centres).abs().mean()
    err_quarter = (decode_argmax(maps)[0] - centres).abs().mean()
    assert err_blur < 0.05 and err_blur < 0.5 * err_raw and err_blur < 0.25 * err_quarter


def test_dark_falls_back_to_the_arg_max_cell_on_the_border_and_flat_maps():
    hm = torch.zeros(2, 1, 6, 6)
    hm[0, 0] = _hand_gaussians(torch.tensor([[[0.2, 3.4]]]), 6, 6, 1.0)[0, 0]  # on the border
    coords, scores = decode_dark(hm, kernel_size=3)
    assert coords[0, 0].tolist() == [0.0, 3.0]
    assert coords[1, 0].tolist() == [0.0, 0.0] and scores[1, 0] == 0  # all zero: no offset
    assert torch.isfinite(coords).all()


def test_gaussian_targets_decode_back_to_their_points():
    g = torch.Generator().manual_seed(2)
    points = torch.rand(3, 5, 2, generator=g) * torch.tensor([40.0, 56.0]) + 4
    visible = torch.rand(3, 5, generator=g) > 0.3
    maps, weight = gaussian_heatmaps(points, visible, (64, 48), 2.0)
    coords, scores = decode_dark(maps, kernel_size=0)
    assert (coords - points)[visible].abs().max() < 1e-3
    assert torch.equal(scores > 0, visible)


@pytest.mark.parametrize("upsample, n", [("deconv", 2), ("bilinear", 3), ("deconv", 0)])
def test_heatmap_head_shapes_and_loss(upsample, n):
    head = HeatmapHead(32, 17, channels=16, num_upsample=n, upsample=upsample)
    out = head(torch.randn(2, 32, 8, 6))
    assert out.shape == (2, 17, 8 * 2**n, 6 * 2**n) and head.upsample_factor == 2**n
    assert out.abs().max() < 0.5  # small initial maps (near the targets' background)
    points = torch.rand(2, 17, 2) * torch.tensor([6.0 * 2**n - 1, 8.0 * 2**n - 1])
    visible = torch.ones(2, 17, dtype=torch.bool)
    target, _ = gaussian_heatmaps(points, visible, out.shape[-2:], 2.0)
    assert head.loss(target, points, visible).item() == 0.0
    loss = head.loss(out, points, visible)
    loss.backward()
    assert loss > 0 and head.final.weight.grad.abs().sum() > 0
    for method in ("dark", "argmax"):
        coords, scores = head.decode(out.detach(), method=method)
        assert coords.shape == (2, 17, 2) and scores.shape == (2, 17)


def test_rle_head_shapes_and_the_flow_is_used_only_by_the_loss():
    torch.manual_seed(0)
    head = RLEHead(32, 17)
    x = torch.randn(2, 32, 8, 6)
    mu, log_sigma = head(x)
    assert mu.shape == log_sigma.shape == (2, 17, 2)
    assert ((mu > 0) & (mu < 1)).all() and (log_sigma < 0).all()
    assert torch.allclose(mu, torch.full_like(mu, 0.5), atol=0.05)  # start at the crop centre
    scores = head.scores(log_sigma)
    assert scores.shape == (2, 17) and ((scores > 0) & (scores < 1)).all()
    (mu.sum() + log_sigma.sum()).backward()
    assert all(p.grad is None for p in head.flow.parameters())  # not in the inference graph
    with torch.no_grad():
        for p in head.flow.parameters():
            p.add_(1.0)
    mu2, log_sigma2 = head(x)
    assert torch.equal(mu, mu2) and torch.equal(log_sigma, log_sigma2)


def test_rle_head_trains_flow_and_regressor():
    torch.manual_seed(0)
    head = RLEHead(16, 5, flow_layers=4, flow_hidden=16)
    feats = torch.randn(8, 16, 4, 4)
    target = torch.rand(8, 5, 2) * 0.8 + 0.1
    visible = torch.rand(8, 5) > 0.2
    start = (head(feats)[0] - target)[visible].abs().mean()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = head.loss(*head(feats), target, visible)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    flow_grads = [p.grad for p in head.flow.parameters()]
    assert any(gr is not None and gr.abs().sum() > 0 for gr in flow_grads)
    assert losses[-1] < losses[0] - 1.0, (losses[0], losses[-1])
    assert (head(feats)[0] - target)[visible].abs().mean() < 0.5 * start  # measured: 0.25 -> 0.06


def test_soft_argmax_is_the_expected_cell_centre():
    from scaledet.models.keypoints.heads import soft_argmax

    maps = torch.full((1, 2, 4, 5), -1e4)
    maps[0, 0, 1, 3] = 0.0  # one cell: its centre ((3 + 0.5) / 5, (1 + 0.5) / 4)
    maps[0, 1, 2, 0] = maps[0, 1, 2, 4] = 0.0  # two equal cells: their midpoint
    out = soft_argmax(maps)
    torch.testing.assert_close(out[0, 0], torch.tensor([3.5 / 5, 1.5 / 4]))
    torch.testing.assert_close(out[0, 1], torch.tensor([2.5 / 5, 2.5 / 4]))
    # brute force on random logits: the probability-weighted mean of the cell centres
    logits = torch.randn(3, 4, 6, 7)
    p = torch.softmax(logits.reshape(3, 4, -1), -1).reshape(3, 4, 6, 7)
    ys, xs = torch.meshgrid((torch.arange(6) + 0.5) / 6, (torch.arange(7) + 0.5) / 7,
                            indexing="ij")
    ref = torch.stack([(p * xs).sum((-1, -2)), (p * ys).sum((-1, -2))], -1)
    torch.testing.assert_close(soft_argmax(logits), ref)


def test_rle_head_integral_readout_starts_centred_and_learns_positions():
    torch.manual_seed(0)
    head = RLEHead(8, 3, pool=(2, 2), hidden=16, readout="integral")
    assert head.level == 0 and head.coord is None
    feats = 0.1 * torch.randn(16, 8, 6, 6)
    flat = torch.randint(0, 36, (16,))
    feats[:, 0].view(16, -1)[torch.arange(16), flat] += 4.0  # a bright cell in channel 0
    mu, _ = head(feats)
    torch.testing.assert_close(mu, torch.full_like(mu, 0.5), atol=0.01, rtol=0)
    # joints at the bright cell: learnable by the 1 x 1 map conv
    target = torch.stack([(flat % 6 + 0.5) / 6, (flat // 6 + 0.5) / 6], -1)[:, None].expand(
        16, 3, 2)
    visible = torch.ones(16, 3, dtype=torch.bool)
    start = (mu - target).abs().mean()
    opt = torch.optim.Adam(head.parameters(), lr=5e-2)
    for _ in range(150):
        loss = head.loss(*head(feats), target, visible)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (head(feats)[0] - target).abs().mean() < 0.5 * start
    with pytest.raises(ValueError, match="readout"):
        RLEHead(8, 3, readout="heatmap")
