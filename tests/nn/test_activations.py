"""Squared ReLU, plain and gated feed-forward blocks against their formulas."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.nn import (
    FFN_KINDS,
    FeedForward,
    GLUFeedForward,
    SquaredReLU,
    feed_forward,
    squared_relu,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=20))
def test_squared_relu_is_relu_squared(values):
    x = torch.tensor(values, dtype=torch.float64)
    want = torch.tensor([max(v, 0.0) ** 2 for v in values], dtype=torch.float64)
    torch.testing.assert_close(squared_relu(x), want)
    torch.testing.assert_close(SquaredReLU()(x), want)


def test_squared_relu_gradient_is_two_relu():
    x = torch.tensor([-2.0, -0.0, 0.0, 0.5, 3.0], requires_grad=True)
    squared_relu(x).sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach().clamp_min(0))


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _silu(x):
    return x / (1 + torch.exp(-x))


@pytest.mark.parametrize("kind,gate", [("swiglu", _silu), ("geglu", _gelu)])
def test_glu_matches_formula(kind, gate):
    torch.manual_seed(0)
    m = GLUFeedForward(6, 10, kind=kind).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    want = (gate(x @ m.w_gate.weight.T) * (x @ m.w_value.weight.T)) @ m.w_out.weight.T
    torch.testing.assert_close(m(x), want)


@pytest.mark.parametrize("act,fn", [("gelu", _gelu), ("relu", lambda x: x.clamp_min(0)),
                                    ("silu", _silu), ("relu2", lambda x: x.clamp_min(0) ** 2)])
def test_feed_forward_matches_formula(act, fn):
    torch.manual_seed(0)
    m = FeedForward(6, 10, act=act).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    want = fn(x @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias
    torch.testing.assert_close(m(x), want)


@pytest.mark.parametrize("kind", FFN_KINDS)
def test_factory_builds_every_kind_with_finite_gradients(kind):
    torch.manual_seed(0)
    m = feed_forward(kind, 8, 16, dropout=0.1)
    assert isinstance(m, GLUFeedForward if kind in ("swiglu", "geglu") else FeedForward)
    x = torch.randn(3, 5, 8, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    (out ** 2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in m.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_dropout_only_in_training():
    torch.manual_seed(0)
    for m in (feed_forward("gelu", 8, 16, dropout=0.5), feed_forward("swiglu", 8, 16,
                                                                     dropout=0.5)):
        x = torch.randn(4, 8)
        m.eval()
        torch.testing.assert_close(m(x), m(x))
        m.train()
        assert not torch.allclose(m(x), m(x))


def test_unknown_kinds_raise_listing_valid_ones():
    with pytest.raises(ValueError, match="swiglu, geglu"):
        feed_forward("tanh", 4, 8)
    with pytest.raises(ValueError, match="gelu"):
        FeedForward(4, 8, act="tanh")
    with pytest.raises(ValueError, match="swiglu"):
        GLUFeedForward(4, 8, kind="reglu")
