"""Noise schedules and samplers for generative denoising: DDPM, DDIM and rectified flow.

Nothing here knows about boxes: ``x`` is any tensor (images ``(B, C, H, W)``, box sets
``(B, N, 4)``, ...) and a timestep ``t`` is an int or a tensor whose shape is a prefix of
``x``'s shape (usually ``(B,)``: one timestep per sample; ``(B, N)`` gives one per box). The
coefficients are taken in float64 and cast to ``x``'s dtype just before they multiply ``x``.

**DDPM** (Ho et al. 2020). Discrete steps ``t = 0 .. T-1`` with noise levels ``beta_t``;
``alpha_t = 1 - beta_t`` and ``abar_t = prod_{s <= t} alpha_s``. The forward process has the
closed form ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``, so training draws any
``t`` directly (:meth:`NoiseSchedule.q_sample`). Schedules: ``"linear"`` betas from
``beta_start`` to ``beta_end`` (Ho et al.; diffusers' ``beta_schedule="linear"``), and
``"cosine"`` (Nichol & Dhariwal 2021; diffusers' ``"squaredcos_cap_v2"``):
``f(u) = cos^2(pi/2 (u + s) / (1 + s))``, ``s = 0.008``,
``beta_t = min(1 - f((t+1)/T) / f(t/T), 0.999)``, so that ``abar_t = f((t+1)/T) / f(0)`` except
at the last few steps, where the clip at 0.999 keeps ``beta`` below 1.

**DDIM** (Song et al. 2021). With ``x_0`` and ``eps`` predicted at ``t`` (from one another:
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``), the step to any earlier ``t_prev`` is

    x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
    sigma  = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev),

so sampling may skip steps (:func:`ddim_timesteps`). ``eta = 0`` is deterministic (the
probability-flow ODE discretised); ``eta = 1`` with ``t_prev = t - 1`` is the DDPM ancestral
step, its variance the DDPM posterior variance :attr:`NoiseSchedule.posterior_variance`.
``t_prev = -1`` means ``abar_prev = 1`` (clean data: diffusers' ``set_alpha_to_one=True``).

**Rectified flow / flow matching** (Liu et al. 2022, Lipman et al. 2022). A straight path from
noise ``x_0`` at ``t = 0`` to data ``x_1`` at ``t = 1``: ``x_t = (1 - t) x_0 + t x_1`` with the
constant velocity ``x_1 - x_0`` as the regression target (:func:`flow_interpolate`) at
training times drawn by :func:`flow_times`; sampling integrates ``dx/dt = v(x, t)`` from
``t = 0`` (noise) to ``t = 1`` (data) with Euler steps
(:func:`euler_sample`). Time convention vs diffusers' ``FlowMatchEulerDiscreteScheduler``: it
writes ``x = (1 - sigma) data + sigma noise`` and steps ``sigma`` from 1 down to 0, so
``t = 1 - sigma``, and its model output is ``noise - data = -v``; one Euler step is the same
update in both conventions (``x + (sigma_next - sigma) (-v) = x + (t_next - t) v``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

ScheduleKind = Literal["linear", "cosine"]
Prediction = Literal["eps", "x0"]
Spacing = Literal["trailing", "leading"]

COSINE_OFFSET = 0.008  # s of Nichol & Dhariwal: keeps beta_0 from being vanishingly small
MAX_BETA = 0.999  # their clip: beta_t = 1 at t = T - 1 would make abar_{T-1} exactly 0


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> Tensor:
    """Betas evenly spaced from ``beta_start`` to ``beta_end``, shape ``(num_steps,)``, float64."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, s: float = COSINE_OFFSET, max_beta: float = MAX_BETA) -> Tensor:
    """Betas of the cosine schedule, ``min(1 - f((t+1)/T) / f(t/T), max_beta)``, ``(T,)`` float64.

    ``f(u) = cos^2(pi/2 (u + s) / (1 + s))``: ``abar`` falls slowly at both ends and nearly
    linearly in between, where the linear schedule destroys the signal too early.
    """
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def ddim_timesteps(
    num_train_steps: int, num_inference_steps: int, spacing: Spacing = "trailing"
) -> Tensor:
    """The evenly spaced subsequence of training steps a DDIM sampler visits, in the order used.

    Returns a descending int64 tensor of ``num_inference_steps`` timesteps; each step goes to the
    next one and the last to ``t_prev = -1`` (clean data). Both spacings equal diffusers'
    ``DDIMScheduler.set_timesteps`` with ``steps_offset=0`` and the same ``timestep_spacing``:

    - ``"trailing"`` (default): ``round(T - i T / n) - 1`` for ``i = 0 .. n-1``, e.g.
      ``999, 749, 499, 249`` for ``T = 1000, n = 4``. The first step starts at ``T - 1``, the noise
      level training ends at, so that a sampler started from pure noise is right at any ``n``
      (even one step). DiffusionDet's ``linspace(-1, T - 1, n + 1)`` is the same up to rounding.
    - ``"leading"`` (diffusers' default): ``i * (T // n)`` for ``i = n-1 .. 0``, e.g.
      ``750, 500, 250, 0``. It never visits ``T - 1`` (at ``n = 1`` it is the single step 0), so
      with few steps a sampler started from pure noise skips the noisiest part of the schedule.
    """
    if not 1 <= num_inference_steps <= num_train_steps:
        raise ValueError(f"num_inference_steps must be in [1, {num_train_steps}], "
                         f"got {num_inference_steps}")
    n, big_t = num_inference_steps, num_train_steps
    i = torch.arange(n, dtype=torch.float64)
    if spacing == "trailing":
        return (torch.round(big_t - i * (big_t / n)) - 1).to(torch.int64)
    if spacing == "leading":
        return (i * (big_t // n)).flip(0).to(torch.int64)
    raise ValueError(f"spacing must be 'trailing' or 'leading', got {spacing!r}")


def _timesteps(t: int | Tensor, device: torch.device) -> Tensor:
    """``t`` as an int64 tensor on ``device`` (a 0-d tensor for an int)."""
    if isinstance(t, Tensor):
        if t.is_floating_point():
            raise TypeError("DDPM/DDIM timesteps are integers; got a floating-point tensor")
        return t.to(device=device, dtype=torch.int64)
    return torch.tensor(int(t), dtype=torch.int64, device=device)


def _expand(coef: Tensor, x: Tensor) -> Tensor:
    """Reshape per-timestep coefficients ``(*P)`` to ``(*P, 1, ..., 1)`` so they broadcast
    against ``x`` of shape ``(*P, ...)``; a 0-d coefficient is returned as is."""
    if coef.ndim == 0:
        return coef
    if coef.ndim > x.ndim or any(a not in (1, b) for a, b in zip(coef.shape, x.shape)):
        raise ValueError(f"timesteps of shape {tuple(coef.shape)} are not a prefix of the "
                         f"sample's shape {tuple(x.shape)}")
    return coef.reshape(*coef.shape, *([1] * (x.ndim - coef.ndim)))


def _checkable(t: Tensor) -> bool:
    """Range checks read values back; do so only where that is free and traceable."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
    return t.device.type == "cpu" and not torch.jit.is_tracing() and not compiling()


class NoiseSchedule:
    """The DDPM noise schedule with its forward process and the DDIM update.

    Args:
        num_steps: ``T``, the number of training timesteps ``0 .. T-1``.
        kind: ``"linear"`` (betas from ``beta_start`` to ``beta_end``) or ``"cosine"``
            (Nichol & Dhariwal; ``beta_start`` and ``beta_end`` unused).

    Attributes (float64, ``(T,)``, on the CPU; copies on other devices are cached on use):
        betas: ``beta_t``.
        alphas: ``1 - beta_t``.
        alphas_cumprod: ``abar_t = prod_{s <= t} (1 - beta_s)``.
        posterior_variance: ``beta_t (1 - abar_{t-1}) / (1 - abar_t)`` with ``abar_{-1} = 1``,
            the variance of the DDPM posterior ``q(x_{t-1} | x_t, x_0)`` (0 at ``t = 0``).

    A plain object, not a module: it holds no weights, adds nothing to a ``state_dict``, and a
    model's ``.half()`` cannot round its tables.
    """

    def __init__(
        self,
        num_steps: int = 1000,
        kind: ScheduleKind = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
    ) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {num_steps}")
        if kind == "linear":
            if not 0 < beta_start <= beta_end < 1:
                raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, "
                                 f"{beta_end}")
            betas = linear_betas(num_steps, beta_start, beta_end)
        elif kind == "cosine":
            betas = cosine_betas(num_steps)
        else:
            raise ValueError(f"kind must be 'linear' or 'cosine', got {kind!r}")
        self.num_steps = num_steps
        self.kind = kind
        self.betas = betas
        self.alphas = 1 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        abar_prev = torch.cat((torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]))
        self.posterior_variance = betas * (1 - abar_prev) / (1 - self.alphas_cumprod)
        # abar with abar_{-1} = 1 in front: index t + 1 serves t = -1 .. T-1 without a branch
        self._abar_ext = abar_prev.new_ones(num_steps + 1)
        self._abar_ext[1:] = self.alphas_cumprod
        self._on_device: dict[torch.device, Tensor] = {}

    def __repr__(self) -> str:
        return f"NoiseSchedule(num_steps={self.num_steps}, kind={self.kind!r})"

    def alpha_bar(self, t: int | Tensor, device: torch.device | str | None = None) -> Tensor:
        """``abar_t`` in float64 for ``t`` in ``-1 .. T-1`` (``abar_{-1} = 1``), shape of ``t``.

        On ``device`` if given, else on ``t``'s device (the CPU for an int).
        """
        if device is None:
            device = t.device if isinstance(t, Tensor) else torch.device("cpu")
        device = torch.device(device)
        t = _timesteps(t, device)
        if _checkable(t) and t.numel() and (t.min() < -1 or t.max() >= self.num_steps):
            raise ValueError(f"timesteps must be in [-1, {self.num_steps - 1}], got "
                             f"{t.min().item()} .. {t.max().item()}")
        if device not in self._on_device:
            self._on_device[device] = self._abar_ext.to(device)
        return self._on_device[device][t + 1]

    def _abar(self, t: int | Tensor, x: Tensor) -> Tensor:
        """``abar_t`` on ``x``'s device, shaped to broadcast against ``x``."""
        return _expand(self.alpha_bar(t, x.device), x)

    def q_sample(self, x0: Tensor, t: int | Tensor, noise: Tensor | None = None) -> Tensor:
        """Draw ``x_t ~ q(x_t | x_0)``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``.

        Args:
            x0: clean samples ``(B, ...)``.
            t: timesteps in ``0 .. T-1``: an int, or a tensor whose shape is a prefix of
                ``x0.shape`` (usually ``(B,)``).
            noise: standard normal ``eps`` of ``x0``'s shape; drawn with ``randn_like`` if None
                (pass it when the loss needs it, i.e. an ``eps``-predicting model).

        Returns:
            ``x_t``, shape and dtype of ``x0``.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        abar = self._abar(t, x0)
        return abar.sqrt().to(x0.dtype) * x0 + (1 - abar).sqrt().to(x0.dtype) * noise

    def predict_x0(self, x_t: Tensor, eps: Tensor, t: int | Tensor) -> Tensor:
        """``x_0`` implied by ``x_t`` and a noise prediction.

        ``(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``, shape of ``x_t``.
        """
        abar = self._abar(t, x_t)
        return (x_t - (1 - abar).sqrt().to(x_t.dtype) * eps) / abar.sqrt().to(x_t.dtype)

    def predict_eps(self, x_t: Tensor, x0: Tensor, t: int | Tensor) -> Tensor:
        """Noise implied by ``x_t`` and an ``x_0`` prediction.

        ``(x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``, shape of ``x_t``.
        """
        abar = self._abar(t, x_t)
        return (x_t - abar.sqrt().to(x_t.dtype) * x0) / (1 - abar).sqrt().to(x_t.dtype)

    def ddim_sigma(self, t: int | Tensor, t_prev: int | Tensor, eta: float = 1.0) -> Tensor:
        """DDIM's noise scale ``eta sqrt((1-abar_prev)/(1-abar_t)) sqrt(1 - abar_t/abar_prev)``.

        float64 on ``t``'s device, broadcast shape of ``t`` and ``t_prev``. ``sigma^2`` at
        ``eta = 1``, ``t_prev = t - 1`` is :attr:`posterior_variance` ``[t]``.
        """
        device = t.device if isinstance(t, Tensor) else None
        a_t, a_prev = self.alpha_bar(t, device), self.alpha_bar(t_prev, device)
        if _checkable(a_t) and bool((_timesteps(t_prev, a_t.device)
                                     >= _timesteps(t, a_t.device)).any()):
            raise ValueError("DDIM steps go back in time: need t_prev < t")
        var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        return eta * var.clamp(min=0).sqrt()

    def ddim_step(
        self,
        x_t: Tensor,
        model_output: Tensor,
        t: int | Tensor,
        t_prev: int | Tensor,
        eta: float = 0.0,
        noise: Tensor | None = None,
        prediction: Prediction = "eps",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One DDIM update from ``t`` to any earlier ``t_prev`` (``-1``: to clean data).

        Args:
            x_t: current samples ``(B, ...)``.
            model_output: the model's prediction at ``t``, shape of ``x_t``: the noise ``eps``
                (``prediction="eps"``) or the clean sample (``prediction="x0"``, as DiffusionDet).
            t, t_prev: timesteps, ints or tensors whose shape is a prefix of ``x_t.shape``;
                ``-1 <= t_prev < t <= T-1``.
            eta: 0 (deterministic DDIM) .. 1 (DDPM-like ancestral noise).
            noise: the standard normal ``z`` added as ``sigma z`` when ``eta > 0``; drawn with
                ``generator`` if None.

        Returns:
            ``x_{t_prev}``, shape and dtype of ``x_t``. The ``x_0`` used is
            :meth:`predict_x0` of an ``eps`` prediction (the ``x0`` one as given).
        """
        a_t, a_prev = self._abar(t, x_t), self._abar(t_prev, x_t)
        dtype = x_t.dtype
        if prediction == "eps":
            eps = model_output
            x0 = (x_t - (1 - a_t).sqrt().to(dtype) * eps) / a_t.sqrt().to(dtype)
        elif prediction == "x0":
            x0 = model_output
            eps = (x_t - a_t.sqrt().to(dtype) * x0) / (1 - a_t).sqrt().to(dtype)
        else:
            raise ValueError(f"prediction must be 'eps' or 'x0', got {prediction!r}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        sigma = _expand(self.ddim_sigma(_timesteps(t, x_t.device), t_prev, eta), x_t)
        direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        x_prev = a_prev.sqrt().to(dtype) * x0 + direction.to(dtype) * eps
        if eta > 0:
            if noise is None:
                noise = torch.randn(x_t.shape, generator=generator, device=x_t.device,
                                    dtype=dtype)
            x_prev = x_prev + sigma.to(dtype) * noise
        return x_prev

    def ddim_sample(
        self,
        model_fn: Callable[[Tensor, Tensor], Tensor],
        x_noise: Tensor,
        num_inference_steps: int,
        eta: float = 0.0,
        prediction: Prediction = "eps",
        spacing: Spacing = "trailing",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run DDIM from ``x_noise`` (as ``x_{t_0}``) over :func:`ddim_timesteps` to ``t = -1``.

        ``model_fn(x_t, t)`` gets ``t`` as an int64 ``(B,)`` tensor on ``x``'s device and returns
        an ``eps`` or ``x0`` prediction of ``x_t``'s shape. Returns the final sample. Samplers
        that act between steps (DiffusionDet's box renewal) loop over :meth:`ddim_step` instead.
        """
        steps = ddim_timesteps(self.num_steps, num_inference_steps, spacing).tolist()
        x = x_noise
        for t, t_prev in zip(steps, [*steps[1:], -1]):
            tt = torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device)
            out = model_fn(x, tt)
            x = self.ddim_step(x, out, t, t_prev, eta=eta, prediction=prediction,
                               generator=generator)
        return x


def flow_interpolate(
    x0_noise: Tensor, x1_data: Tensor, t: float | Tensor
) -> tuple[Tensor, Tensor]:
    """A point on the straight path from noise to data and the velocity target there.

    Args:
        x0_noise: noise ``(B, ...)`` (``t = 0``).
        x1_data: data, same shape (``t = 1``).
        t: time in ``[0, 1]``: a float or a tensor whose shape is a prefix of the samples' shape
            (usually ``(B,)``, drawn uniformly or from a logit-normal during training).

    Returns:
        ``x_t = (1 - t) x0 + t x1`` and the target velocity ``dx_t/dt = x1 - x0``, each of the
        samples' shape; a flow-matching loss is ``|| v(x_t, t) - (x1 - x0) ||^2``.
    """
    if isinstance(t, Tensor):
        t = _expand(t.to(device=x1_data.device, dtype=x1_data.dtype), x1_data)
    return (1 - t) * x0_noise + t * x1_data, x1_data - x0_noise


FLOW_TIMES = ("uniform", "logit_normal", "cosmap")


def flow_times(n: int, kind: str = "uniform", *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
    """``n`` training times ``t`` in ``[0, 1]`` for :func:`flow_interpolate`, float32 ``(n,)``.

    - ``"uniform"``: ``t ~ U(0, 1)`` (Liu et al.; Lipman et al.).
    - ``"logit_normal"``: ``logit(t) ~ N(0, 1)`` (Esser et al. 2024, SD3): more of the training
      at mid-path times, where the prediction is hardest, less near the ends.
    - ``"cosmap"``: the times at which the straight path has the signal-to-noise ratio of the
      cosine DDPM schedule at a uniform step, ``t = 1 / (1 + tan(pi u / 2))``, ``u ~ U(0, 1)``
      (SD3's "CosMap"): the flow trained on the DDPM objective's mix of noise levels.
    """
    if kind not in FLOW_TIMES:
        raise ValueError(f"flow time sampling must be one of {FLOW_TIMES}, got {kind!r}")
    if kind == "logit_normal":
        t = torch.sigmoid(torch.randn(n, generator=generator))
    else:
        t = torch.rand(n, generator=generator)
        if kind == "cosmap":
            t = 1 / (1 + torch.tan(0.5 * math.pi * t))
    return t.to(device)


def euler_sample(
    velocity_fn: Callable[[Tensor, Tensor], Tensor],
    x_noise: Tensor,
    num_steps: int,
    times: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Integrate ``dx/dt = velocity_fn(x, t)`` with Euler steps from ``t = 0`` (noise) to 1.

    Args:
        velocity_fn: ``v(x, t)`` with ``t`` a ``(B,)`` tensor of ``x``'s dtype and device,
            returning a tensor of ``x``'s shape (a model trained on :func:`flow_interpolate`).
        x_noise: the start ``x`` at ``t = 0``, ``(B, ...)``.
        num_steps: number of Euler steps (model calls).
        times: optional increasing grid of ``num_steps + 1`` times from 0 to 1 (default evenly
            spaced); diffusers' ``FlowMatchEulerDiscreteScheduler`` grid is ``1 - sigmas``.

    Returns:
        ``x`` at ``t = 1``. Each step is ``x += (t_{k+1} - t_k) v(x, t_k)``: exact in one step when
        the paths are straight and ``v`` is their velocity, which is why flows need few steps.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    grid = (torch.linspace(0, 1, num_steps + 1, dtype=torch.float64) if times is None
            else torch.as_tensor(times, dtype=torch.float64).detach().cpu())
    if grid.shape != (num_steps + 1,) or bool((grid[1:] <= grid[:-1]).any()):
        raise ValueError(f"times must be {num_steps + 1} increasing values, got {grid.tolist()}")
    grid = grid.tolist()
    x = x_noise
    for t, t_next in zip(grid[:-1], grid[1:]):
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        x = x + (t_next - t) * velocity_fn(x, tt)
    return x
