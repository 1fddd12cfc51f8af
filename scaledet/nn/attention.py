"""Multi-head scaled dot-product attention (Vaswani et al. 2017) on PyTorch's SDPA kernel.

``softmax(Q K^T / sqrt(head_dim) + mask) V`` per head, with separate q/k/v/out projections
(so query, key and value may come from different sequences), optional RoPE on q and k, and
one mask built from a key-padding mask, an attention mask and a causal flag.

Mask conventions (those of ``torch.nn.MultiheadAttention``):

- ``key_padding_mask`` ``(B, Nk)`` bool, True = padded key, never attended.
- ``attn_mask`` bool ``(Nq, Nk)``, ``(B, Nq, Nk)`` or ``(B, heads, Nq, Nk)``, True = NOT allowed;
  or a float mask of the same shapes that is added to the logits (``-inf`` forbids).
- ``causal=True``: query ``i`` sees keys ``j <= i`` (aligned at the first token).

A query that may attend no key at all (every key masked, e.g. a padded query under a causal
mask on a padded batch) has no softmax: its attention output is defined as zero, and so is the
module's output row (``out_proj`` bias not added), instead of the NaN that ``0/0`` would give.
Per-head masks that leave a row empty in some heads only zero those heads' contributions.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.nn.rope import apply_rope


def _as_4d(mask: Tensor, name: str) -> Tensor:
    """``(Nq, Nk)`` / ``(B, Nq, Nk)`` / ``(B, heads, Nq, Nk)`` -> broadcastable 4-D."""
    if mask.dim() == 2:
        return mask[None, None]
    if mask.dim() == 3:
        return mask[:, None]
    if mask.dim() == 4:
        return mask
    raise ValueError(f"{name} must be 2-D, 3-D or 4-D, got shape {tuple(mask.shape)}")


def _rope_4d(t: Tensor) -> Tensor:
    """RoPE tables ``(N, d)`` broadcast as they are; ``(B, N, d)`` gets a heads axis."""
    return t[:, None] if t.dim() == 3 else t


class MultiheadAttention(nn.Module):
    """Multi-head attention with separate projections, RoPE hooks and combined masks.

    Args:
        dim: model width C, divisible by ``num_heads``.
        num_heads: number of heads; ``head_dim = dim // num_heads``.
        dropout: dropout on the attention weights, active only in training.
        bias: biases in the four projections.

    Projections are xavier-uniform with zero biases: for unit-variance inputs of width C,
    ``Var(W) = 2 / (C + C) = 1 / C`` gives unit-variance q and k entries, and with the
    ``1/sqrt(head_dim)`` scale the logits start with about unit variance.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        if dim <= 0 or num_heads <= 0 or dim % num_heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        """``(B, N, C)`` -> ``(B, heads, N, head_dim)``."""
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _mask(self, nq: int, nk: int, device: torch.device, dtype: torch.dtype,
              key_padding_mask: Tensor | None, attn_mask: Tensor | None,
              causal: bool) -> Tensor | None:
        """One mask for SDPA: bool ``allowed`` or an additive float mask, 4-D broadcastable to
        ``(B, heads, Nq, Nk)``; None when nothing is masked."""
        blocked = None  # bool, True = not allowed
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool:
                raise TypeError("key_padding_mask must be bool (True = padded key)")
            blocked = key_padding_mask[:, None, None, :]  # (B, 1, 1, Nk)
        additive = None
        if attn_mask is not None:
            m = _as_4d(attn_mask.to(device), "attn_mask")
            if m.dtype == torch.bool:
                blocked = m if blocked is None else blocked | m
            else:
                additive = m.to(dtype)
        if causal:
            future = torch.ones(nq, nk, dtype=torch.bool, device=device).triu(1)[None, None]
            blocked = future if blocked is None else blocked | future
        if additive is None:
            return None if blocked is None else ~blocked
        if blocked is not None:
            additive = additive.masked_fill(blocked, float("-inf"))
        return additive

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                causal: bool = False, rope_q: tuple[Tensor, Tensor] | None = None,
                rope_k: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Attend from ``query`` ``(B, Nq, C)`` to ``key``/``value`` ``(B, Nk, C)``.

        ``key`` defaults to ``query`` and ``value`` to ``key``. ``rope_q``/``rope_k`` are
        ``(cos, sin)`` tables of shape ``(Nq, head_dim)`` / ``(Nk, head_dim)`` (or with a
        leading batch axis), applied to every head after projection. Returns ``(B, Nq, C)``.
        """
        key = query if key is None else key
        value = key if value is None else value
        q = self._heads(self.q_proj(query))  # (B, H, Nq, d)
        k = self._heads(self.k_proj(key))  # (B, H, Nk, d)
        v = self._heads(self.v_proj(value))  # (B, H, Nk, d)
        if rope_q is not None:
            q = apply_rope(q, _rope_4d(rope_q[0]), _rope_4d(rope_q[1]))
        if rope_k is not None:
            k = apply_rope(k, _rope_4d(rope_k[0]), _rope_4d(rope_k[1]))
        nq, nk = q.shape[-2], k.shape[-2]
        mask = self._mask(nq, nk, q.device, q.dtype, key_padding_mask, attn_mask, causal)

        empty = None  # (B|1, H|1, Nq) True where a query row may attend no key
        if mask is not None:
            empty = ~mask.any(-1) if mask.dtype == torch.bool else torch.isneginf(mask).all(-1)
            if bool(empty.any()):
                # give empty rows any finite mask for the kernel, then zero them below
                mask = (mask | empty[..., None] if mask.dtype == torch.bool
                        else mask.masked_fill(empty[..., None], 0.0))
            else:
                empty = None

        # CPU's reduced-precision SDPA kernels are several times slower than float32's, so
        # on CPU attention runs in float32 (autocast off: it would cast back to bf16)
        reduced = q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
        with torch.autocast("cpu", enabled=False) if reduced else contextlib.nullcontext():
            work = torch.float32 if reduced else q.dtype
            if mask is not None and mask.dtype != torch.bool:
                mask = mask.to(work)
            out = F.scaled_dot_product_attention(
                q.to(work), k.to(work), v.to(work), attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                scale=1.0 / math.sqrt(self.head_dim)).to(q.dtype)  # (B, H, Nq, d)
        if empty is not None:
            out = out.masked_fill(empty[..., None], 0.0)
        b = q.shape[0]
        out = self.out_proj(out.transpose(1, 2).reshape(b, nq, self.dim))  # (B, Nq, C)
        if empty is not None and self.out_proj.bias is not None:
            all_empty = empty.all(1).expand(b, nq)  # (B, Nq)
            out = out.masked_fill(all_empty[..., None], 0.0)
        return out
