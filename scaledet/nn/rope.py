"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer").

RoPE rotates pairs of channels of a query or key by an angle proportional to the token's
position, ``angle = position * base^(-2i / head_dim)`` for pair ``i``. A rotation by ``m``
on the query and by ``n`` on the key leaves ``q . k`` depending only on ``m - n``: attention
sees relative positions without any learned table, and the rotation keeps norms.

Pairing convention: "rotate half" (as in GPT-NeoX). Channel ``i`` is paired with channel
``i + head_dim / 2``; ``cos`` and ``sin`` carry each pair's angle twice, ``[a_0 .. a_{h-1},
a_0 .. a_{h-1}]`` with ``h = head_dim / 2``. Weights trained with the interleaved convention
(pairs ``(2i, 2i + 1)``) need their q/k projection rows permuted to be used here.

The 2-D (axial) form for an ``H x W`` feature map spends half of the pairs on the column (x)
and half on the row (y): the first ``head_dim / 4`` pairs rotate by x, the rest by y, each half
with the frequencies of a 1-D RoPE of size ``head_dim / 2``. The score then depends only on
``(row_q - row_k, col_q - col_k)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _inverse_frequencies(pairs: int, base: float) -> Tensor:
    """``base^(-j / pairs)`` for ``j = 0 .. pairs-1``, shape ``(pairs,)``, float32."""
    return base ** (-torch.arange(pairs, dtype=torch.float32) / pairs)


def _cos_sin(angles: Tensor) -> tuple[Tensor, Tensor]:
    """Angles ``(..., head_dim/2)`` -> ``cos, sin`` of ``(..., head_dim)`` (each angle twice)."""
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()


def _rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension: the 90-degree turn of every pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the channel pairs ``(i, i + head_dim/2)`` of ``x`` by the angles in cos/sin.

    Args:
        x: ``(..., N, head_dim)`` queries or keys, e.g. ``(B, heads, N, head_dim)``.
        cos, sin: ``(N, head_dim)`` from :class:`RotaryEmbedding1D` / :class:`RotaryEmbedding2D`,
            or any shape that broadcasts against ``x``.

    Returns:
        The rotated tensor, same shape and dtype as ``x``.
    """
    if x.shape[-1] % 2:
        raise ValueError(f"apply_rope needs an even last dimension (head_dim), got {x.shape[-1]}")
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + _rotate_half(x) * sin


class RotaryEmbedding1D(nn.Module):
    """cos/sin tables of 1-D RoPE for arbitrary (also fractional) positions.

    Args:
        head_dim: channels per head, even.
        base: the wavelength base; pair ``i`` turns by ``base^(-2i/head_dim)`` per position.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"RotaryEmbedding1D needs a positive even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        self.register_buffer("inv_freq", _inverse_frequencies(head_dim // 2, base),
                             persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Positions ``(N,)`` (or ``(..., N)``) -> ``cos, sin`` of ``(N, head_dim)``
        (``(..., N, head_dim)``), float32 on the device of ``positions``."""
        inv_freq = self.inv_freq.to(positions.device)
        angles = positions.to(torch.float32)[..., None] * inv_freq  # (..., N, head_dim/2)
        return _cos_sin(angles)


class RotaryEmbedding2D(nn.Module):
    """cos/sin tables of axial 2-D RoPE for the tokens of an ``H x W`` map, row-major.

    Args:
        head_dim: channels per head, divisible by 4 (two axes, each made of pairs).
        base: the wavelength base of each axis.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 4:
            raise ValueError(
                f"RotaryEmbedding2D needs a positive head_dim divisible by 4 (half of the pairs "
                f"per axis), got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        self.register_buffer("inv_freq", _inverse_frequencies(head_dim // 4, base),
                             persistent=False)

    def forward(self, height: int, width: int,
                device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """``cos, sin`` of ``(height * width, head_dim)``, float32; token ``r * width + c``
        is at row ``r``, column ``c``."""
        inv_freq = self.inv_freq.to(device) if device is not None else self.inv_freq
        rows = torch.arange(height, device=inv_freq.device, dtype=torch.float32)
        cols = torch.arange(width, device=inv_freq.device, dtype=torch.float32)
        y, x = torch.meshgrid(rows, cols, indexing="ij")
        x, y = x.reshape(-1, 1), y.reshape(-1, 1)  # (H*W, 1)
        angles = torch.cat((x * inv_freq, y * inv_freq), dim=-1)  # (H*W, head_dim/2)
        return _cos_sin(angles)
