"""Top-k mixture of experts: routing, a dense brute-force reference, the load-balancing loss."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.nn import MoEFeedForward


def dense_reference(m: MoEFeedForward, x):
    """Every expert on every token, combined with the renormalised top-k router probabilities."""
    tokens = x.reshape(-1, m.dim)
    probs = torch.softmax(tokens @ m.router.weight.T, dim=-1)  # (T, E)
    all_out = torch.stack([expert(tokens) for expert in m.experts], dim=1)  # (T, E, C)
    top = probs.topk(m.k, dim=-1).indices
    gates = torch.zeros_like(probs).scatter(1, top, probs.gather(1, top))
    gates = gates / gates.sum(-1, keepdim=True)
    return (gates[..., None] * all_out).sum(1).reshape(x.shape)


def aux_reference(m: MoEFeedForward, x):
    """E * sum_e f_e P_e with f_e counted by loops over (token, slot) assignments."""
    tokens = x.reshape(-1, m.dim)
    t = tokens.shape[0]
    probs = torch.softmax(tokens @ m.router.weight.T, dim=-1)
    counts = [0] * m.num_experts
    for row in probs.topk(m.k, dim=-1).indices.tolist():
        for e in row:
            counts[e] += 1
    total = 0.0
    for e in range(m.num_experts):
        f_e = counts[e] / (m.k * t)
        p_e = probs[:, e].sum().item() / t
        total += f_e * p_e
    return m.num_experts * total


@settings(max_examples=20, deadline=None)
@given(num_experts=st.integers(1, 6), data=st.data(), t=st.integers(1, 12),
       expert=st.sampled_from(["gelu", "swiglu", "relu2"]), seed=st.integers(0, 2**16))
def test_matches_dense_reference_and_aux_formula(num_experts, data, t, expert, seed):
    k = data.draw(st.integers(1, num_experts))
    torch.manual_seed(seed)
    m = MoEFeedForward(8, 12, num_experts=num_experts, k=k, expert=expert).double()
    x = torch.randn(t, 2, 8, dtype=torch.float64)  # leading dims are flattened: T = 2t tokens
    out = m(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, dense_reference(m, x), rtol=1e-9, atol=1e-9)
    assert m.aux_loss.shape == ()
    assert m.aux_loss.item() == pytest.approx(aux_reference(m, x), rel=1e-6)
    routing = m.last_routing
    assert routing.shape == (2 * t, k)
    # every token goes to exactly k distinct experts
    assert all(len(set(row)) == k for row in routing.tolist())
    assert routing.min() >= 0 and routing.max() < num_experts


def test_experts_only_run_on_their_tokens():
    torch.manual_seed(0)
    m = MoEFeedForward(8, 16, num_experts=4, k=1)
    seen = [0] * 4
    for e, expert in enumerate(m.experts):
        expert.register_forward_hook(
            lambda mod, inp, out, e=e: seen.__setitem__(e, seen[e] + inp[0].shape[0]))
    m(torch.randn(50, 8))
    assert sum(seen) == 50  # k = 1: 50 tokens in total, not 4 * 50
    assert seen == torch.bincount(m.last_routing[:, 0], minlength=4).tolist()


@pytest.mark.parametrize("num_experts,k", [(2, 1), (4, 1), (4, 2), (4, 4), (8, 3), (3, 2),
                                           (5, 4)])
def test_uniform_router_gives_aux_loss_one(num_experts, k):
    # Zero router weights give P_e = 1/E for every expert. Whatever the top-k picks, the
    # fractions f_e sum to 1 (k*T assignments divided by k*T), so
    # aux = E * sum_e f_e * (1/E) = sum_e f_e = 1, for every k.
    m = MoEFeedForward(8, 16, num_experts=num_experts, k=k)
    torch.nn.init.zeros_(m.router.weight)
    m(torch.randn(37, 8))
    if num_experts & (num_experts - 1) == 0:  # 1/E exact in binary: exactly 1
        assert m.aux_loss.item() == 1.0
    else:
        assert m.aux_loss.item() == pytest.approx(1.0, abs=1e-6)


def test_collapsed_router_gives_aux_loss_e():
    # all tokens and all probability on one expert: f = P = one-hot, aux = E
    m = MoEFeedForward(4, 8, num_experts=4, k=1)
    with torch.no_grad():
        m.router.weight.zero_()
        m.router.weight[2, 0] = 100.0
    x = torch.randn(20, 4)
    x[:, 0] = x[:, 0].abs() + 1
    m(x)
    assert m.aux_loss.item() == pytest.approx(4.0, rel=1e-6)


def test_gradient_reaches_router_through_output_and_aux_loss():
    torch.manual_seed(0)
    m = MoEFeedForward(8, 16, num_experts=4, k=2)
    x = torch.randn(3, 10, 8, requires_grad=True)
    m(x).sum().backward()
    assert m.router.weight.grad is not None and m.router.weight.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()
    m.zero_grad()
    m(x)
    m.aux_loss.backward()
    assert m.router.weight.grad.abs().sum() > 0


def test_bad_k_raises():
    with pytest.raises(ValueError, match="k <= num_experts"):
        MoEFeedForward(8, 16, num_experts=2, k=3)
    with pytest.raises(ValueError, match="feed-forward kind"):
        MoEFeedForward(8, 16, expert="tanh")
