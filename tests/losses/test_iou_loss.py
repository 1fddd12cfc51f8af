"""iou_loss: values, reductions, weights, finite gradients on degenerate boxes, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.losses import iou_loss
from scaledet.ops import IOU_KINDS, box_iou

T = torch.tensor


@pytest.mark.parametrize("kind", IOU_KINDS)
def test_is_one_minus_overlap(kind):
    pred = T([[0.0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 4, 4]])
    target = T([[1.0, 1, 3, 3], [2, 0, 3, 1], [1, 1, 3, 3]])
    expected = 1 - box_iou(pred, target, kind).diagonal()
    torch.testing.assert_close(iou_loss(pred, target, kind, reduction="none"), expected)
    torch.testing.assert_close(iou_loss(pred, target, kind, reduction="sum"), expected.sum())
    torch.testing.assert_close(iou_loss(pred, target, kind), expected.mean())


def test_hand_worked_giou_loss():
    # GIoU of (0,0,2,2) and (1,1,3,3) is 1/7 - 2/9 (see tests/ops/test_iou.py)
    loss = iou_loss(T([[0.0, 0, 2, 2]]), T([[1.0, 1, 3, 3]]), "giou", reduction="none")
    assert loss.item() == pytest.approx(1 - (1 / 7 - 2 / 9))


def test_weighted_mean():
    pred = T([[0.0, 0, 2, 2], [0, 0, 1, 1]])
    target = T([[1.0, 1, 3, 3], [0, 0, 1, 1]])
    per_box = iou_loss(pred, target, "iou", reduction="none")
    weight = T([3.0, 1.0])
    loss = iou_loss(pred, target, "iou", weight=weight)
    assert loss.item() == pytest.approx((3 * per_box[0] + per_box[1]).item() / 4)
    assert iou_loss(pred, target, "iou", reduction="sum", weight=weight).item() == pytest.approx(
        (3 * per_box[0] + per_box[1]).item())


def test_empty_mean_is_zero_and_differentiable():
    pred = torch.zeros(0, 4, requires_grad=True)
    loss = iou_loss(pred, torch.zeros(0, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad.shape == (0, 4)


def test_batched_shapes():
    pred, target = torch.rand(2, 5, 4), torch.rand(2, 5, 4)
    pred[..., 2:] += pred[..., :2]
    target[..., 2:] += target[..., :2]
    assert iou_loss(pred, target, reduction="none").shape == (2, 5)
    assert iou_loss(pred, target, weight=torch.rand(5)).shape == ()


DEGENERATE = [
    ([0.0, 0, 0, 5], [0.0, 0, 0, 5]),      # zero width, identical
    ([3.0, 3, 3, 3], [3.0, 3, 3, 3]),      # identical points
    ([3.0, 3, 3, 3], [5.0, 5, 5, 5]),      # distinct points
    ([0.0, 0, 1, 1], [0.0, 0, 1, 1]),      # identical boxes
    ([0.0, 0, 1, 1e-8], [0.0, 0, 1, 1e-8]),  # identical slivers: union below eps
    ([0.0, 0, 1, 1], [5.0, 5, 6, 6]),      # disjoint
    ([0.0, 0, 1, 1], [1.0, 0, 2, 1]),      # touching
    ([1e7, 1e7, 1e7 + 50, 1e7 + 80], [1e7 + 10, 1e7, 1e7 + 60, 1e7 + 70]),  # huge
    ([-3e30, 0, 3e30, 1e30], [0.0, 0, 1e30, 2e30]),  # huge, would overflow squared
    ([2.0, 2, 1, 1], [0.0, 0, 1, 1]),      # inverted prediction
]


@pytest.mark.parametrize("kind", IOU_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_degenerate_boxes_finite_values_and_gradients(kind, dtype):
    for p, t in DEGENERATE:
        if dtype in (torch.float16, torch.bfloat16) and max(map(abs, p + t)) > 6e4:
            continue  # not representable
        pred = T([p], dtype=dtype, requires_grad=True)
        target = T([t], dtype=dtype)
        loss = iou_loss(pred, target, kind)
        loss.backward()
        assert loss.dtype == dtype
        assert torch.isfinite(loss).all(), (kind, p, t)
        assert torch.isfinite(pred.grad).all(), (kind, p, t, pred.grad)
        assert pred.grad.abs().max() <= 10, (kind, p, t, pred.grad)  # no 1/eps blow-up
        assert loss.item() >= 0


def test_gradient_moves_prediction_towards_target():
    pred = T([[0.0, 0, 2, 2]], requires_grad=True)
    target = T([[5.0, 5, 7, 7]])
    for kind in ("giou", "diou", "ciou", "eiou"):  # plain IoU has no gradient when disjoint
        pred.grad = None
        iou_loss(pred, target, kind).backward()
        g = pred.grad[0]
        # translating the prediction right/down (towards the target) lowers the loss
        assert g[0] + g[2] < 0 and g[1] + g[3] < 0, (kind, g)


box = st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(0, 300), st.floats(0, 300))


@settings(max_examples=100, deadline=None)
@given(a=box, b=box, kind=st.sampled_from(IOU_KINDS))
def test_property_nonnegative_finite_gradients(a, b, kind):
    pred = T([[a[0], a[1], a[0] + a[2], a[1] + a[3]]], requires_grad=True)
    target = T([[b[0], b[1], b[0] + b[2], b[1] + b[3]]])
    loss = iou_loss(pred, target, kind, reduction="sum")
    loss.backward()
    assert loss.item() >= 0
    assert loss.item() <= (4 if kind == "eiou" else 3) + 1e-5
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(pred=torch.zeros(3, 4), target=torch.zeros(2, 4)), "same shape"),
    (dict(pred=torch.zeros(3, 5), target=torch.zeros(3, 5)), r"pred must have shape \(\.\.\., 4\)"),
    (dict(target=T([[0.0, 0, float("nan"), 1]] * 2)), "target contains 2 NaN or inf"),
    (dict(pred=T([[0.0, 0, float("inf"), 1]] * 2)), "pred contains 2 NaN or inf"),
    (dict(kind="wiou"), "kind must be one of"),
    (dict(reduction="avg"), "reduction must be one of"),
    (dict(weight=torch.ones(3)), r"weight must broadcast to the loss shape \(2,\)"),
    (dict(weight=T([1.0, float("nan")])), "weight contains NaN"),
])
def test_bad_input(kwargs, message):
    args = dict(pred=T([[0.0, 0, 1, 1]] * 2), target=T([[0.0, 0, 2, 2]] * 2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        iou_loss(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pred, target = torch.rand(64, 4), torch.rand(64, 4)
    pred[:, 2:] += pred[:, :2]
    target[:, 2:] += target[:, :2]
    for kind in IOU_KINDS:
        p = pred.cuda().requires_grad_()
        loss = iou_loss(p, target.cuda(), kind)
        loss.backward()
        q = pred.clone().requires_grad_()
        expected = iou_loss(q, target, kind)
        expected.backward()
        torch.testing.assert_close(loss.cpu(), expected)
        torch.testing.assert_close(p.grad.cpu(), q.grad)
