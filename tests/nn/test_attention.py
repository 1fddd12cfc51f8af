"""MultiheadAttention against an explicit softmax(QK^T/sqrt(d))V and torch.nn.MultiheadAttention."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.nn import MultiheadAttention


def _randomise_biases(m: MultiheadAttention) -> None:
    with torch.no_grad():
        for proj in (m.q_proj, m.k_proj, m.v_proj, m.out_proj):
            proj.bias.normal_()


def reference(m: MultiheadAttention, query, key, value, blocked=None, additive=None):
    """softmax(Q K^T / sqrt(d) + additive, -inf where blocked) V with plain matmuls; a row with
    every key blocked gets zero weights, and a row empty in every head gets a zero output."""
    b, nq, c = query.shape
    nk = key.shape[1]
    h, d = m.num_heads, c // m.num_heads

    def heads(x, proj):
        return (x @ proj.weight.T + proj.bias).reshape(b, -1, h, d).permute(0, 2, 1, 3)

    q, k, v = heads(query, m.q_proj), heads(key, m.k_proj), heads(value, m.v_proj)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, H, Nq, Nk)
    if additive is not None:
        logits = logits + additive
    if blocked is None:
        blocked = torch.zeros(nq, nk, dtype=torch.bool)
    blocked = blocked.expand(b, h, nq, nk) | torch.isneginf(logits)
    weights = logits.masked_fill(blocked, float("-inf")).softmax(-1)
    empty = blocked.all(-1)  # (B, H, Nq)
    weights = weights.masked_fill(empty[..., None], 0.0)
    out = (weights @ v).permute(0, 2, 1, 3).reshape(b, nq, c)
    out = out @ m.out_proj.weight.T + m.out_proj.bias
    return out.masked_fill(empty.all(1)[..., None], 0.0)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), nq=st.integers(1, 6), nk=st.integers(1, 6),
       heads=st.sampled_from([1, 2, 4]), padding=st.booleans(),
       mask_kind=st.sampled_from([None, "2d", "3d"]), causal=st.booleans(),
       cross=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_explicit_softmax_attention(b, nq, nk, heads, padding, mask_kind, causal, cross,
                                            seed):
    g = torch.Generator().manual_seed(seed)
    dim = 4 * heads
    torch.manual_seed(seed)
    m = MultiheadAttention(dim, heads).double().eval()
    _randomise_biases(m)
    if not cross:
        nk = nq
    query = torch.randn(b, nq, dim, generator=g, dtype=torch.float64)
    key = query if not cross else torch.randn(b, nk, dim, generator=g, dtype=torch.float64)
    value = key if not cross else torch.randn(b, nk, dim, generator=g, dtype=torch.float64)

    blocked = torch.zeros(b, 1, nq, nk, dtype=torch.bool)
    kw = {}
    if padding:
        kpm = torch.rand(b, nk, generator=g) < 0.3
        kw["key_padding_mask"] = kpm
        blocked |= kpm[:, None, None, :]
    if mask_kind == "2d":
        am = torch.rand(nq, nk, generator=g) < 0.3
        kw["attn_mask"] = am
        blocked |= am
    elif mask_kind == "3d":
        am = torch.rand(b, nq, nk, generator=g) < 0.3
        kw["attn_mask"] = am
        blocked |= am[:, None]
    if causal:
        kw["causal"] = True
        blocked |= torch.ones(nq, nk, dtype=torch.bool).triu(1)

    got = m(query, None if not cross else key, None if not cross else value, **kw)
    want = reference(m, query, key, value, blocked)
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_float_additive_mask_combined_with_bool_masks():
    torch.manual_seed(0)
    m = MultiheadAttention(8, 2).double()
    _randomise_biases(m)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    additive = torch.randn(2, 5, 5, dtype=torch.float64)
    additive[0, 1, 3] = float("-inf")
    kpm = torch.tensor([[False] * 5, [False, False, False, True, True]])
    got = m(x, attn_mask=additive, key_padding_mask=kpm, causal=True)
    blocked = kpm[:, None, None, :] | torch.ones(5, 5, dtype=torch.bool).triu(1)
    want = reference(m, x, x, x, blocked, additive[:, None])
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    torch.manual_seed(0)
    m = MultiheadAttention(8, 2)
    _randomise_biases(m)
    x = torch.randn(2, 4, 8, requires_grad=True)
    attn_mask = torch.zeros(4, 4, dtype=torch.bool)
    attn_mask[2] = True  # query 2 may see nothing
    kpm = torch.tensor([[True] * 4, [False] * 4])  # batch 0: every key padded
    out = m(x, key_padding_mask=kpm, attn_mask=attn_mask)
    assert not out.isnan().any()
    assert (out[0] == 0).all()
    assert (out[1, 2] == 0).all()
    assert (out[1, [0, 1, 3]] != 0).any(dim=-1).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    # float mask with a row of -inf: the same
    fmask = torch.zeros(4, 4)
    fmask[1] = float("-inf")
    out = m(x, attn_mask=fmask)
    assert (out[:, 1] == 0).all() and not out.isnan().any()


def test_per_head_mask_zeroes_only_that_heads_contribution():
    torch.manual_seed(0)
    m = MultiheadAttention(8, 2).double()
    _randomise_biases(m)
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    mask = torch.zeros(1, 2, 3, 3, dtype=torch.bool)
    mask[0, 0, 1] = True  # head 0, query 1: nothing allowed; head 1 still sees all
    got = m(x, attn_mask=mask)
    torch.testing.assert_close(got, reference(m, x, x, x, mask), rtol=1e-9, atol=1e-9)
    assert (got[0, 1] != 0).any()


@pytest.mark.parametrize("cross", [False, True])
def test_equals_torch_multihead_attention(cross):
    torch.manual_seed(0)
    dim, heads = 16, 4
    ours = MultiheadAttention(dim, heads).eval()
    _randomise_biases(ours)
    theirs = torch.nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat(
            [ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat(
            [ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    q = torch.randn(3, 5, dim)
    k = torch.randn(3, 7, dim) if cross else q
    v = torch.randn(3, 7, dim) if cross else q
    nk = k.shape[1]
    kpm = torch.zeros(3, nk, dtype=torch.bool)
    kpm[1, -2:] = True
    kpm[2, :3] = True
    attn_mask = torch.rand(5, nk) < 0.2
    attn_mask[:, [2, 4]] = False  # every row keeps an unpadded key: torch gives NaN otherwise
    want, _ = theirs(q, k, v, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=False)
    got = ours(q, k, v, key_padding_mask=kpm, attn_mask=attn_mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _module_logits(m: MultiheadAttention, query, key):
    """The module's own attention logits, read back through its output: with v_proj and
    out_proj the identity and value ``j`` the one-hot ``e_j`` in every head's slice, output
    channel ``(h, j)`` of query ``i`` is the attention probability p_h(i, j); log p are the
    logits up to a per-row constant."""
    b, nk, dim = key.shape
    d = m.head_dim
    assert nk == d
    with torch.no_grad():
        for proj in (m.v_proj, m.out_proj):
            proj.weight.copy_(torch.eye(dim))
            proj.bias.zero_()
        value = torch.eye(d, dtype=key.dtype).repeat(1, m.num_heads).expand(b, d, dim)
        p = m(query, key, value)  # (B, Nq, H*d)
    nq = query.shape[1]
    return p.reshape(b, nq, m.num_heads, d).clamp_min(1e-300).log()


def test_initial_logits_have_about_unit_variance():
    # q = W_q x with xavier-uniform W_q: Var(W) = 2 / (fan_in + fan_out) = 1/64 for 64 -> 64,
    # so every q entry has variance 64 * 1/64 = 1 for LayerNorm'd x; the same for k, and q, k of
    # different tokens are independent. q.k is a sum of head_dim products of unit variance, so
    # Var(q.k) = head_dim and Var(q.k / sqrt(head_dim)) = 1. The band [0.5, 2] allows for the
    # spread of one random weight draw (a few head_dim x 64 matrices); a missing 1/sqrt(d)
    # scale gives ~head_dim = 16, a doubled or squared scale 1/16 or 1/256.
    torch.manual_seed(0)
    dim, heads = 64, 4
    d = dim // heads
    norm = torch.nn.LayerNorm(dim).double()
    m = MultiheadAttention(dim, heads).double()
    query = norm(torch.randn(64, 32, dim, dtype=torch.float64))
    key = norm(torch.randn(64, d, dim, dtype=torch.float64))
    logits = _module_logits(m, query, key)  # (B, Nq, H, Nk) up to a per-row constant
    within_row = logits.var(dim=-1).mean().item()  # per-row constant removed
    assert 0.5 < within_row < 2.0, within_row
    # the same number from the projections directly, scaled by hand
    q = m.q_proj(query).reshape(64, 32, heads, d)
    k = m.k_proj(key).reshape(64, d, heads, d)
    explicit = torch.einsum("bihc,bjhc->bihj", q, k) / math.sqrt(d)
    torch.testing.assert_close(explicit.var(dim=-1).mean().item(), within_row, rtol=1e-6,
                               atol=0)


@pytest.mark.parametrize("heads", [1, 4, 16])
def test_unscaled_logit_variance_grows_with_head_dim(heads):
    # without 1/sqrt(d) the variance is ~ head_dim (see above), so the scale is what keeps
    # the logits at unit variance for every head size
    torch.manual_seed(1)
    dim = 64
    d = dim // heads
    norm = torch.nn.LayerNorm(dim)
    m = MultiheadAttention(dim, heads)
    with torch.no_grad():
        x, y = norm(torch.randn(256, dim)), norm(torch.randn(256, dim))
        q = m.q_proj(x).reshape(256, heads, d)
        k = m.k_proj(y).reshape(256, heads, d)
        unscaled = torch.einsum("ihc,jhc->hij", q, k).var().item()
    assert 0.5 * d < unscaled < 2.0 * d, (d, unscaled)
    assert 0.5 < unscaled / d < 2.0


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = MultiheadAttention(8, 2, dropout=0.5)
    x = torch.randn(2, 6, 8)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m.train()
    assert not torch.allclose(m(x), m(x))


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiheadAttention(10, 4)
    m = MultiheadAttention(8, 2)
    with pytest.raises(ValueError, match="attn_mask"):
        m(torch.randn(1, 3, 8), attn_mask=torch.zeros(3, dtype=torch.bool))


def test_init_is_xavier_with_zero_bias():
    m = MultiheadAttention(64, 4)
    bound = math.sqrt(6 / (64 + 64))
    for proj in (m.q_proj, m.k_proj, m.v_proj, m.out_proj):
        assert proj.weight.abs().max() <= bound
        assert proj.weight.abs().max() > 0.9 * bound
        assert (proj.bias == 0).all()


def test_cpu_autocast_attends_in_float32_and_keeps_the_callers_dtype():
    """Under CPU bf16 autocast the projections run in bf16 but SDPA in float32 (CPU's bf16
    kernels are slow); the result matches the float32 module to bf16 precision, is bf16, and
    an additive float mask works too."""
    torch.manual_seed(0)
    mha = MultiheadAttention(32, 4)
    x = torch.randn(2, 7, 32)
    bias = torch.randn(7, 7)
    want = mha(x, attn_mask=bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = mha(x, attn_mask=bias)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=5e-2)
    seen = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return original(q, k, v, **kw)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mha(x, attn_mask=bias)
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    assert seen == [(torch.float32, False)]
