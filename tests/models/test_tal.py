"""Task-aligned assigner against a brute-force loop and hand-built cases."""

import math

import torch

from scaledet.models import build
from scaledet.models.heads.dense import make_points
from scaledet.models.tal import TaskAlignedAssigner
from tests.models.reference import pair_iou as _iou


def _brute_force(points, gt_boxes, gt_labels, gt_valid, pred_boxes, pred_scores, topk, alpha, beta):
    """TOOD's rule, one image and one box at a time (no orphan rescue: the test boxes all
    contain location centres)."""
    b_, p_ = pred_boxes.shape[:2]
    matched = [[-1] * p_ for _ in range(b_)]
    target = [[0.0] * p_ for _ in range(b_)]
    for b in range(b_):
        chosen = {}  # location -> list of (gt, iou, align)
        for n in range(gt_boxes.shape[1]):
            if not gt_valid[b, n]:
                continue
            g = gt_boxes[b, n].tolist()
            rows = []
            for p in range(p_):
                x, y = points[p].tolist()
                if not (g[0] < x < g[2] and g[1] < y < g[3]):
                    continue
                u = _iou(pred_boxes[b, p].tolist(), g)
                s = float(pred_scores[b, p, gt_labels[b, n]])
                rows.append((s ** alpha * u ** beta, p, u))
            rows.sort(key=lambda r: -r[0])
            for align, p, u in rows[:topk]:
                chosen.setdefault(p, []).append((n, u, align))
        per_gt = {}
        for p, options in chosen.items():
            n, u, align = max(options, key=lambda o: o[1])
            matched[b][p] = n
            per_gt.setdefault(n, []).append((p, u, align))
        for rows in per_gt.values():
            max_u, max_a = max(r[1] for r in rows), max(r[2] for r in rows)
            for p, _u, align in rows:
                target[b][p] = align / max(max_a, 1e-9) * max_u
    return torch.tensor(matched), torch.tensor(target)


def test_matches_brute_force_on_random_batches():
    g = torch.Generator().manual_seed(0)
    points, _, _ = make_points([(8, 8), (4, 4)], [8, 16])
    for trial in range(5):
        b, n, c = 3, 4, 5
        xy = torch.rand(b, n, 2, generator=g) * 40
        gt_boxes = torch.cat([xy, xy + 12 + torch.rand(b, n, 2, generator=g) * 40], -1)
        gt_labels = torch.randint(0, c, (b, n), generator=g)
        gt_valid = torch.rand(b, n, generator=g) > 0.2
        centre = points[None] + torch.randn(b, len(points), 2, generator=g) * 3
        half = 4 + torch.rand(b, len(points), 2, generator=g) * 20
        pred_boxes = torch.cat([centre - half, centre + half], -1)
        pred_scores = torch.rand(b, len(points), c, generator=g)
        assigner = TaskAlignedAssigner(topk=5, alpha=1.0, beta=6.0, min_one_positive=False)
        matched, target = assigner(points, gt_boxes, gt_labels, gt_valid, pred_boxes, pred_scores)
        ref_matched, ref_target = _brute_force(points, gt_boxes, gt_labels, gt_valid, pred_boxes,
                                               pred_scores, 5, 1.0, 6.0)
        assert torch.equal(matched, ref_matched), trial
        torch.testing.assert_close(target, ref_target.float(), rtol=1e-4, atol=1e-7)


def test_best_aligned_location_gets_the_best_iou_as_target():
    points, _, _ = make_points([(4, 4)], [8])  # centres at 4, 12, 20, 28
    gt = torch.tensor([[[0.0, 0.0, 24.0, 24.0]]])
    pred = torch.tensor([[0.0, 0.0, 24.0, 24.0]]).repeat(16, 1)[None].clone()
    pred[0, 5] = torch.tensor([0.0, 0.0, 12.0, 24.0])  # IoU 0.5
    scores = torch.full((1, 16, 2), 0.5)
    scores[0, 0, 1] = 0.9  # location 0 (inside): best score, perfect box
    matched, target = TaskAlignedAssigner(topk=3)(points, gt, torch.tensor([[1]]),
                                                  torch.tensor([[True]]), pred, scores)
    assert matched[0, 0] == 0 and math.isclose(target[0, 0].item(), 1.0, rel_tol=1e-6)
    inside = [0, 1, 2, 4, 5, 6, 8, 9, 10]  # centres 4, 12, 20 in x and y
    assert set((matched[0] >= 0).nonzero().squeeze(1).tolist()) <= set(inside)
    assert int((matched[0] == 0).sum()) == 3 and matched[0, 5] == -1  # the worse box lost
    others = target[0][(matched[0] == 0) & (torch.arange(16) != 0)]  # two of the tied ones
    torch.testing.assert_close(others, torch.full((2,), 0.5 / 0.9))  # (0.5 * 1) / 0.9 * 1


def test_tiny_box_without_a_location_centre_gets_the_nearest_and_padding_none():
    points, _, _ = make_points([(4, 4)], [8])
    gt = torch.tensor([[[9.0, 9.0, 11.0, 11.0], [0.0, 0.0, 30.0, 30.0]]])  # 2x2 px, padding
    pred = torch.tensor([[8.0, 8.0, 12.0, 12.0]]).repeat(16, 1)[None]
    matched, target = TaskAlignedAssigner(topk=4)(points, gt, torch.tensor([[0, 1]]),
                                                  torch.tensor([[True, False]]), pred,
                                                  torch.full((1, 16, 2), 0.3))
    assert matched[0].tolist() == [-1] * 5 + [0] + [-1] * 10  # (12, 12) is nearest to (10, 10)
    assert target[0, 5] > 0


def test_fcos_head_trains_with_tal_and_empty_images():
    torch.manual_seed(0)
    model = build("fcos-n", num_classes=3, head={"assigner": "tal", "reg_max": 8})
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model.train()(torch.rand(2, 3, 96, 128), targets)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_cls"] > 0
    losses["loss"].backward()
    empty = model(torch.rand(2, 3, 64, 64), [targets[1], targets[1]])
    assert torch.isfinite(empty["loss"]) and empty["loss_box"] == 0
