"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

Softmax attention weighs key ``j`` for query ``i`` by ``exp(q_i . k_j)``; linear attention
replaces it by the kernel ``phi(q_i) . phi(k_j)`` with the positive feature map
``phi(x) = elu(x) + 1``. The output

    out_i = sum_j (phi(q_i) . phi(k_j)) v_j / sum_j phi(q_i) . phi(k_j)
          = phi(q_i) (sum_j phi(k_j)^T v_j) / phi(q_i) (sum_j phi(k_j))

can then be computed right-to-left: ``sum_j phi(k_j)^T v_j`` is one ``(d, d)`` matrix per head,
so time and memory are O(N d^2) instead of O(N^2 d). The causal form replaces both sums by
prefix sums over the sequence (memory O(N d^2) for the running ``(d, d)`` matrices).

``eps`` is added to the denominator; a query with no valid key gets zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def elu_feature_map(x: Tensor) -> Tensor:
    """``phi(x) = elu(x) + 1``: positive everywhere, linear for x > 0."""
    return F.elu(x) + 1.0


def linear_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
                     key_padding_mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Linear attention on raw (pre-feature-map) queries and keys; applies ``phi`` itself.

    Args:
        q: ``(B, H, N, d)`` queries, before the feature map.
        k: ``(B, H, N, d)`` keys, before the feature map.
        v: ``(B, H, N, e)`` values.
        causal: query ``i`` only sees keys ``j <= i``.
        key_padding_mask: ``(B, N)`` bool, True = padded key, contributes nothing.
        eps: added to the normaliser.

    Returns:
        ``(B, H, N, e)``, dtype of ``v`` (computed in float32 for half-precision inputs).
    """
    out_dtype = v.dtype
    if v.dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    with torch.autocast(q.device.type, enabled=False):  # the long sums stay in float32
        out = _linear_attention(q, k, v, causal, key_padding_mask, eps)
    return out.to(out_dtype)


def _linear_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool,
                      key_padding_mask: Tensor | None, eps: float) -> Tensor:
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    if key_padding_mask is not None:
        keep = (~key_padding_mask)[:, None, :, None].to(phi_k.dtype)  # (B, 1, N, 1)
        phi_k = phi_k * keep
    if causal:
        kv = torch.cumsum(phi_k[..., :, None] * v[..., None, :], dim=2)  # (B, H, N, d, e)
        z = torch.cumsum(phi_k, dim=2)  # (B, H, N, d)
        num = torch.einsum("bhnd,bhnde->bhne", phi_q, kv)
        den = (phi_q * z).sum(-1)  # (B, H, N)
    else:
        kv = torch.einsum("bhnd,bhne->bhde", phi_k, v)  # (B, H, d, e)
        z = phi_k.sum(dim=2)  # (B, H, d)
        num = torch.einsum("bhnd,bhde->bhne", phi_q, kv)
        den = torch.einsum("bhnd,bhd->bhn", phi_q, z)
    return num / (den[..., None] + eps)


class LinearAttention(nn.Module):
    """Multi-head self-attention with the linear ``elu + 1`` kernel.

    Args:
        dim: model width C, divisible by ``num_heads``.
        num_heads: number of heads.
        causal: query ``i`` only sees tokens ``j <= i`` (prefix sums).
        eps: added to the normaliser.
    """

    def __init__(self, dim: int, num_heads: int, *, causal: bool = False,
                 eps: float = 1e-6) -> None:
        super().__init__()
        if dim <= 0 or num_heads <= 0 or dim % num_heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        self.eps = eps
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        """``(B, N, C)`` -> ``(B, heads, N, head_dim)``."""
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x`` ``(B, N, C)``, ``key_padding_mask`` ``(B, N)`` bool (True = padded) ->
        ``(B, N, C)``."""
        b, n, _ = x.shape
        out = linear_attention(self._heads(self.q_proj(x)), self._heads(self.k_proj(x)),
                               self._heads(self.v_proj(x)), causal=self.causal,
                               key_padding_mask=key_padding_mask, eps=self.eps)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.dim))
