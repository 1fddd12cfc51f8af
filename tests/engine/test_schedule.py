import math

import pytest

from scaledet.engine.schedule import WarmupCosine


def test_warmup_is_linear_then_flat():
    s = WarmupCosine(warmup_iters=10, warmup_start=0.1, min_ratio=0.0)
    assert s.warmup(0) == pytest.approx(0.1)
    assert s.warmup(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert [s.warmup(i) for i in (10, 11, 1000)] == [1.0, 1.0, 1.0]
    diffs = [s.warmup(i + 1) - s.warmup(i) for i in range(9)]
    assert all(d == pytest.approx(0.09) for d in diffs)


def test_cosine_endpoints_midpoint_and_monotone():
    s = WarmupCosine(warmup_iters=0, min_ratio=0.05)
    assert s.cosine(0.0) == pytest.approx(1.0)
    assert s.cosine(0.5) == pytest.approx((1.0 + 0.05) / 2)
    assert s.cosine(1.0) == pytest.approx(0.05)
    assert s.cosine(0.25) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 4)))
    vals = [s.cosine(i / 100) for i in range(101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    # progress outside [0, 1] (a time budget overshot by one step) is clamped
    assert s.cosine(1.3) == pytest.approx(0.05) and s.cosine(-0.1) == pytest.approx(1.0)


def test_lr_factor_is_the_product():
    s = WarmupCosine(warmup_iters=4, warmup_start=0.0, min_ratio=0.1)
    assert s.lr_factor(2, 0.5) == pytest.approx(0.5 * (0.1 + 0.9 * 0.5))
    assert s.lr_factor(0, 0.0) == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="warmup_iters"):
        WarmupCosine(warmup_iters=-1)
    with pytest.raises(ValueError, match="min_ratio"):
        WarmupCosine(min_ratio=1.5)
