"""Margin-softmax logits against hand-computed formulas (θ from an explicit ``math.acos``) and
against InsightFace's ArcFace formula (``cos θ cos m − sin θ sin m``); every margin lowers the
target logit and only it; no margin is exactly ``s·cos θ``; gradients finite at cos θ = ±1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scaledet.faces import MarginSoftmax, arcface, cosface, margin_logits, sphereface

COSINE = [[0.5, -0.2, 0.9], [0.1, 0.7, -0.95], [0.3, 0.999, 0.0]]
LABELS = [0, 2, 1]


def _psi_monotonic(theta: float, m1: float, m2: float) -> float:
    """SphereFace's ψ, written out: (-1)^k cos(m1 θ + m2) - 2k on the k-th half turn."""
    phi = m1 * theta + m2
    k = math.floor(phi / math.pi)
    return (-1) ** k * math.cos(phi) - 2 * k


def _reference(cos: float, *, m1: float, m2: float, m3: float, fallback: str) -> float:
    """The target logit / s for one cosine, from the papers' formulas."""
    theta = math.acos(cos)
    if fallback == "monotonic":
        return _psi_monotonic(theta, m1, m2) - m3
    if fallback == "threshold":  # InsightFace: beyond θ + m > π, cos θ - m sin m
        return (math.cos(theta + m2) if theta + m2 <= math.pi else cos - m2 * math.sin(m2)) - m3
    if fallback == "easy":
        return (math.cos(theta + m2) if cos > 0 else cos) - m3
    return math.cos(m1 * theta + m2) - m3  # "none": no angle passes π in the cases used


CASES = [  # (margins, fallback)
    ({"m1": 1.0, "m2": 0.5, "m3": 0.0}, "threshold"),   # ArcFace
    ({"m1": 1.0, "m2": 0.5, "m3": 0.0}, "monotonic"),
    ({"m1": 1.0, "m2": 0.5, "m3": 0.0}, "easy"),
    ({"m1": 1.0, "m2": 0.0, "m3": 0.35}, "none"),       # CosFace
    ({"m1": 1.35, "m2": 0.0, "m3": 0.0}, "monotonic"),  # SphereFace (normalised)
    ({"m1": 4.0, "m2": 0.0, "m3": 0.0}, "monotonic"),   # SphereFace (original m)
    ({"m1": 1.2, "m2": 0.3, "m3": 0.1}, "monotonic"),   # combined
]


@pytest.mark.parametrize(("margins", "fallback"), CASES)
def test_matches_hand_computed_logits(margins, fallback):
    cosine = torch.tensor(COSINE, dtype=torch.float64)
    labels = torch.tensor(LABELS)
    logits = margin_logits(cosine, labels, scale=30.0, **margins,
                           fallback=None if fallback == "none" else fallback)
    assert logits.shape == cosine.shape and logits.dtype == torch.float64
    for i, row in enumerate(COSINE):
        for j, cos in enumerate(row):
            if j == LABELS[i]:
                expected = 30.0 * _reference(cos, **margins, fallback=fallback)
            else:
                expected = 30.0 * cos
            assert logits[i, j].item() == pytest.approx(expected, abs=1e-9), (i, j)


def test_the_cases_reach_every_branch():
    """The hand-computed cases above go past π for ArcFace (-0.95: θ + 0.5 > π), for the
    monotonic ψ (k = 1 and, with m = 4, k = 2 or more) and below 0 for the easy margin."""
    theta = math.acos(-0.95)
    assert theta + 0.5 > math.pi and 1.35 * theta > math.pi and 4 * theta > 3 * math.pi
    assert 4 * math.acos(0.5) > math.pi  # m = 4 already past π at 60°


def test_arcface_matches_the_insightface_formula():
    """InsightFace's ArcMarginProduct computes cos(θ + m) as cos θ cos m − sin θ sin m and
    falls back to cos θ − m sin m where cos θ <= cos(π − m): an independent formula."""
    s, m = 64.0, 0.5
    cosine = torch.linspace(-1, 1, 2001, dtype=torch.float64)[:, None].repeat(1, 2)
    labels = torch.zeros(len(cosine), dtype=torch.long)
    sine = (1 - cosine[:, 0] ** 2).clamp(min=0).sqrt()
    phi = cosine[:, 0] * math.cos(m) - sine * math.sin(m)
    phi = torch.where(cosine[:, 0] > math.cos(math.pi - m), phi, cosine[:, 0] - math.sin(m) * m)
    ours = margin_logits(cosine, labels, scale=s, m1=1.0, m2=m, m3=0.0)  # default: threshold
    inner = slice(1, -1)  # at exactly ±1 ours reads cos θ = ±(1 − 1e-7)
    torch.testing.assert_close(ours[inner, 0], s * phi[inner], rtol=0, atol=2e-5)
    torch.testing.assert_close(ours[:, 1], s * cosine[:, 1], rtol=0, atol=0)


def test_no_margin_is_exactly_normalised_softmax():
    cosine = torch.rand(64, 10) * 2 - 1
    labels = torch.randint(0, 10, (64,))
    logits = margin_logits(cosine, labels, scale=64.0, m1=1.0, m2=0.0, m3=0.0)
    assert torch.equal(logits, 64.0 * cosine)
    head = MarginSoftmax(16, 10, s=32.0, m2=0.0)
    x = torch.randn(64, 16)
    assert torch.equal(head(x, labels), 32.0 * head.cosine(x))
    margin = arcface(16, 10, s=32.0)
    assert torch.equal(margin(x), 32.0 * margin.cosine(x))  # no labels: evaluation logits
    assert torch.allclose(head.cosine(x), F.normalize(x) @ F.normalize(head.weight).T,
                          atol=1e-6)


@pytest.mark.parametrize(("margins", "fallback"), CASES)
def test_each_margin_lowers_the_target_logit_only(margins, fallback):
    cosine = torch.linspace(-0.99, 0.99, 397, dtype=torch.float64)[:, None].repeat(1, 3)
    labels = torch.ones(len(cosine), dtype=torch.long)
    logits = margin_logits(cosine, labels, scale=10.0, **margins,
                           fallback=None if fallback == "none" else fallback)
    plain = 10.0 * cosine
    assert torch.equal(logits[:, [0, 2]], plain[:, [0, 2]])
    target, reference = logits[:, 1], plain[:, 1]
    if fallback == "easy":  # the easy margin is off where cos θ <= 0
        positive = cosine[:, 1] > 0
        assert (target[positive] < reference[positive]).all()
        assert torch.equal(target[~positive], reference[~positive])
    else:
        assert (target < reference).all()


@pytest.mark.parametrize("fallback", ["monotonic", "threshold"])
def test_target_logit_decreases_with_the_angle(fallback):
    """Beyond π the fallbacks keep the target logit decreasing in θ (cos(θ + m) would turn
    back up and reward moving away from the class); the monotonic ψ is also continuous."""
    theta = torch.linspace(1e-3, math.pi - 1e-3, 5001, dtype=torch.float64)
    cosine = theta.cos()[:, None]
    labels = torch.zeros(len(theta), dtype=torch.long)
    for m1, m2 in ((1.0, 0.5), (1.0, 1.2)) + (((1.35, 0.0), (4.0, 0.0), (1.5, 0.4))
                                              if fallback == "monotonic" else ()):
        target = margin_logits(cosine, labels, scale=1.0, m1=m1, m2=m2, fallback=fallback)[:, 0]
        steps = target.diff()
        assert (steps < 0).all(), (m1, m2)
        if fallback == "monotonic":
            assert steps.abs().max() < 0.01, (m1, m2)  # no jumps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(("margins", "fallback"), CASES)
def test_gradients_are_finite_at_plus_and_minus_one(margins, fallback, dtype):
    one = 1.0 + 1e-7 if dtype == torch.float64 else 1.0
    cosine = torch.tensor([[1.0, -1.0, 0.2], [-1.0, 1.0, 0.0], [one, 0.3, -one], [0.5, 0.5, 0.5]],
                          dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 0, 2, 1])
    logits = margin_logits(cosine, labels, scale=64.0, **margins,
                           fallback=None if fallback == "none" else fallback)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, labels).backward()
    assert torch.isfinite(cosine.grad).all()


@pytest.mark.parametrize("make", [arcface, cosface, sphereface])
def test_head_gradients_are_finite_for_embeddings_on_a_class_weight(make):
    torch.manual_seed(0)
    head = make(8, 4)
    labels = torch.tensor([0, 1, 2, 3])
    x = torch.cat([head.weight[:2] * 3, -head.weight[2:] * 0.5]).detach().requires_grad_()
    logits = head(x, labels)  # cos θ = 1 (up to rounding) for rows 0, 1 and -1 for rows 2, 3
    F.cross_entropy(logits, labels).backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_presets_and_defaults():
    a, c, s = arcface(8, 3), cosface(8, 3), sphereface(8, 3)
    assert (a.s, a.m1, a.m2, a.m3, a.fallback) == (64.0, 1.0, 0.5, 0.0, "threshold")
    assert (c.s, c.m1, c.m2, c.m3) == (64.0, 1.0, 0.0, 0.35)
    assert (s.s, s.m1, s.m2, s.m3, s.fallback) == (64.0, 1.35, 0.0, 0.0, "monotonic")
    assert MarginSoftmax(8, 3).fallback == "threshold"  # ArcFace's margins, ArcFace's fallback
    assert MarginSoftmax(8, 3, m1=2.0, m2=0.0).fallback == "monotonic"
    assert a.weight.shape == (3, 8)
    assert "fallback='threshold'" in repr(a)


def test_logits_are_float32_under_autocast():
    torch.manual_seed(0)
    head = arcface(16, 5)
    x, labels = torch.randn(6, 16), torch.randint(0, 5, (6,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = head(x, labels)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, head(x, labels), rtol=0, atol=1e-4)


def test_a_margin_head_learns():
    """Embeddings of 4 identities (noisy copies of 4 directions) become separable with a
    margin: the ArcFace loss falls and the plain cosine classifies them all."""
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 16), dim=1)
    labels = torch.arange(4).repeat(16)
    x = centres[labels] + 0.15 * torch.randn(len(labels), 16)
    head = arcface(16, 4, s=16.0, m=0.3)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        loss = F.cross_entropy(head(x, labels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert (head.cosine(x).argmax(1) == labels).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scale": 0.0}, "scale must be positive"),
    ({"m1": 0.0}, "m1 .* must be positive"),
    ({"m2": -0.1}, r"m2 .* must be >= 0"),
    ({"m3": math.nan}, "m3 must be finite"),
    ({"fallback": "soft"}, "fallback must be one of"),
    ({"m1": 1.35, "fallback": "threshold"}, "needs m1 = 1"),
])
def test_bad_margins_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        margin_logits(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), **kwargs)


def test_bad_inputs_are_named():
    cosine = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got values from 0 to 3"):
        margin_logits(cosine, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"labels must be an integer \(2,\) tensor"):
        margin_logits(cosine, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"cosine must be an \(N, C\) tensor"):
        margin_logits(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"embeddings must be \(N, 8\)"):
        arcface(8, 3)(torch.zeros(2, 7), torch.tensor([0, 1]))
