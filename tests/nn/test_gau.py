"""GAU: shapes, init, padding, causality, and an explicit reference of the squared-ReLU unit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scaledet.nn import GAU, RotaryEmbedding1D, apply_rope


def _gau(dim=16, **kw):
    torch.manual_seed(0)
    m = GAU(dim, qk_dim=8, **kw).double()
    with torch.no_grad():  # larger gamma/beta than the init, so that attention matters
        m.gamma.normal_()
        m.beta.normal_(std=0.5)
    return m


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_rope", [False, True])
def test_shapes_and_init(causal, use_rope):
    m = GAU(24, expansion=3, qk_dim=16, causal=causal, use_rope=use_rope)
    assert m.proj_in.out_features == 2 * 72 + 16
    assert m.proj_out.in_features == 72
    assert (m.beta == 0).all()
    assert 0.005 < m.gamma.std().item() < 0.04
    out = m(torch.randn(3, 10, 24))
    assert out.shape == (3, 10, 24)


@torch.no_grad()
def explicit_gau(m: GAU, x, allowed):
    """The FLASH formulas written out for one sequence ``x`` (N, dim), ``allowed`` (N, N)."""
    e, s = m.hidden, m.qk_dim
    w, b = m.proj_in.weight, m.proj_in.bias
    u = F.silu(x @ w[:e].T + b[:e])
    v = F.silu(x @ w[e:2 * e].T + b[e:2 * e])
    z = F.silu(x @ w[2 * e:].T + b[2 * e:])
    q = z * m.gamma[0] + m.beta[0]
    k = z * m.gamma[1] + m.beta[1]
    if m.rope is not None:
        cos, sin = RotaryEmbedding1D(s)(torch.arange(x.shape[0]))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    n = x.shape[0]
    a = torch.zeros(n, n, dtype=x.dtype)
    for i in range(n):
        valid = [j for j in range(n) if allowed[i, j]]
        for j in valid:
            a[i, j] = max(float(q[i] @ k[j]) / math.sqrt(s), 0.0) ** 2 / len(valid)
    return (u * (a @ v)) @ m.proj_out.weight.T + m.proj_out.bias


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_rope", [False, True])
def test_matches_explicit_reference(causal, use_rope):
    m = _gau(causal=causal, use_rope=use_rope)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    kpm = torch.tensor([[False] * 5, [False, False, True, False, True]])
    got = m(x, key_padding_mask=kpm)
    for bi in range(2):
        allowed = ~kpm[bi].expand(5, 5)
        if causal:
            allowed = allowed & torch.ones(5, 5, dtype=torch.bool).tril()
        torch.testing.assert_close(got[bi], explicit_gau(m, x[bi], allowed))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_rope", [False, True])
def test_padding_does_not_change_valid_tokens(causal, use_rope):
    m = _gau(causal=causal, use_rope=use_rope)
    x = torch.randn(1, 9, 16, dtype=torch.float64)
    padded = torch.cat([x, 7 * torch.randn(1, 4, 16, dtype=torch.float64)], dim=1)
    kpm = torch.tensor([[False] * 9 + [True] * 4])
    torch.testing.assert_close(m(padded, key_padding_mask=kpm)[:, :9], m(x))
    # and the padding mask matters: without it the padded keys change the output
    if not causal:
        assert not torch.allclose(m(padded)[:, :9], m(x))


def test_causal_output_ignores_the_future():
    m = _gau(causal=True)
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 4, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x)[:, :4], m(y)[:, :4])
    assert not torch.allclose(m(x)[:, 4:], m(y)[:, 4:])
    # non-causal does look ahead
    m.causal = False
    assert not torch.allclose(m(x)[:, :4], m(y)[:, :4])


def test_gradients_finite_with_fully_padded_sequence():
    m = GAU(16, qk_dim=8)
    x = torch.randn(2, 5, 16, requires_grad=True)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[0] = True
    out = m(x, key_padding_mask=kpm)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
