"""Assigners and the box coder on hand-built cases."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.models import ATSSAssigner, FCOSAssigner, PointDistanceCoder
from scaledet.models.heads.dense import make_points

INF = math.inf


def _grid(size=64, strides=(8, 16, 32)):
    shapes = [(size // s, size // s) for s in strides]
    return make_points(shapes, strides)


def test_make_points_centres_and_order():
    points, strides, sizes = make_points([(2, 3), (1, 2)], (8, 16))
    assert sizes == [6, 2]
    torch.testing.assert_close(points[:4], torch.tensor([[4.0, 4], [12, 4], [20, 4], [4, 12]]))
    torch.testing.assert_close(points[6:], torch.tensor([[8.0, 8], [24, 8]]))
    torch.testing.assert_close(strides, torch.tensor([8.0] * 6 + [16.0] * 2))


def test_fcos_points_inside_a_box_are_assigned():
    points, strides, sizes = _grid()
    assigner = FCOSAssigner(regress_ranges=((0, INF), (INF, INF), (INF, INF)),
                            center_sampling=False)
    box = torch.tensor([[10.0, 2.0, 30.0, 22.0]])
    matched = assigner(points, strides, sizes, box)
    inside = ((points[:, 0] > 10) & (points[:, 0] < 30) & (points[:, 1] > 2) & (points[:, 1] < 22))
    expected = torch.where(inside & (strides == 8), 0, -1)
    assert torch.equal(matched, expected)
    # stride-8 centres inside (10, 2, 30, 22): x in {12, 20, 28}, y in {4, 12, 20}
    assert int((matched == 0).sum()) == 9


def test_fcos_regression_ranges_pick_the_level():
    points, strides, sizes = _grid(size=128)
    assigner = FCOSAssigner(regress_ranges=((0, 16), (16, 40), (40, INF)), center_sampling=False)
    small = torch.tensor([[0.0, 0.0, 20.0, 20.0]])  # max side distance <= 16 only at stride 8
    big = torch.tensor([[0.0, 0.0, 120.0, 120.0]])
    m_small = assigner(points, strides, sizes, small)
    m_big = assigner(points, strides, sizes, big)
    assert set(strides[m_small == 0].tolist()) == {8.0}
    assert set(strides[m_big == 0].tolist()) == {32.0}  # every max distance >= 40 px
    for p, m in zip(points[m_big == 0], [0] * 100):
        ltrb = torch.cat([p - big[m, :2], big[m, 2:] - p])
        assert ltrb.max() >= 40


def test_fcos_center_sampling_radius():
    points, strides, sizes = _grid(size=128)
    box = torch.tensor([[0.0, 0.0, 120.0, 120.0]])  # centre (60, 60)
    open_ranges = ((0, INF), (INF, INF), (INF, INF))
    matched = FCOSAssigner(regress_ranges=open_ranges, radius=1.5)(points, strides, sizes, box)
    pos = points[matched == 0]
    # stride 8, radius 1.5 -> |x - 60| < 12: centres 52, 60, 68 on each axis (not 44, 76)
    assert sorted(set(pos[:, 0].tolist())) == [52.0, 60.0, 68.0]
    assert len(pos) == 9
    matched = FCOSAssigner(regress_ranges=open_ranges, radius=0.5)(points, strides, sizes, box)
    assert points[matched == 0].tolist() == [[60.0, 60.0]]  # |x - 60| < 4
    # the sampling region is clipped to the box: a thin box keeps only points inside it
    thin = torch.tensor([[57.0, 0.0, 62.0, 120.0]])
    matched = FCOSAssigner(regress_ranges=open_ranges, radius=1.5)(points, strides, sizes, thin)
    assert points[matched == 0][:, 0].unique().tolist() == [60.0]


def test_fcos_smallest_box_wins_and_empty_gt():
    points, strides, sizes = _grid()
    assigner = FCOSAssigner(regress_ranges=((0, INF), (INF, INF), (INF, INF)),
                            center_sampling=False)
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [16.0, 16.0, 32.0, 32.0]])
    matched = assigner(points, strides, sizes, boxes)
    inner = (points > 16).all(1) & (points < 32).all(1) & (strides == 8)
    assert (matched[inner] == 1).all() and inner.sum() == 4
    assert ((matched == 0) == ((strides == 8) & ~inner)).all()
    assert (assigner(points, strides, sizes, torch.zeros(0, 4)) == -1).all()


def _atss_reference(points, strides, sizes, boxes, topk, scale):
    """ATSS written per box and per level with Python loops."""
    best = [(-1.0, -1)] * len(points)
    for j, b in enumerate(boxes.tolist()):
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        cands, start = [], 0
        for n in sizes:
            d = [(math.hypot(points[i, 0] - cx, points[i, 1] - cy), i) for i in range(start, start + n)]
            cands += [i for _, i in sorted(d)[:topk]]
            start += n

        def iou(i, b=b):
            h = scale * strides[i].item() / 2
            a = [points[i, 0] - h, points[i, 1] - h, points[i, 0] + h, points[i, 1] + h]
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

        ious = [float(iou(i)) for i in cands]
        thr = float(torch.tensor(ious).mean() + torch.tensor(ious).std())
        for i, v in zip(cands, ious):
            x, y = points[i].tolist()
            if v >= thr and b[0] < x < b[2] and b[1] < y < b[3] and v > best[i][0]:
                best[i] = (v, j)
    return torch.tensor([j for _, j in best])


def test_atss_matches_loop_reference():
    points, strides, sizes = _grid(size=96)
    # centres chosen off the grid's symmetry lines, so no two locations tie in distance
    boxes = torch.tensor([[5.0, 7.2, 40.4, 30.0], [30.3, 20.0, 90.0, 94.1], [60.0, 2.5, 70.4, 12.0]])
    matched = ATSSAssigner(topk=5, min_one_positive=False)(points, strides, sizes, boxes)
    assert torch.equal(matched, _atss_reference(points, strides, sizes, boxes, 5, 8.0))
    assert set(matched.tolist()) == {-1, 0, 1, 2}  # every box gets positives
    assert (ATSSAssigner()(points, strides, sizes, torch.zeros(0, 4)) == -1).all()


def test_atss_tiny_box_between_locations_gets_one_positive():
    points, strides, sizes = _grid(size=64)
    tiny = torch.tensor([[13.0, 13.0, 18.5, 18.0], [40.0, 40.0, 60.0, 60.0]])  # no centre inside
    assert (ATSSAssigner(min_one_positive=False)(points, strides, sizes, tiny) != 0).all()
    matched = ATSSAssigner()(points, strides, sizes, tiny)
    # all nearby stride-8 anchors (64 px) contain the box, so their IoUs tie: nearest wins
    assert points[matched == 0].tolist() == [[12.0, 12.0]]
    assert (matched == 1).sum() > 0


def test_atss_positive_points_lie_inside_their_box():
    points, strides, sizes = _grid(size=128)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 4 + torch.rand(20, 2, generator=g) * 60], dim=1)
    matched = ATSSAssigner(min_one_positive=False)(points, strides, sizes, boxes)
    pos = matched >= 0
    b, p = boxes[matched[pos]], points[pos]
    assert ((p > b[:, :2]) & (p < b[:, 2:])).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=2),
       st.lists(st.floats(0.01, 30), min_size=4, max_size=4), st.sampled_from([8, 16, 32]))
def test_point_coder_round_trip(point, dist, stride):
    coder = PointDistanceCoder()
    p = torch.tensor([point], dtype=torch.float64)
    s = torch.tensor([float(stride)], dtype=torch.float64)
    d = torch.tensor([dist], dtype=torch.float64)
    boxes = coder.decode(p, d, s)
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    torch.testing.assert_close(coder.encode(p, boxes, s), d)
    torch.testing.assert_close(coder.decode(p, coder.encode(p, boxes, s), s), boxes)


def test_padded_batch_equals_image_by_image():
    points, strides, sizes = _grid(size=96)
    g = torch.Generator().manual_seed(3)
    images = []
    for n in (3, 0, 7):
        xy = torch.rand(n, 2, generator=g) * 70
        images.append(torch.cat([xy, xy + 3 + torch.rand(n, 2, generator=g) * 40], 1))
    padded = torch.zeros(3, 7, 4)
    valid = torch.zeros(3, 7, dtype=torch.bool)
    for i, boxes in enumerate(images):
        padded[i, : len(boxes)], valid[i, : len(boxes)] = boxes, True
    for assigner in (ATSSAssigner(), FCOSAssigner(regress_ranges=((0, 32), (32, 64), (64, INF)))):
        batched = assigner(points, strides, sizes, padded, valid)
        assert batched.shape == (3, len(points))
        for i, boxes in enumerate(images):
            assert torch.equal(batched[i], assigner(points, strides, sizes, boxes))
