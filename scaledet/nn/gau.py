"""Gated Attention Unit, GAU (Hua et al. 2022, "Transformer Quality in Linear Time", FLASH).

GAU merges attention and the feed-forward block into one gated unit:

    u = silu(x W_u),  v = silu(x W_v)                  (B, N, e), e = expansion * dim
    z = silu(x W_z)                                    (B, N, s), s = qk_dim
    q = z * gamma_q + beta_q,  k = z * gamma_k + beta_k  (cheap per-dim scale and offset)
    A = relu(q k^T / sqrt(s))^2 / n                    (B, N, N), squared-ReLU attention
    out = (u * (A v)) W_o                              (B, N, dim)

A single head of small size ``s`` suffices because the gate ``u`` carries the expressiveness.
``n`` is the number of keys a query may see: the valid (unpadded) keys, and under ``causal``
only those at or before the query, so each row is normalised by its own count. Padded keys and
future keys get weight 0; a query that sees no key gets ``u * 0``, so output 0.

Normalisation and residual are the caller's: use it as ``x = x + gau(norm(x))`` (pre-norm).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.nn.rope import RotaryEmbedding1D, apply_rope


class GAU(nn.Module):
    """Gated Attention Unit over ``(B, N, dim)`` sequences.

    Args:
        dim: model width.
        expansion: ``e = expansion * dim`` is the width of ``u`` and ``v``.
        qk_dim: ``s``, the shared width of the queries and keys.
        causal: token ``i`` only attends to tokens ``j <= i``.
        use_rope: 1-D rotary embedding of the token index on q and k (needs an even qk_dim).
    """

    def __init__(self, dim: int, *, expansion: int = 2, qk_dim: int = 128, causal: bool = False,
                 use_rope: bool = False) -> None:
        super().__init__()
        if dim <= 0 or expansion <= 0 or qk_dim <= 0:
            raise ValueError(f"dim, expansion and qk_dim must be positive, got "
                             f"{dim}, {expansion}, {qk_dim}")
        self.dim = dim
        self.hidden = expansion * dim
        self.qk_dim = qk_dim
        self.causal = causal
        self.proj_in = nn.Linear(dim, 2 * self.hidden + qk_dim)  # [W_u | W_v | W_z]
        self.gamma = nn.Parameter(torch.empty(2, qk_dim))  # rows: q, k
        self.beta = nn.Parameter(torch.zeros(2, qk_dim))
        self.proj_out = nn.Linear(self.hidden, dim)
        self.rope = RotaryEmbedding1D(qk_dim) if use_rope else None
        nn.init.normal_(self.gamma, std=0.02)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x`` ``(B, N, dim)``, ``key_padding_mask`` ``(B, N)`` bool (True = ignore that key)
        -> ``(B, N, dim)``."""
        n = x.shape[1]
        u, v, z = F.silu(self.proj_in(x)).split([self.hidden, self.hidden, self.qk_dim], dim=-1)
        q = z * self.gamma[0] + self.beta[0]  # (B, N, s)
        k = z * self.gamma[1] + self.beta[1]  # (B, N, s)
        if self.rope is not None:
            cos, sin = self.rope(torch.arange(n, device=x.device))
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.qk_dim)  # (B, N, N)
        allowed = torch.ones(n, n, dtype=torch.bool, device=x.device)
        if self.causal:
            allowed = allowed.tril()
        allowed = allowed.expand(x.shape[0], n, n)  # (B, N, N)
        if key_padding_mask is not None:
            allowed = allowed & ~key_padding_mask[:, None, :]
        count = allowed.sum(-1, keepdim=True).clamp_min(1).to(scores.dtype)  # (B, N, 1)
        attn = F.relu(scores).square().masked_fill(~allowed, 0.0) / count
        return self.proj_out(u * torch.matmul(attn, v))
