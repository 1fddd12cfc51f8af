"""Focal and varifocal losses against brute-force per-element formulas."""

import math

import pytest
import torch
import torchvision

from scaledet.losses import sigmoid_focal_loss, varifocal_loss


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _vfl_reference(logit: float, q: float, alpha: float, gamma: float) -> float:
    p = _sigmoid(logit)
    if q > 0:
        return -q * (q * math.log(p) + (1 - q) * math.log(1 - p))
    return -alpha * p**gamma * math.log(1 - p)


def _focal_reference(logit: float, t: float, alpha: float, gamma: float) -> float:
    p = _sigmoid(logit)
    if t == 1:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


@pytest.fixture
def logits_and_iou_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    targets = torch.zeros(6, 5, dtype=torch.float64)
    targets[0, 1], targets[2, 4], targets[5, 0], targets[3, 3] = 0.9, 0.3, 0.05, 1.0
    return logits, targets


@pytest.mark.parametrize("alpha,gamma", [(0.75, 2.0), (0.25, 1.5)])
def test_varifocal_matches_formula(logits_and_iou_targets, alpha, gamma):
    logits, targets = logits_and_iou_targets
    out = varifocal_loss(logits, targets, alpha, gamma, reduction="none")
    ref = torch.tensor([[_vfl_reference(x, q, alpha, gamma) for x, q in zip(row_x, row_q)]
                        for row_x, row_q in zip(logits.tolist(), targets.tolist())],
                       dtype=torch.float64)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(varifocal_loss(logits, targets, alpha, gamma), ref.sum())
    torch.testing.assert_close(varifocal_loss(logits, targets, alpha, gamma, reduction="mean"),
                               ref.mean())


def test_varifocal_gradient_is_that_of_the_formula(logits_and_iou_targets):
    logits, targets = logits_and_iou_targets
    logits = logits.clone().requires_grad_()
    varifocal_loss(logits, targets).backward()
    # d/dx of the two branches, with p = sigmoid(x):
    #   positive: -q (q (1 - p) - (1 - q) p) = q (p - q);  negative: alpha p^g (p - g (1-p) log(1-p))
    p = logits.detach().sigmoid()
    pos = targets * (p - targets)
    neg = 0.75 * p**2 * (p - 2 * (1 - p) * torch.log1p(-p))
    torch.testing.assert_close(logits.grad, torch.where(targets > 0, pos, neg))


def test_varifocal_negatives_are_down_weighted_positives_by_iou():
    x = torch.tensor([2.0, 2.0, 2.0])
    q = torch.tensor([0.0, 0.5, 1.0])
    loss = varifocal_loss(x, q, reduction="none")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, q, reduction="none")
    torch.testing.assert_close(loss[1:], q[1:] * bce[1:])
    torch.testing.assert_close(loss[0], 0.75 * x[0].sigmoid() ** 2 * bce[0])


def test_varifocal_weight_and_bad_input():
    x, q = torch.randn(4, 3), torch.zeros(4, 3)
    w = torch.tensor([1.0, 0.0, 2.0]).expand(4, 3)
    torch.testing.assert_close(varifocal_loss(x, q, weight=w, reduction="none"),
                               varifocal_loss(x, q, reduction="none") * w)
    with pytest.raises(ValueError, match="same shape"):
        varifocal_loss(x, q[:2])
    with pytest.raises(ValueError, match="reduction"):
        varifocal_loss(x, q, reduction="avg")
    assert varifocal_loss(x[:0], q[:0], reduction="mean").item() == 0


def test_sigmoid_focal_matches_formula_and_torchvision():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(7, 4, generator=g) > 0.7).double()
    out = sigmoid_focal_loss(logits, targets, reduction="none")
    ref = torch.tensor([[_focal_reference(x, t, 0.25, 2.0) for x, t in zip(rx, rt)]
                        for rx, rt in zip(logits.tolist(), targets.tolist())], dtype=torch.float64)
    torch.testing.assert_close(out, ref)
    tv = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0,
                                            reduction="sum")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), tv)
