"""Linear attention against its explicit O(N^2) form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.nn import LinearAttention, linear_attention


def explicit(q, k, v, causal=False, key_padding_mask=None, eps=1e-6):
    """Weights w_ij = phi(q_i) . phi(k_j) as an (N, N) matrix, masked, divided by row sums."""
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    w = phi_q @ phi_k.transpose(-1, -2)  # (B, H, N, N)
    n = q.shape[-2]
    allowed = torch.ones(n, n, dtype=torch.bool)
    if causal:
        allowed = torch.tril(allowed)
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    w = w * allowed
    return (w @ v) / (w.sum(-1, keepdim=True) + eps)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), n=st.integers(1, 9), d=st.integers(1, 6),
       e=st.integers(1, 6), causal=st.booleans(), padding=st.booleans(),
       seed=st.integers(0, 2**16))
def test_functional_matches_explicit(b, h, n, d, e, causal, padding, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, h, n, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, h, n, e, generator=g, dtype=torch.float64)
    kpm = (torch.rand(b, n, generator=g) < 0.3) if padding else None
    got = linear_attention(q, k, v, causal=causal, key_padding_mask=kpm)
    want = explicit(q, k, v, causal=causal, key_padding_mask=kpm)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_padded_keys_contribute_nothing_and_all_padded_gives_zero():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    kpm = torch.tensor([[False, False, False, False, True, True]])
    got = linear_attention(q, k, v, key_padding_mask=kpm)
    # changing the padded keys and values changes nothing
    k2, v2 = k.clone(), v.clone()
    k2[..., 4:, :] += 5.0
    v2[..., 4:, :] -= 3.0
    torch.testing.assert_close(linear_attention(q, k2, v2, key_padding_mask=kpm), got)
    # the same as dropping them
    torch.testing.assert_close(got, linear_attention(q, k[..., :4, :], v[..., :4, :]))
    out = linear_attention(q, k, v, key_padding_mask=torch.ones(1, 6, dtype=torch.bool))
    assert (out == 0).all()


def test_causal_does_not_look_ahead():
    torch.manual_seed(0)
    m = LinearAttention(16, 4, causal=True).double()
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    y = x.clone()
    y[:, 5:] += torch.randn(2, 3, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x)[:, :5], m(y)[:, :5])
    assert not torch.allclose(m(x)[:, 5:], m(y)[:, 5:])


@pytest.mark.parametrize("causal", [False, True])
def test_module_matches_explicit(causal):
    torch.manual_seed(0)
    dim, heads = 12, 3
    m = LinearAttention(dim, heads, causal=causal).double()
    x = torch.randn(2, 7, dim, dtype=torch.float64)
    kpm = torch.tensor([[False] * 7, [False] * 5 + [True] * 2])

    def split(t):
        return t.reshape(2, 7, heads, dim // heads).transpose(1, 2)

    o = explicit(split(m.q_proj(x)), split(m.k_proj(x)), split(m.v_proj(x)), causal=causal,
                 key_padding_mask=kpm)
    want = m.out_proj(o.transpose(1, 2).reshape(2, 7, dim))
    torch.testing.assert_close(m(x, key_padding_mask=kpm), want)


def test_half_precision_computes_in_float32():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 64, 8) for _ in range(3))
    got = linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)
    assert got.dtype == torch.bfloat16
    want = linear_attention(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(),
                            causal=True)
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
