"""Inference samplers of box sets: DDIM for the DDPM objective, Euler for the flow objective,
each with DiffusionDet's box renewal between steps.

Both loops call ``denoise(x, t)``: ``x`` ``(B, N, 4)`` box signals (see
:mod:`~scaledet.models.diffusiondet.boxes`), ``t`` ``(B,)`` float noise times in
``[0, T]`` (DDPM timestep; for the flow ``(1 - s) T`` at path time ``s``). It returns the
prediction of that step: class probabilities ``(B, N, C)``, boxes ``(B, N, 4)`` xyxy pixels
and the clean signal ``x_0`` ``(B, N, 4)`` they imply. The loops return every step's
``(boxes, scores)``, for the ensemble over steps or for the last step alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scaledet.models.diffusiondet.boxes import renew_boxes
from scaledet.nn.diffusion import NoiseSchedule, ddim_timesteps

Denoise = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


def draw_noise(shape: tuple[int, ...], generator: torch.Generator | None,
               device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise drawn on the CPU (the same numbers on every device for a seeded
    ``generator``), moved to ``device``. In a traced graph (ONNX export) it is a constant:
    a generator cannot be exported."""
    z = torch.randn(shape, generator=generator)
    if torch.jit.is_tracing():
        z = torch.tensor(z.tolist())
    return z.to(device=device, dtype=dtype)


def _shared_noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Noise like ``x`` ``(B, N, 4)``, one draw shared by the ``B`` images (so an image's
    result does not depend on its place in the batch, and a traced graph fits any batch)."""
    return draw_noise((1, *x.shape[1:]), generator, x.device, x.dtype).expand_as(x)


def _renew(x: Tensor, scores: Tensor, threshold: float | None,
           generator: torch.Generator | None) -> Tensor:
    if threshold is None or threshold <= 0:
        return x
    return renew_boxes(x, scores, threshold, _shared_noise(x, generator))


def ddim_boxes(denoise: Denoise, schedule: NoiseSchedule, x: Tensor, steps: int,
               eta: float = 0.0, renewal_threshold: float | None = 0.5,
               generator: torch.Generator | None = None) -> list[tuple[Tensor, Tensor]]:
    """DDIM from ``x`` ``(B, N, 4)`` (pure noise, taken as ``x_{T-1}``) over ``steps`` evenly
    spaced timesteps to clean boxes. The head predicts ``x_0``; each step moves to the next
    timestep with :meth:`NoiseSchedule.ddim_step`, then renews the boxes whose score is at
    most ``renewal_threshold`` (None or 0: no renewal). Returns ``steps`` pairs
    ``(boxes (B, N, 4) xyxy px, scores (B, N, C))``."""
    timesteps = ddim_timesteps(schedule.num_steps, steps).tolist()
    outs = []
    for t, t_prev in zip(timesteps, [*timesteps[1:], -1]):
        scores, boxes, x0 = denoise(x, torch.full(x.shape[:1], float(t), device=x.device))
        outs.append((boxes, scores))
        if t_prev < 0:  # the last step's x_0 is the answer
            break
        z = _shared_noise(x, generator) if eta > 0 else None
        x = schedule.ddim_step(x, x0.to(x.dtype), t, t_prev, eta=eta, noise=z, prediction="x0")
        x = _renew(x, scores, renewal_threshold, generator)
    return outs


def euler_boxes(denoise: Denoise, num_train_steps: int, x: Tensor, steps: int,
                renewal_threshold: float | None = 0.5,
                generator: torch.Generator | None = None) -> list[tuple[Tensor, Tensor]]:
    """Euler steps along the straight path from noise ``x`` (path time ``s = 0``) to boxes
    (``s = 1``). The head predicts the end point ``x_1``; the velocity it implies at ``x_s`` is
    ``(x_1 - x_s) / (1 - s)`` (the path is straight), and each step is
    ``x += (s' - s) v``, followed by box renewal as in :func:`ddim_boxes`. Returns ``steps``
    pairs ``(boxes, scores)``."""
    grid = torch.linspace(0, 1, steps + 1, dtype=torch.float64).tolist()
    outs = []
    for s, s_next in zip(grid[:-1], grid[1:]):
        t = torch.full(x.shape[:1], (1 - s) * num_train_steps, device=x.device)
        scores, boxes, x1 = denoise(x, t)
        outs.append((boxes, scores))
        if s_next >= 1:  # the step to s = 1 lands on the prediction itself
            break
        velocity = (x1.to(x.dtype) - x) / (1 - s)
        x = _renew(x + (s_next - s) * velocity, scores, renewal_threshold, generator)
    return outs
