"""``scaledet.losses.margin_logits`` / ``MarginSoftmax`` against an independent implementation,
``pytorch-metric-learning``'s ArcFaceLoss, CosFaceLoss and SphereFaceLoss, on random inputs.

Its conventions, mapped onto ours: its class weights ``W`` are ``(D, C)`` (ours ``(C, D)``:
copied transposed); ArcFaceLoss takes the margin in degrees; SphereFaceLoss multiplies the
logits by the embedding norm (unit embeddings here, so that is 1) and accepts integer margins
only (and its logits, times the norm, also pull along the embedding: the
gradients are compared along the sphere); its loss is the mean cross-entropy over the batch. Compared: the target logits (its
``modify_cosine_of_target_classes`` on its own cosines), the loss, and the gradients of the
loss with respect to the embeddings and the class weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml

from scaledet.losses import MarginSoftmax, margin_logits

N, C, D = 64, 10, 16


def _inputs(seed: int, spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, C, (N,), generator=g)
    return x * spread, y


def _pair(kind: str, s: float, m: float, seed: int):
    """Our head and theirs with the same (random) class weights."""
    if kind == "arcface":
        ours = MarginSoftmax(D, C, s=s, m1=1.0, m2=m, m3=0.0, fallback="threshold")
        theirs = pml.ArcFaceLoss(C, D, margin=math.degrees(m), scale=s)
    elif kind == "cosface":
        ours = MarginSoftmax(D, C, s=s, m1=1.0, m2=0.0, m3=m)
        theirs = pml.CosFaceLoss(C, D, margin=m, scale=s)
    else:
        ours = MarginSoftmax(D, C, s=s, m1=m, m2=0.0, m3=0.0, fallback="monotonic")
        theirs = pml.SphereFaceLoss(C, D, margin=int(m), scale=s)
    g = torch.Generator().manual_seed(1000 + seed)
    w = torch.randn(C, D, generator=g, dtype=torch.float64)
    ours = ours.double()
    with torch.no_grad():
        ours.weight.copy_(w)
        theirs.W.data = w.t().clone()
    return ours, theirs


CASES = [("arcface", 64.0, 0.5), ("arcface", 30.0, 1.2), ("cosface", 64.0, 0.35),
         ("cosface", 30.0, 0.2), ("sphereface", 30.0, 4.0), ("sphereface", 16.0, 2.0)]


@pytest.mark.parametrize(("kind", "s", "m"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_target_logits_loss_and_gradients_match(kind, s, m, seed):
    ours, theirs = _pair(kind, s, m, seed)
    x, y = _inputs(seed)
    # target logits: theirs from its own cosines
    cos = theirs.get_cosine(x)
    target = cos[torch.arange(N), y]
    expected = s * theirs.modify_cosine_of_target_classes(target)
    logits = margin_logits(ours.cosine(x), y, scale=s, m1=ours.m1, m2=ours.m2, m3=ours.m3,
                           fallback=ours.fallback)
    torch.testing.assert_close(logits[torch.arange(N), y], expected, rtol=1e-9, atol=1e-7)
    other = torch.ones_like(logits, dtype=torch.bool)
    other[torch.arange(N), y] = False
    torch.testing.assert_close(logits[other], s * cos[other], rtol=1e-9, atol=1e-9)
    # loss and gradients
    x1 = x.clone().requires_grad_(True)
    loss_ours = F.cross_entropy(ours(x1, y), y)
    loss_ours.backward()
    x2 = x.clone().requires_grad_(True)
    loss_theirs = theirs(x2, y)
    loss_theirs.backward()
    torch.testing.assert_close(loss_ours, loss_theirs, rtol=1e-9, atol=1e-9)
    grad = x2.grad
    if kind == "sphereface":  # its logits grow with the embedding norm: compare the gradient
        grad = grad - (grad * x).sum(1, keepdim=True) * x  # along the sphere (ours has no other)
    torch.testing.assert_close(x1.grad, grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ours.weight.grad, theirs.W.grad.t(), rtol=1e-6, atol=1e-9)


def test_arcface_threshold_branch_is_exercised():
    """With a large margin many targets pass θ + m > π, so both branches are compared."""
    _, theirs = _pair("arcface", 30.0, 1.2, 0)
    x, y = _inputs(0)
    theta = torch.acos(theirs.get_cosine(x)[torch.arange(N), y])
    assert (theta > math.pi - 1.2).any() and (theta <= math.pi - 1.2).any()


def test_embedding_norm_does_not_matter_for_arcface_and_cosface():
    """Both normalise the embeddings: a scaled batch gives the same loss on either side."""
    for kind, s, m in CASES[:4]:
        ours, theirs = _pair(kind, s, m, 3)
        x, y = _inputs(3, spread=7.5)
        torch.testing.assert_close(F.cross_entropy(ours(x, y), y), theirs(x, y), rtol=1e-9,
                                   atol=1e-9)
