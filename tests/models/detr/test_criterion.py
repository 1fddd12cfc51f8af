"""The set loss on a case worked by hand."""

import math

import pytest
import torch

from scaledet.models.detr.criterion import SetLossWeights, set_loss


def test_hand_worked_case():
    # Q = 2 queries, C = 2 classes, logits 0 (p = 0.5); query 0 matched to the object.
    logits = torch.zeros(1, 2, 2)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]]])
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "labels": torch.tensor([1])}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    out = set_loss(logits, boxes, targets, indices, 1.0, SetLossWeights(1.0, 5.0, 2.0))
    # The predicted box contains the object: IoU = 0.04 / 0.08 = 0.5, enclosing box = union,
    # so GIoU = 0.5 too; L1 = |0.4 - 0.2| = 0.2.
    # Varifocal: the positive (target q = 0.5) costs q * BCE(0, 0.5) = 0.5 ln 2; each of the
    # three negatives costs alpha p^gamma BCE(0, 0) = 0.75 * 0.25 * ln 2.
    vfl = 0.5 * math.log(2) + 3 * 0.75 * 0.25 * math.log(2)
    assert float(out["vfl"]) == pytest.approx(vfl, rel=1e-5)
    assert float(out["l1"]) == pytest.approx(5 * 0.2, rel=1e-5)
    assert float(out["giou"]) == pytest.approx(2 * (1 - 0.5), rel=1e-5)


def test_normaliser_and_empty_matching():
    logits = torch.zeros(2, 3, 1, requires_grad=True)
    boxes = torch.rand(2, 3, 4).clamp(0.1, 0.9).requires_grad_()
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    empty = torch.zeros(0, dtype=torch.long)
    out = set_loss(logits, boxes, targets, [(empty, empty)] * 2, 1.0, SetLossWeights())
    assert float(out["l1"].detach()) == 0 and float(out["giou"].detach()) == 0
    # every one of the 6 logits is a negative: 0.75 * 0.5^2 * ln 2 each
    assert float(out["vfl"].detach()) == pytest.approx(6 * 0.75 * 0.25 * math.log(2), rel=1e-5)
    sum(out.values()).backward()
    assert boxes.grad is not None and logits.grad is not None
    halved = set_loss(logits, boxes, targets, [(empty, empty)] * 2, 2.0, SetLossWeights())
    assert float(halved["vfl"].detach()) == pytest.approx(float(out["vfl"].detach()) / 2)
