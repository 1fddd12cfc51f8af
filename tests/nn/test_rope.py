"""RoPE: relative-position property in 1-D and 2-D, norms, identity at 0, use in attention."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.nn import MultiheadAttention, RotaryEmbedding1D, RotaryEmbedding2D, apply_rope


def _rotate(x, rope, positions):
    cos, sin = rope(torch.as_tensor(positions, dtype=torch.float64))
    return apply_rope(x, cos.double(), sin.double())


@settings(max_examples=30, deadline=None)
@given(half=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_1d_score_depends_only_on_offset(half, seed):
    g = torch.Generator().manual_seed(seed)
    d = 2 * half
    rope = RotaryEmbedding1D(d)
    q = torch.randn(8, d, generator=g, dtype=torch.float64)
    k = torch.randn(8, d, generator=g, dtype=torch.float64)
    m = torch.randint(0, 200, (8,), generator=g).double()
    n = torch.randint(0, 200, (8,), generator=g).double()
    t = torch.randint(-100, 100, (8,), generator=g).double()
    # the rotation only sees float32 angles: compare with a tolerance relative to |q||k|
    score = (_rotate(q, rope, m) * _rotate(k, rope, n)).sum(-1)
    shifted = (_rotate(q, rope, m + t) * _rotate(k, rope, n + t)).sum(-1)
    scale = q.norm(dim=-1) * k.norm(dim=-1)
    assert ((score - shifted).abs() <= 1e-4 * scale).all()
    # and it does depend on the offset: rotating only q changes the score
    moved = (_rotate(q, rope, m + 1) * _rotate(k, rope, n)).sum(-1)
    assert ((moved - score).abs() > 1e-6 * scale).any()


def test_1d_matches_explicit_pair_rotation():
    # pair i = channels (i, i + d/2), rotated by angle p * base^(-2i/d)
    d, base = 8, 10000.0
    rope = RotaryEmbedding1D(d, base=base)
    x = torch.randn(5, d, dtype=torch.float64)
    pos = torch.arange(5.0) * 3.5
    got = _rotate(x, rope, pos)
    want = torch.empty_like(x)
    for i in range(d // 2):
        a = pos.double() * base ** (-2 * i / d)
        x1, x2 = x[:, i], x[:, i + d // 2]
        want[:, i] = x1 * a.cos() - x2 * a.sin()
        want[:, i + d // 2] = x1 * a.sin() + x2 * a.cos()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_1d_preserves_norm_and_is_identity_at_zero():
    rope = RotaryEmbedding1D(16)
    x = torch.randn(3, 10, 16, dtype=torch.float64)
    pos = torch.randint(0, 1000, (10,))
    torch.testing.assert_close(_rotate(x, rope, pos).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(_rotate(x, rope, torch.zeros(10)), x)
    cos, sin = rope(torch.zeros(4))
    assert cos.shape == sin.shape == (4, 16)
    assert (cos == 1).all() and (sin == 0).all()


def test_apply_rope_keeps_dtype_and_shape():
    rope = RotaryEmbedding1D(8)
    cos, sin = rope(torch.arange(6))
    x = torch.randn(2, 3, 6, 8, dtype=torch.bfloat16)
    out = apply_rope(x, cos, sin)
    assert out.shape == x.shape and out.dtype == torch.bfloat16


@settings(max_examples=20, deadline=None)
@given(quarter=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_2d_score_depends_only_on_row_and_column_offsets(quarter, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    d = 4 * quarter
    rope = RotaryEmbedding2D(d)
    cos, sin = (t.double() for t in rope(h, w))
    assert cos.shape == sin.shape == (h * w, d)
    q = torch.randn(d, generator=g, dtype=torch.float64)
    k = torch.randn(d, generator=g, dtype=torch.float64)
    rq = apply_rope(q.expand(h * w, d), cos, sin).reshape(h, w, d)
    rk = apply_rope(k.expand(h * w, d), cos, sin).reshape(h, w, d)
    score = torch.einsum("abc,ijc->abij", rq, rk)  # (row_q, col_q, row_k, col_k)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dr = rows[:, :, None, None] - rows[None, None]
    dc = cols[:, :, None, None] - cols[None, None]
    # every pair of positions with the same (d_row, d_col) has the same score
    for key in {(a, b) for a, b in zip(dr.flatten().tolist(), dc.flatten().tolist())}:
        same = score[(dr == key[0]) & (dc == key[1])]
        assert (same - same[0]).abs().max() <= 1e-5 * q.norm() * k.norm()
    # row-major: token r * w + c sits at row r, column c; at (0, 0) the rotation is identity
    torch.testing.assert_close(rq[0, 0], q)


def test_2d_axes_use_separate_halves_of_the_pairs():
    # a row offset must not be confused with a column offset of the same size
    d = 8
    cos, sin = RotaryEmbedding2D(d)(3, 3)
    q = torch.randn(d, dtype=torch.float64)
    r = apply_rope(q.expand(9, d), cos.double(), sin.double())
    # the first d/4 pairs (channels 0..d/4-1 and d/2..3d/4-1) rotate with the column only
    col_pairs = [0, 1, 4, 5]
    row_pairs = [2, 3, 6, 7]
    torch.testing.assert_close(r[3][col_pairs], q[col_pairs])  # (row 1, col 0)
    torch.testing.assert_close(r[1][row_pairs], q[row_pairs])  # (row 0, col 1)
    assert not torch.allclose(r[1][col_pairs], q[col_pairs])
    assert not torch.allclose(r[3][row_pairs], q[row_pairs])


def test_bad_head_dims_raise():
    with pytest.raises(ValueError, match="even head_dim"):
        RotaryEmbedding1D(7)
    with pytest.raises(ValueError, match="divisible by 4"):
        RotaryEmbedding2D(6)
    with pytest.raises(ValueError, match="even last dimension"):
        apply_rope(torch.randn(3, 5), torch.ones(3, 5), torch.zeros(3, 5))


@pytest.mark.parametrize("two_d", [False, True])
def test_rope_through_multihead_attention_matches_manual(two_d):
    torch.manual_seed(0)
    dim, heads, b = 32, 2, 2
    d = dim // heads
    m = MultiheadAttention(dim, heads).double().eval()
    if two_d:
        cos, sin = RotaryEmbedding2D(d)(3, 4)
        n = 12
    else:
        n = 12
        cos, sin = RotaryEmbedding1D(d)(torch.arange(n) * 2.0)
    x = torch.randn(b, n, dim, dtype=torch.float64)
    kpm = torch.zeros(b, n, dtype=torch.bool)
    kpm[1, -3:] = True
    got = m(x, rope_q=(cos, sin), rope_k=(cos, sin), key_padding_mask=kpm)

    def heads_of(proj):
        return proj(x).reshape(b, n, heads, d).transpose(1, 2)

    q = apply_rope(heads_of(m.q_proj), cos.double(), sin.double())
    k = apply_rope(heads_of(m.k_proj), cos.double(), sin.double())
    v = heads_of(m.v_proj)
    logits = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(kpm[:, None, None], -math.inf)
    want = m.out_proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, dim))
    torch.testing.assert_close(got, want)
    # and rope does change the result
    assert not torch.allclose(got, m(x, key_padding_mask=kpm))
