"""Noise schedules and samplers: closed forms, and diffusers' DDIM and flow-matching Euler
schedulers as an independent reference on random tensors (schedulers need no weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from scipy import stats

from scaledet.nn import (
    NoiseSchedule,
    ddim_timesteps,
    euler_sample,
    flow_interpolate,
    flow_times,
)
from scaledet.nn.diffusion import cosine_betas

T = 1000
PRED_TYPE = {"eps": "epsilon", "x0": "sample"}


def _diffusers_ddim(prediction: str = "eps", spacing: str = "leading", **kw) -> DDIMScheduler:
    """diffusers' DDIM with our default linear betas and ``abar_{-1} = 1``."""
    return DDIMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=2e-2,
                         beta_schedule="linear", set_alpha_to_one=True, steps_offset=0,
                         clip_sample=False, prediction_type=PRED_TYPE[prediction],
                         timestep_spacing=spacing, **kw)


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- schedules -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alphas_cumprod_is_the_product_of_one_minus_beta(kind):
    s = NoiseSchedule(T, kind)
    assert s.betas.shape == s.alphas_cumprod.shape == (T,)
    assert s.betas.dtype == torch.float64
    for t in (0, 1, 10, 500, 998, 999):
        expect = math.prod(1 - b for b in s.betas[: t + 1].tolist())
        assert s.alphas_cumprod[t].item() == pytest.approx(expect, rel=1e-12, abs=1e-300)
    assert (s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all()
    assert 0 < s.alphas_cumprod[-1] < s.alphas_cumprod[0] < 1
    assert s.alpha_bar(-1).item() == 1.0
    assert s.alpha_bar(torch.tensor([3, -1, 7])).tolist() == [
        s.alphas_cumprod[3].item(), 1.0, s.alphas_cumprod[7].item()]


def test_linear_betas_are_evenly_spaced_and_match_diffusers():
    s = NoiseSchedule(T, "linear", beta_start=1e-4, beta_end=2e-2)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(2e-2)
    assert torch.allclose(s.betas.diff(), torch.full((T - 1,), (2e-2 - 1e-4) / (T - 1),
                                                     dtype=torch.float64))
    ref = _diffusers_ddim()
    torch.testing.assert_close(s.betas.float(), ref.betas, rtol=1e-6, atol=0)
    torch.testing.assert_close(s.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-4, atol=0)


def test_cosine_schedule_formula():
    s = NoiseSchedule(T, "cosine")

    def f(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = s.betas.tolist()
    assert max(betas) == pytest.approx(0.999) and all(b <= 0.999 for b in betas)
    clipped = [t for t, b in enumerate(betas) if b >= 0.999]
    assert clipped == [T - 1]  # only the last step needs the clip at T = 1000
    for t in range(0, T - 1, 37):  # abar_t = f((t+1)/T) / f(0) where nothing was clipped
        assert s.alphas_cumprod[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-9)
        assert betas[t] == pytest.approx(1 - f((t + 1) / T) / f(t / T), rel=1e-9)
    # the same betas as diffusers' "squaredcos_cap_v2" (float32 there)
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(s.betas.float(), ref.betas, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(cosine_betas(10), NoiseSchedule(10, "cosine").betas)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule(T, "sigmoid")
    with pytest.raises(ValueError, match="beta"):
        NoiseSchedule(T, "linear", beta_start=0.1, beta_end=0.01)
    s = NoiseSchedule(T)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="timesteps"):
        s.q_sample(x, T)
    with pytest.raises(ValueError, match="timesteps"):
        s.q_sample(x, torch.tensor([0, -2]))
    with pytest.raises(TypeError, match="integers"):
        s.q_sample(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="prefix"):
        s.q_sample(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="t_prev < t"):
        s.ddim_step(x, x, 10, 10)
    with pytest.raises(ValueError, match="prediction"):
        s.ddim_step(x, x, 10, 5, prediction="v")
    with pytest.raises(ValueError, match="eta"):
        s.ddim_step(x, x, 10, 5, eta=1.5)
    with pytest.raises(ValueError, match="spacing"):
        ddim_timesteps(T, 10, "linspace")
    with pytest.raises(ValueError, match="num_inference_steps"):
        ddim_timesteps(T, 0)
    with pytest.raises(ValueError, match="increasing"):
        euler_sample(lambda x, t: x, x, 2, times=[0.0, 0.6, 0.5])


# --- forward process -----------------------------------------------------------------------


def test_q_sample_is_the_closed_form_and_broadcasts_timesteps():
    s = NoiseSchedule(T, "cosine")
    x0, eps = _randn(3, 5, 4, seed=1), _randn(3, 5, 4, seed=2)
    t = torch.tensor([0, 400, 999])
    out = s.q_sample(x0, t, eps)
    for i, ti in enumerate(t.tolist()):
        a = s.alphas_cumprod[ti].item()
        torch.testing.assert_close(out[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i])
    torch.testing.assert_close(s.q_sample(x0, 400, eps)[1], out[1])  # an int: every sample
    per_box = torch.tensor([[0, 400, 999, 1, 2]] * 3)  # (B, N) against (B, N, 4)
    torch.testing.assert_close(s.q_sample(x0, per_box, eps)[:, 1], s.q_sample(x0, 400, eps)[:, 1])
    assert out.dtype == torch.float32
    assert s.q_sample(x0.double(), t, eps.double()).dtype == torch.float64


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_q_sample_moments(kind):
    s = NoiseSchedule(T, kind)
    n = 200_000
    t = torch.tensor([0, 250, 600, 999])
    x0 = torch.tensor([1.5, -0.7, 2.0, 3.0], dtype=torch.float64)[:, None].expand(4, n)
    g = torch.Generator().manual_seed(3)
    xt = s.q_sample(x0, t, torch.randn(4, n, generator=g, dtype=torch.float64))
    a = s.alphas_cumprod[t]
    mean, std = xt.mean(1), xt.std(1)
    # standard errors: std / sqrt(n) for the mean, std / sqrt(2n) for the std; 5 of them
    torch.testing.assert_close(mean, a.sqrt() * x0[:, 0], rtol=0, atol=5 / math.sqrt(n))
    torch.testing.assert_close(std, (1 - a).sqrt(), rtol=5 / math.sqrt(2 * n), atol=0)


# --- DDIM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 10, 16, 50, 1000])
def test_ddim_timesteps_match_diffusers(spacing, n):
    ref = _diffusers_ddim(spacing=spacing)
    ref.set_timesteps(n)
    ours = ddim_timesteps(T, n, spacing)
    assert ours.dtype == torch.int64
    assert ours.tolist() == ref.timesteps.tolist()
    if spacing == "trailing":
        assert ours[0].item() == T - 1


@pytest.mark.parametrize("prediction", ["eps", "x0"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("n", [1, 4, 10, 50, 1000])
def test_ddim_step_eta0_matches_diffusers(prediction, spacing, n):
    """Every (t, t - T // n) pair of diffusers' schedule, t_prev = -1 included."""
    s = NoiseSchedule(T)
    ref = _diffusers_ddim(prediction, spacing)
    ref.set_timesteps(n)
    steps = ref.timesteps.tolist()
    picked = sorted({0, len(steps) // 2, len(steps) - 1})
    for k in picked:
        t = steps[k]
        t_prev = max(t - T // n, -1)  # diffusers: any negative step means abar = 1
        x, out = _randn(2, 3, 8, 8, seed=t), _randn(2, 3, 8, 8, seed=t + 1)
        expect = ref.step(out, t, x, eta=0.0).prev_sample
        got = s.ddim_step(x, out, t, t_prev, eta=0.0, prediction=prediction)
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)
        # the same with per-sample tensor timesteps
        tt = torch.full((2,), t)
        got = s.ddim_step(x, out, tt, torch.full((2,), t_prev), prediction=prediction)
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_step_with_noise_matches_diffusers(prediction, eta):
    s = NoiseSchedule(T)
    ref = _diffusers_ddim(prediction)
    ref.set_timesteps(20)
    for t in (950, 500, 0):
        x, out, z = (_randn(2, 6, seed=t + i) for i in range(3))
        expect = ref.step(out, t, x, eta=eta, variance_noise=z).prev_sample
        got = s.ddim_step(x, out, t, max(t - 50, -1), eta=eta, noise=z, prediction=prediction)
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("n", [4, 10])
def test_ddim_sampling_loop_matches_diffusers(prediction, spacing, n):
    s = NoiseSchedule(T)

    def model(x, t):  # any deterministic function of (x, t)
        return 0.5 * torch.tanh(x) + 0.1 * torch.cos(t.float() / 100).reshape(-1, 1, 1)

    x_noise = _randn(3, 4, 5, seed=9)
    ref = _diffusers_ddim(prediction, spacing)
    ref.set_timesteps(n)
    x = x_noise
    for t in ref.timesteps:
        x = ref.step(model(x, t.expand(3)), t, x).prev_sample
    got = s.ddim_sample(model, x_noise, n, prediction=prediction, spacing=spacing)
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_eta1_variance_is_the_ddpm_posterior_variance(kind):
    s = NoiseSchedule(T, kind)
    t = torch.arange(1, T)
    a, a_prev, beta = s.alphas_cumprod[1:], s.alphas_cumprod[:-1], s.betas[1:]
    closed = beta * (1 - a_prev) / (1 - a)  # Ho et al. eq. 7
    torch.testing.assert_close(s.ddim_sigma(t, t - 1, eta=1.0) ** 2, closed, rtol=1e-9, atol=0)
    torch.testing.assert_close(s.posterior_variance[1:], closed, rtol=1e-12, atol=0)
    assert s.posterior_variance[0].item() == 0.0 == s.ddim_sigma(0, -1).item()
    torch.testing.assert_close(s.ddim_sigma(t, t - 1, eta=0.3), 0.3 * closed.sqrt())
    assert (s.ddim_sigma(t, t - 1, eta=0.0) == 0).all()
    if kind == "linear":  # diffusers' DDPM "fixed_small" variance, float32
        ref = DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=2e-2)
        ref_var = torch.stack([ref._get_variance(i) for i in range(1, T)])
        torch.testing.assert_close(closed.float(), ref_var, rtol=2e-3, atol=0)


def test_ddim_eta1_step_is_the_ddpm_posterior():
    """With a consistent eps (x_t built from x0 and eps), eta = 1 and t_prev = t - 1 give
    mean(q(x_{t-1} | x_t, x0)) + sqrt(posterior variance) z exactly."""
    s = NoiseSchedule(T, "cosine")
    x0, eps, z = (_randn(4, 7, seed=i, dtype=torch.float64) for i in range(3))
    for t in (1, 10, 500, 998, 999):
        a, a_prev = s.alphas_cumprod[t], s.alphas_cumprod[t - 1]
        beta, alpha = s.betas[t], s.alphas[t]
        xt = s.q_sample(x0, t, eps)
        mean = (a_prev.sqrt() * beta / (1 - a)) * x0 + (alpha.sqrt() * (1 - a_prev) / (1 - a)) * xt
        expect = mean + s.posterior_variance[t].sqrt() * z
        for prediction, out in (("eps", eps), ("x0", x0)):
            got = s.ddim_step(xt, out, t, t - 1, eta=1.0, noise=z, prediction=prediction)
            torch.testing.assert_close(got, expect, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_ddim_eta0_with_a_consistent_prediction_stays_on_the_forward_path(prediction):
    """x_t = q_sample(x0, t, eps) and the true prediction -> q_sample(x0, t_prev, eps), for any
    jump: deterministic DDIM keeps eps fixed and moves only the noise level."""
    s = NoiseSchedule(T)
    x0, eps = _randn(2, 3, 4, seed=5, dtype=torch.float64), _randn(2, 3, 4, seed=6,
                                                                     dtype=torch.float64)
    for t, t_prev in ((999, 500), (999, -1), (300, 299), (50, 0), (0, -1)):
        xt = s.q_sample(x0, t, eps)
        out = eps if prediction == "eps" else x0
        got = s.ddim_step(xt, out, t, t_prev, prediction=prediction)
        expect = x0 if t_prev == -1 else s.q_sample(x0, t_prev, eps)
        torch.testing.assert_close(got, expect, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s.predict_x0(s.q_sample(x0, 700, eps), eps, 700), x0)
    torch.testing.assert_close(s.predict_eps(s.q_sample(x0, 700, eps), x0, 700), eps)


def test_ddim_noise_comes_from_the_generator():
    s = NoiseSchedule(T)
    x, out = _randn(2, 5, seed=1), _randn(2, 5, seed=2)

    def step(seed):
        return s.ddim_step(x, out, 500, 400, eta=1.0,
                           generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(step(0), step(0), rtol=0, atol=0)
    assert not torch.equal(step(0), step(1))
    assert torch.equal(s.ddim_step(x, out, 500, 400), s.ddim_step(x, out, 500, 400))


# --- rectified flow ------------------------------------------------------------------------


def test_flow_interpolate_is_the_straight_path_and_its_velocity():
    x0, x1 = _randn(3, 2, 4, seed=1, dtype=torch.float64), _randn(3, 2, 4, seed=2,
                                                                    dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    xt, v = flow_interpolate(x0, x1, t)
    torch.testing.assert_close(xt[0], x0[0])
    torch.testing.assert_close(xt[2], x1[2])
    torch.testing.assert_close(xt[1], 0.7 * x0[1] + 0.3 * x1[1])
    torch.testing.assert_close(v, x1 - x0)
    h = 1e-6  # the target is the time derivative of the path
    torch.testing.assert_close((flow_interpolate(x0, x1, t + h)[0] - xt) / h, v, rtol=1e-6,
                               atol=1e-8)
    torch.testing.assert_close(flow_interpolate(x0, x1, 0.3)[0][1], xt[1])


def _cosmap_cdf(t):
    """P(T <= t) for T = 1 / (1 + tan(pi U / 2)), U ~ U(0, 1), worked out by hand:
    T <= t  <=>  tan(pi U / 2) >= 1/t - 1  <=>  U >= (2/pi) atan(1/t - 1)."""
    t = np.clip(t, 1e-12, 1.0)
    return 1 - 2 / np.pi * np.arctan(1 / t - 1)


@pytest.mark.parametrize("kind, cdf", [
    ("uniform", stats.uniform.cdf),
    ("logit_normal", lambda t: stats.norm.cdf(np.log(t) - np.log1p(-t))),
    ("cosmap", _cosmap_cdf),
])
def test_flow_times_follow_their_distribution(kind, cdf):
    gen = torch.Generator().manual_seed(0)
    t = flow_times(20_000, kind, generator=gen)
    assert t.shape == (20_000,) and t.dtype == torch.float32
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    assert stats.kstest(t.double().numpy(), cdf).pvalue > 1e-3
    # each is far from the others: the test tells the three apart
    for other, other_cdf in [("uniform", stats.uniform.cdf), ("cosmap", _cosmap_cdf)]:
        if other != kind:
            assert stats.kstest(t.double().numpy(), other_cdf).pvalue < 1e-6
    again = flow_times(20_000, kind, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def test_flow_times_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="logit_normal"):
        flow_times(4, "beta")


@pytest.mark.parametrize("n", [1, 3, 8, 28])
def test_euler_sample_matches_diffusers_flow_match_euler(n):
    """diffusers: x = (1 - sigma) data + sigma noise, sigma from 1 to 0, model output
    noise - data = -v at sigma = 1 - t; the same Euler updates step by step."""

    def velocity(x, t):  # a nonlinear, time-dependent field
        return torch.sin(x) - x * t.reshape(-1, 1, 1) + 0.5

    x_noise = _randn(2, 3, 5, seed=n)
    # 1) diffusers' own grid (sigma from 1 down to 1/T, then 0), shift = 1
    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=1.0)
    ref.set_timesteps(n)
    assert ref.sigmas.shape == (n + 1,) and ref.sigmas[-1] == 0
    x = x_noise
    for i, timestep in enumerate(ref.timesteps):
        sigma = ref.sigmas[i]
        x = ref.step(-velocity(x, (1 - sigma).expand(2)), timestep, x).prev_sample
    times = (1 - ref.sigmas.double()).tolist()
    torch.testing.assert_close(euler_sample(velocity, x_noise, n, times=times), x,
                               rtol=1e-5, atol=1e-5)
    # 2) the same evenly spaced sigmas as our default grid
    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=1.0)
    ref.set_timesteps(sigmas=torch.linspace(1, 0, n + 1)[:-1].tolist())
    torch.testing.assert_close(ref.sigmas, torch.linspace(1, 0, n + 1), rtol=0, atol=1e-6)
    x = x_noise
    for i, timestep in enumerate(ref.timesteps):
        x = ref.step(-velocity(x, (1 - ref.sigmas[i]).expand(2)), timestep, x).prev_sample
    torch.testing.assert_close(euler_sample(velocity, x_noise, n), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5, 50])
def test_euler_sample_on_linear_fields_has_the_closed_form(n):
    x0 = _randn(4, 3, seed=2, dtype=torch.float64)
    # dx/dt = a x: exact x0 e^a; Euler gives x0 (1 + a/n)^n, error O(1/n)
    a = -1.3
    got = euler_sample(lambda x, t: a * x, x0, n)
    torch.testing.assert_close(got, x0 * (1 + a / n) ** n, rtol=1e-12, atol=1e-12)
    err = (got - x0 * math.exp(a)).abs().max().item()
    assert err <= 2 * a * a / n * x0.abs().max().item()
    # dx/dt = 2 t c: exact x0 + c; left-point Euler sums 2 c h^2 (0 + 1 + .. + n-1) = c (n-1)/n,
    # which pins the time convention (t starts at 0, the last step is taken at t = 1 - 1/n)
    c = _randn(4, 3, seed=3, dtype=torch.float64)
    got = euler_sample(lambda x, t: 2 * t[:, None] * c, x0, n)
    torch.testing.assert_close(got, x0 + c * (n - 1) / n, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_straight_paths_are_integrated_exactly(n):
    x0, x1 = _randn(5, 4, seed=7, dtype=torch.float64), _randn(5, 4, seed=8, dtype=torch.float64)
    # the true velocity of the straight path: one step lands on the data
    torch.testing.assert_close(euler_sample(lambda x, t: x1 - x0, x0, 1), x1, rtol=0, atol=1e-14)
    # as a field of (x, t), (x1 - x) / (1 - t), which is x1 - x0 on the path: any step count
    got = euler_sample(lambda x, t: (x1 - x) / (1 - t[:, None]), x0, n)
    torch.testing.assert_close(got, x1, rtol=1e-12, atol=1e-12)
    # a path sampled by flow_interpolate moves along the same line
    xt, v = flow_interpolate(x0, x1, 0.25)
    torch.testing.assert_close(xt + 0.75 * v, x1)
