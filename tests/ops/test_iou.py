"""box_iou: hand-worked values, torchvision equality, properties, shapes, dtypes, bad input."""

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.ops import IOU_KINDS, box_iou

T = torch.tensor


def _ciou_by_hand(iou, rho2, c2, wa, ha, wb, hb):
    v = 4 / math.pi**2 * (math.atan(wb / hb) - math.atan(wa / ha)) ** 2
    alpha = v / (1 - iou + v)
    return iou - rho2 / c2 - alpha * v


# (box a, box b, {kind: value}) worked out on paper in the comments
HAND = [
    # overlapping 2x2 squares: inter 1, union 7, enclosure 3x3 (area 9, diagonal^2 18),
    # centres (1,1), (2,2) -> rho^2 = 2; same sizes, so CIoU = EIoU = DIoU
    ([0, 0, 2, 2], [1, 1, 3, 3],
     dict(iou=1 / 7, giou=1 / 7 - 2 / 9, diou=1 / 7 - 2 / 18, ciou=1 / 7 - 2 / 18,
          eiou=1 / 7 - 2 / 18)),
    # disjoint unit squares 1 apart: union 2, enclosure 3x1, rho^2 = 4, c^2 = 10
    ([0, 0, 1, 1], [2, 0, 3, 1], dict(iou=0, giou=-1 / 3, diou=-0.4, ciou=-0.4, eiou=-0.4)),
    # nested: 2x2 inside 4x4, same centre: IoU 4/16; EIoU (2/4)^2 for w and for h
    ([0, 0, 4, 4], [1, 1, 3, 3], dict(iou=0.25, giou=0.25, diou=0.25, ciou=0.25, eiou=-0.25)),
    # identical
    ([1, 2, 5, 7], [1, 2, 5, 7], dict(iou=1, giou=1, diou=1, ciou=1, eiou=1)),
    # touching edge: union 2 = enclosure, rho^2 = 1, c^2 = 5
    ([0, 0, 1, 1], [1, 0, 2, 1], dict(iou=0, giou=0, diou=-0.2, ciou=-0.2, eiou=-0.2)),
    # 2x1 vs 1x2 sharing a corner: inter 1, union 3, enclosure 2x2, rho^2 = 0.5, c^2 = 8,
    # |w_a - w_b| = |h_a - h_b| = 1 over enclosure side 2
    ([0, 0, 2, 1], [0, 0, 1, 2],
     dict(iou=1 / 3, giou=1 / 3 - 1 / 4, diou=1 / 3 - 1 / 16,
          ciou=_ciou_by_hand(1 / 3, 0.5, 8, 2, 1, 1, 2), eiou=1 / 3 - 1 / 16 - 1 / 4 - 1 / 4)),
]


@pytest.mark.parametrize(("a", "b", "values"), HAND)
@pytest.mark.parametrize("kind", IOU_KINDS)
def test_hand_worked(a, b, values, kind):
    a, b = T([a], dtype=torch.float64), T([b], dtype=torch.float64)
    expected = T(values[kind], dtype=torch.float64)
    torch.testing.assert_close(box_iou(a, b, kind)[0, 0], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(box_iou(b, a, kind)[0, 0], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(box_iou(a[0], b[0], kind, aligned=True), expected,
                               rtol=0, atol=1e-12)


def random_boxes(n, generator, scale=100.0):
    xy = torch.rand(n, 2, generator=generator) * scale
    wh = torch.rand(n, 2, generator=generator) * scale / 2 + 0.5
    return torch.cat([xy, xy + wh], 1)


TORCHVISION = dict(iou=torchvision.ops.box_iou, giou=torchvision.ops.generalized_box_iou,
                   diou=torchvision.ops.distance_box_iou, ciou=torchvision.ops.complete_box_iou)


@pytest.mark.parametrize("kind", list(TORCHVISION))
def test_pairwise_equals_torchvision(kind):
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(200, g), random_boxes(150, g)
    torch.testing.assert_close(box_iou(a, b, kind), TORCHVISION[kind](a, b), rtol=0, atol=1e-5)
    # batched leading dimension
    a3, b3 = random_boxes(60, g).view(3, 20, 4), random_boxes(30, g).view(3, 10, 4)
    out = box_iou(a3, b3, kind)
    assert out.shape == (3, 20, 10)
    for i in range(3):
        torch.testing.assert_close(out[i], TORCHVISION[kind](a3[i], b3[i]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", IOU_KINDS)
def test_aligned_is_the_diagonal_and_broadcasts(kind):
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(50, g), random_boxes(50, g)
    diag = box_iou(a, b, kind).diagonal()
    torch.testing.assert_close(box_iou(a, b, kind, aligned=True), diag, rtol=0, atol=1e-6)
    batched = box_iou(a.view(5, 10, 4), b.view(5, 10, 4), kind, aligned=True)
    torch.testing.assert_close(batched, diag.view(5, 10), rtol=0, atol=1e-6)
    # aligned with broadcasting (N, 1, 4) x (1, M, 4) is the pairwise matrix
    torch.testing.assert_close(box_iou(a[:, None], b[None], kind, aligned=True),
                               box_iou(a, b, kind), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", IOU_KINDS)
def test_half_precision(dtype, kind):
    g = torch.Generator().manual_seed(2)
    a, b = random_boxes(40, g), random_boxes(30, g)
    ah, bh = a.to(dtype), b.to(dtype)
    out = box_iou(ah, bh, kind)
    assert out.dtype == dtype
    # computed in float32 from the rounded boxes: only the final rounding differs
    exact = box_iou(ah.float(), bh.float(), kind)
    torch.testing.assert_close(out.float(), exact, rtol=0, atol=1e-2)
    aligned = box_iou(ah[:30], bh, kind, aligned=True)
    assert aligned.dtype == dtype
    torch.testing.assert_close(aligned.float(), exact.diagonal(), rtol=0, atol=1e-2)


def test_large_coordinates_do_not_overflow_in_half_precision():
    a = T([[0, 0, 300, 300]], dtype=torch.float16)  # area 90000 > float16 max (65504)
    assert box_iou(a, a).item() == 1.0
    assert box_iou(a[0], a[0], "ciou", aligned=True).item() == 1.0


def test_integer_boxes_give_float32():
    out = box_iou(T([[0, 0, 2, 2]]), T([[1, 1, 3, 3]]))
    assert out.dtype == torch.float32 and out.item() == pytest.approx(1 / 7)


def test_degenerate_boxes_are_finite():
    point = T([[3.0, 3.0, 3.0, 3.0]])
    line = T([[0.0, 0.0, 0.0, 5.0]])
    unit = T([[0.0, 0.0, 1.0, 1.0]])
    inverted = T([[2.0, 2.0, 1.0, 1.0]])  # counts as empty
    for kind in IOU_KINDS:
        for a in (point, line, unit, inverted):
            for b in (point, line, unit, inverted):
                assert torch.isfinite(box_iou(a, b, kind)).all(), (kind, a, b)
                assert torch.isfinite(box_iou(a[0], b[0], kind, aligned=True)).all()
    assert box_iou(point, point).item() == 0.0  # empty boxes: IoU 0 by the eps policy


def test_huge_coordinates_aligned():
    a = T([[1e30, 1e30, 3e30, 3e30]])
    b = T([[2e30, 2e30, 4e30, 4e30]])
    for kind in IOU_KINDS:
        small = box_iou(a[0] / 1e30, b[0] / 1e30, kind, aligned=True)
        torch.testing.assert_close(box_iou(a[0], b[0], kind, aligned=True), small)


# ---- property tests ---------------------------------------------------------------------

coord = st.floats(-1000, 1000, allow_nan=False, width=64)
size = st.floats(0, 500, allow_nan=False, width=64)


@st.composite
def boxes_st(draw):
    x, y, w, h = draw(coord), draw(coord), draw(size), draw(size)
    return [x, y, x + w, y + h]


@settings(max_examples=150, deadline=None)
@given(a=boxes_st(), b=boxes_st(), shift=st.tuples(coord, coord))
def test_properties(a, b, shift):
    a, b = T(a, dtype=torch.float64), T(b, dtype=torch.float64)
    t = T([shift[0], shift[1], shift[0], shift[1]], dtype=torch.float64)
    values = {k: box_iou(a, b, k, aligned=True).item() for k in IOU_KINDS}
    # translation invariance holds where the shift keeps every coordinate difference exact
    # (a 4e-131 px tall box shifted by 1 px becomes 0 px tall in float64: another geometry)
    coords = torch.stack([a, b]).reshape(4, 2)  # x1 y1 / x2 y2 of a, then of b
    moved_coords = torch.stack([a + t, b + t]).reshape(4, 2)
    exact_shift = torch.equal(moved_coords[:, None] - moved_coords[None], coords[:, None] - coords[None])
    assert 0 <= values["iou"] <= 1
    assert -1 <= values["giou"] <= values["iou"] + 1e-12
    assert -1 <= values["diou"] <= values["iou"] + 1e-12
    assert -2 <= values["ciou"] <= values["diou"] + 1e-12
    assert -3 <= values["eiou"] <= values["diou"] + 1e-12
    for kind, value in values.items():
        assert box_iou(b, a, kind, aligned=True).item() == pytest.approx(value, abs=1e-9)
        if exact_shift:
            moved = box_iou(a + t, b + t, kind, aligned=True).item()
            assert moved == pytest.approx(value, abs=1e-6), kind
        if min(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]) >= 1:
            # the eps clamps are relative (aligned) vs absolute (pairwise): equal unless tiny
            pairwise = box_iou(a[None], b[None], kind)[0, 0].item()
            assert pairwise == pytest.approx(value, abs=1e-6), kind


# ---- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b", "kwargs", "message"), [
    (torch.zeros(3, 5), torch.zeros(2, 4), {}, r"boxes1 must have shape \(\.\.\., 4\)"),
    (torch.zeros(3, 4), torch.zeros(2, 3), {}, r"boxes2 must have shape \(\.\.\., 4\)"),
    (torch.zeros(4), torch.zeros(2, 4), {}, "pairwise box_iou needs boxes1"),
    (torch.zeros(3, 4), torch.zeros(2, 4), dict(aligned=True), "broadcastable shapes"),
    (torch.zeros(2, 3, 4), torch.zeros(3, 2, 4), {}, "leading dimensions"),
    (T([[0, 0, float("nan"), 1]]), torch.zeros(2, 4), {}, "boxes1 contains 1 NaN or inf"),
    (torch.zeros(2, 4), T([[0, 0, float("inf"), 1]]), {}, "boxes2 contains 1 NaN or inf"),
    (torch.zeros(2, 4), torch.zeros(2, 4), dict(kind="siou"), "kind must be one of"),
    ([[0, 0, 1, 1]], torch.zeros(2, 4), {}, "boxes1 must be a torch.Tensor"),
])
def test_bad_input(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        box_iou(a, b, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(3)
    a, b = random_boxes(64, g).to(dtype), random_boxes(32, g).to(dtype)
    for kind in IOU_KINDS:
        out = box_iou(a.cuda(), b.cuda(), kind)
        assert out.dtype == dtype and out.is_cuda
        torch.testing.assert_close(out.cpu().float(), box_iou(a, b, kind).float(),
                                   rtol=0, atol=1e-2 if dtype != torch.float32 else 1e-5)
