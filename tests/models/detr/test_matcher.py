"""Hungarian matcher: its cost against an independent formula (torchvision's GIoU), its
assignment against the brute-force optimum on small random cases, empty images included."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_convert, generalized_box_iou

from scaledet.models.detr.matcher import HungarianMatcher


def _random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    centre = torch.rand(n, 2, generator=g) * 0.8 + 0.1
    size = torch.rand(n, 2, generator=g) * 0.3 + 0.02
    return torch.cat([centre, size], dim=1)


def _reference_cost(m: HungarianMatcher, logits, boxes, gt_boxes, gt_labels):
    p = torch.sigmoid(logits.double())[:, gt_labels]
    pos = m.alpha * (1 - p) ** m.gamma * -torch.log(p + 1e-8)
    neg = (1 - m.alpha) * p ** m.gamma * -torch.log(1 - p + 1e-8)
    l1 = (boxes.double()[:, None] - gt_boxes.double()[None]).abs().sum(-1)
    giou = generalized_box_iou(box_convert(boxes.double(), "cxcywh", "xyxy"),
                               box_convert(gt_boxes.double(), "cxcywh", "xyxy"))
    return m.cost_class * (pos - neg) + m.cost_l1 * l1 - m.cost_giou * giou


def test_cost_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    m = HungarianMatcher()
    logits, boxes = torch.randn(7, 4, generator=g), _random_boxes(7, g)
    gt_boxes, gt_labels = _random_boxes(3, g), torch.tensor([0, 3, 3])
    ours = m.cost(logits, boxes, gt_boxes, gt_labels).double()
    torch.testing.assert_close(ours, _reference_cost(m, logits, boxes, gt_boxes, gt_labels),
                               rtol=1e-5, atol=1e-5)


def _brute_force(cost: torch.Tensor) -> float:
    q, n = cost.shape
    if n <= q:
        return min(sum(float(cost[r, c]) for c, r in enumerate(rows))
                   for rows in itertools.permutations(range(q), n))
    return min(sum(float(cost[r, c]) for r, c in enumerate(cols))
               for cols in itertools.permutations(range(n), q))


@settings(max_examples=40, deadline=None)
@given(q=st.integers(1, 6), counts=st.lists(st.integers(0, 4), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_total_cost_is_the_brute_force_optimum(q, counts, seed):
    g = torch.Generator().manual_seed(seed)
    m = HungarianMatcher()
    b, c = len(counts), 3
    logits, boxes = torch.randn(b, q, c, generator=g), torch.stack(
        [_random_boxes(q, g) for _ in range(b)])
    targets = [{"boxes": _random_boxes(n, g), "labels": torch.randint(0, c, (n,), generator=g)}
               for n in counts]
    for i, (rows, cols) in enumerate(m(logits, boxes, targets)):
        n = counts[i]
        assert len(rows) == len(cols) == min(q, n)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert cols.tolist() == sorted(cols.tolist())
        if n == 0:
            continue
        cost = m.cost(logits[i], boxes[i], targets[i]["boxes"], targets[i]["labels"]).double()
        ours = float(cost[rows, cols].sum())
        assert ours == pytest.approx(_brute_force(cost), rel=1e-9, abs=1e-9)


def test_obvious_case_matches_each_object_to_its_own_prediction():
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]]])
    logits = torch.full((1, 3, 2), -4.0)
    targets = [{"boxes": torch.tensor([[0.7, 0.7, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]),
                "labels": torch.tensor([1, 0])}]
    rows, cols = HungarianMatcher()(logits, boxes, targets)[0]
    assert rows.tolist() == [1, 0] and cols.tolist() == [0, 1]


def test_non_finite_costs_do_not_crash():
    logits = torch.tensor([[[float("nan"), 0.0], [0.0, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]])
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "labels": torch.tensor([0])}]
    rows, cols = HungarianMatcher()(logits, boxes, targets)[0]
    assert rows.tolist() == [1] and cols.tolist() == [0]
