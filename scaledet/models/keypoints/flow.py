"""A small RealNVP normalizing flow (Dinh et al., "Density estimation using Real NVP", ICLR
2017) on low-dimensional points: the learned residual density of RLE (Li et al., ICCV 2021).

The flow is a stack of affine coupling layers with alternating masks. A layer keeps the masked
coordinates ``a`` and transforms the others ``b`` given ``a``::

    generative (base -> data):  b' = b * exp(s(a)) + t(a)
    inverse    (data -> base):  b  = (b' - t(a)) * exp(-s(a))

Its Jacobian is triangular, so ``log |det|`` is exactly ``sum s(a)`` (``-sum s(a)`` inverse).
``s`` and ``t`` are MLPs; ``s`` ends in ``tanh``, so each layer scales by at most ``e`` either
way (bounded scales keep training stable, as in the RLE code). The base is a standard normal:
``log p(x) = log N(f^{-1}(x); 0, I) + log |det d f^{-1} / dx|``.

With ``zero_init`` (the default) the last linear layer of every ``s`` and ``t`` net starts at
zero: each coupling is then the identity and the flow *is* a standard normal until it trains,
which makes RLE's loss start from its closed form (the gradient still reaches those layers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _mlp(dim: int, hidden: int, zero_init: bool) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden),
                        nn.LeakyReLU(), nn.Linear(hidden, dim))
    if zero_init:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


class AffineCoupling(nn.Module):
    """One coupling layer: ``mask`` (``(D,)`` of 0/1) marks the coordinates passed through
    unchanged, which condition the affine map of the others (see the module docstring)."""

    def __init__(self, mask: Tensor, hidden: int, zero_init: bool = True) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.scale_net = _mlp(mask.numel(), hidden, zero_init)
        self.shift_net = _mlp(mask.numel(), hidden, zero_init)

    def _scale_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        free = 1 - self.mask
        return torch.tanh(self.scale_net(kept)) * free, self.shift_net(kept) * free

    def to_base(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse map ``(M, D) -> (M, D)`` and its ``log |det|`` ``(M,)``."""
        kept = x * self.mask
        s, t = self._scale_shift(kept)
        return kept + (1 - self.mask) * (x - t) * torch.exp(-s), -s.sum(-1)

    def from_base(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Generative map ``(M, D) -> (M, D)`` and its ``log |det|`` ``(M,)``."""
        kept = z * self.mask
        s, t = self._scale_shift(kept)
        return kept + (1 - self.mask) * (z * torch.exp(s) + t), s.sum(-1)


class RealNVP(nn.Module):
    """RealNVP density on ``dim``-D points (2 for RLE's per-joint residuals).

    Args:
        dim: point dimension (>= 2).
        num_layers: coupling layers; the masks alternate between the even and the odd
            coordinates (``[0, 1]`` / ``[1, 0]`` in 2-D), so every coordinate is transformed by
            half of them. RLE uses 6.
        hidden: width of the two hidden layers of each ``s`` and ``t`` MLP (RLE: 64).
        zero_init: start as the identity (a standard normal density).

    ``log_prob(x)``: ``(..., dim) -> (...)``; ``forward`` is ``log_prob``. The flow holds no
    state besides its weights and is used only by the training loss, never at inference.
    """

    def __init__(self, dim: int = 2, num_layers: int = 6, hidden: int = 64,
                 zero_init: bool = True) -> None:
        super().__init__()
        if dim < 2 or num_layers < 1:
            raise ValueError(f"need dim >= 2 and num_layers >= 1, got {dim} and {num_layers}")
        self.dim = dim
        even = (torch.arange(dim) % 2 == 0).float()
        self.layers = nn.ModuleList(AffineCoupling(even if i % 2 else 1 - even, hidden, zero_init)
                                    for i in range(num_layers))

    def to_base(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data -> base: ``(M, dim)`` points to latents ``z (M, dim)`` and the exact
        ``log |det dz/dx|`` ``(M,)``."""
        log_det = x.new_zeros(x.shape[0])
        for layer in reversed(self.layers):
            x, ld = layer.to_base(x)
            log_det = log_det + ld
        return x, log_det

    def from_base(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Base -> data: ``(M, dim)`` latents to points and ``log |det dx/dz|`` ``(M,)``."""
        log_det = z.new_zeros(z.shape[0])
        for layer in self.layers:
            z, ld = layer.from_base(z)
            log_det = log_det + ld
        return z, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density ``(..., dim) -> (...)`` (natural log, per unit of ``x``)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected (..., {self.dim}) points, got {tuple(x.shape)}")
        z, log_det = self.to_base(x.reshape(-1, self.dim))
        base = -0.5 * z.pow(2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return (base + log_det).reshape(x.shape[:-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, dim)`` samples (for plots and checks)."""
        p = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, dtype=p.dtype).to(p.device)
        return self.from_base(z)[0]
