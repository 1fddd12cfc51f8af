"""Box formats, area, clipping, small-box removal, scaling."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.ops import (
    BOX_FORMATS,
    box_area,
    box_convert,
    check_boxes,
    clip_boxes,
    remove_small_boxes,
    scale_boxes,
)

T = torch.tensor
# one box in the three formats: corners (10, 20)-(40, 60), size 30 x 40, centre (25, 40)
SAME_BOX = dict(xyxy=[10.0, 20, 40, 60], xywh=[10.0, 20, 30, 40], cxcywh=[25.0, 40, 30, 40])


@pytest.mark.parametrize("in_fmt", BOX_FORMATS)
@pytest.mark.parametrize("out_fmt", BOX_FORMATS)
def test_convert_hand_worked(in_fmt, out_fmt):
    out = box_convert(T([SAME_BOX[in_fmt]]), in_fmt, out_fmt)
    assert out.tolist() == [SAME_BOX[out_fmt]]


def test_convert_keeps_leading_dims_and_dtype():
    boxes = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    out = box_convert(boxes, "xyxy", "cxcywh")
    assert out.shape == boxes.shape and out.dtype == torch.float64


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, width=32), min_size=4, max_size=4),
       st.sampled_from(BOX_FORMATS), st.sampled_from(BOX_FORMATS))
def test_convert_round_trip(values, fmt_a, fmt_b):
    boxes = T([values], dtype=torch.float64)
    back = box_convert(box_convert(boxes, fmt_a, fmt_b), fmt_b, fmt_a)
    torch.testing.assert_close(back, boxes, rtol=0, atol=1e-9)


@pytest.mark.parametrize("fmt", BOX_FORMATS)
def test_area(fmt):
    assert box_area(T([SAME_BOX[fmt]]), fmt).tolist() == [1200.0]
    assert box_area(torch.zeros(2, 3, 4)).shape == (2, 3)


def test_area_half_precision_is_upcast():
    area = box_area(T([[0, 0, 300, 300]], dtype=torch.float16))
    assert area.dtype == torch.float32 and area.item() == 90000.0


def test_clip():
    boxes = T([[-5.0, -5, 50, 50], [10, 10, 200, 90], [120, 5, 130, 8]])
    out = clip_boxes(boxes, size=(80, 100))  # (height, width)
    assert out.tolist() == [[0, 0, 50, 50], [10, 10, 100, 80], [100, 5, 100, 8]]
    assert clip_boxes(boxes.view(1, 3, 4), (80, 100)).shape == (1, 3, 4)
    assert boxes[0, 0] == -5  # input untouched


def test_remove_small_boxes():
    boxes = T([[0.0, 0, 10, 10], [0, 0, 1.9, 10], [0, 0, 10, 2], [5, 5, 5, 5]])
    assert remove_small_boxes(boxes, 2).tolist() == [0, 2]
    assert remove_small_boxes(boxes, 2).dtype == torch.int64


@pytest.mark.parametrize("fmt", BOX_FORMATS)
def test_scale_commutes_with_convert(fmt):
    xyxy = T([SAME_BOX["xyxy"]])
    scaled = scale_boxes(box_convert(xyxy, "xyxy", fmt), 0.5, 2.0)
    assert box_convert(scaled, fmt, "xyxy").tolist() == [[5.0, 40, 20, 120]]


def test_scale_integer_boxes():
    out = scale_boxes(T([[1, 2, 3, 4]]), 0.5, 0.5)
    assert out.dtype == torch.float32 and out.tolist() == [[0.5, 1, 1.5, 2]]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: box_convert(torch.zeros(3, 5), "xyxy", "xywh"), r"boxes must have shape \(\.\.\., 4\)"),
    (lambda: box_convert(torch.zeros(3, 4), "xyxy", "yolo"), "out_fmt must be one of"),
    (lambda: box_convert(torch.zeros(3, 4), "xxyy", "xyxy"), "in_fmt must be one of"),
    (lambda: box_area(torch.zeros(3, 4), "ltrb"), "fmt must be one of"),
    (lambda: clip_boxes(torch.zeros(3, 4), size=100), r"size must be \(height, width\)"),
    (lambda: clip_boxes(torch.zeros(3, 4), size=(-1, 5)), "size must be non-negative"),
    (lambda: remove_small_boxes(torch.zeros(2, 3, 4), 1), r"boxes must have shape \(N, 4\)"),
    (lambda: scale_boxes([[0, 0, 1, 1]], 1, 1), "boxes must be a torch.Tensor"),
    (lambda: check_boxes(T([[0, float("nan"), 1, 1]]), "gt"), "gt contains 1 NaN or inf"),
    (lambda: check_boxes(torch.zeros(2, 4, dtype=torch.bool)), "real-valued"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
