"""Distribution focal loss and the expectation decoding, against hand-worked values and a
brute-force loop."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.losses.distribution import distribution_expectation, distribution_focal_loss


def test_hand_worked_example():
    # Uniform over 3 bins, target 0.25: -(0.75 log 1/3 + 0.25 log 1/3) = log 3.
    loss = distribution_focal_loss(torch.zeros(1, 3), torch.tensor([0.25]))
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)
    # Bins with probabilities (0.5, 0.25, 0.25), target 1.5: -(0.5 log 0.25 + 0.5 log 0.25).
    logits = torch.tensor([[0.5, 0.25, 0.25]]).log()
    assert distribution_focal_loss(logits, torch.tensor([1.5])).item() == pytest.approx(
        math.log(4), rel=1e-6)


def test_matches_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 9, generator=g, dtype=torch.float64)
    target = torch.rand(5, 4, generator=g, dtype=torch.float64) * 10 - 1  # some out of [0, 8)
    loss = distribution_focal_loss(logits, target)
    for i in range(5):
        for j in range(4):
            probs = [math.exp(v) for v in logits[i, j].tolist()]
            probs = [p / sum(probs) for p in probs]
            t = min(max(target[i, j].item(), 0.0), 8 - 0.01)
            left = int(math.floor(t))
            ref = -((left + 1 - t) * math.log(probs[left]) + (t - left) * math.log(probs[left + 1]))
            assert loss[i, j].item() == pytest.approx(ref, rel=1e-5)


@settings(max_examples=60, deadline=None)
@given(t=st.floats(0.0, 7.98), seed=st.integers(0, 2**16))
def test_two_bin_split_is_the_minimum_and_decodes_to_the_target(t, seed):
    left = int(math.floor(t))
    best = torch.full((9,), -30.0)
    best[left], best[left + 1] = math.log(max(left + 1 - t, 1e-12)), math.log(max(t - left, 1e-12))
    target = torch.tensor(t)
    other = torch.randn(9, generator=torch.Generator().manual_seed(seed))
    assert distribution_focal_loss(best, target) <= distribution_focal_loss(other, target) + 1e-5
    assert distribution_expectation(best).item() == pytest.approx(t, abs=1e-4)


def test_gradients_are_finite_for_extreme_logits_and_targets():
    logits = torch.tensor([[80.0, -80.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    loss = distribution_focal_loss(logits, torch.tensor([3.5, -2.0])).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="must agree"):
        distribution_focal_loss(torch.zeros(2, 5), torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 bins"):
        distribution_focal_loss(torch.zeros(2, 1), torch.zeros(2))
