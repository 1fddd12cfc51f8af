"""YOLOX head and SimOTA: the assigner against a brute-force pure-Python SimOTA, the
classification cost against the explicit BCE, hand-worked dynamic k and conflicts, decoding."""

import math

import pytest
import torch
import torch.nn.functional as F

from scaledet.models import SimOTAAssigner, YOLOXHead, build
from scaledet.models.heads.dense import make_points
from tests.models.reference import pair_iou as _iou


def _bce(q, t):
    return -(t * max(math.log(q) if q > 0 else -math.inf, -100)
             + (1 - t) * max(math.log(1 - q) if q < 1 else -math.inf, -100))


def _reference_simota(points, strides, gt, labels, pred, scores, radius=2.5, topk=10, w=3.0):
    """YOLOX's SimOTA written out with loops over locations and ground truths."""
    P, N = len(points), len(gt)
    in_box = [[min(px - b[0], py - b[1], b[2] - px, b[3] - py) > 0 for b in gt]
              for px, py in points]
    in_centre = [[abs(px - (b[0] + b[2]) / 2) < radius * s and abs(py - (b[1] + b[3]) / 2) < radius * s
                  for b in gt] for (px, py), s in zip(points, strides)]
    cands = [i for i in range(P) if any(in_box[i][j] or in_centre[i][j] for j in range(N))]
    iou = {(i, j): _iou(pred[i], gt[j]) for i in cands for j in range(N)}

    def cost(i, j):
        cls = sum(_bce(math.sqrt(s), float(c == labels[j])) for c, s in enumerate(scores[i]))
        geometry = 0.0 if in_box[i][j] and in_centre[i][j] else 1e5
        return cls + w * -math.log(iou[i, j] + 1e-8) + geometry

    chosen = {}
    for j in range(N):
        best = sorted((iou[i, j] for i in cands), reverse=True)[:min(topk, len(cands))]
        k = max(1, int(sum(best)))
        for i in sorted(cands, key=lambda i: cost(i, j))[:k]:
            chosen.setdefault(i, []).append(j)
    matched, matched_iou = [-1] * P, [0.0] * P
    for i, js in chosen.items():
        j = js[0] if len(js) == 1 else min(range(N), key=lambda j: cost(i, j))
        matched[i], matched_iou[i] = j, iou[i, j]
    return matched, matched_iou


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simota_matches_brute_force_reference(seed):
    g = torch.Generator().manual_seed(seed)
    points, strides, _ = make_points([(16, 16), (8, 8), (4, 4)], (8, 16, 32))
    xy = torch.rand(5, 2, generator=g) * 70
    gt = torch.cat([xy, xy + 40 + torch.rand(5, 2, generator=g) * 50], 1)  # overlapping boxes
    labels = torch.randint(0, 3, (5,), generator=g)
    size = 10 + torch.rand(len(points), 2, generator=g) * 70
    pred = torch.cat([points - size / 2, points + size / 2], 1)
    scores = torch.rand(len(points), 3, generator=g)
    matched, iou = SimOTAAssigner()(points, strides, gt, labels, pred, scores)
    ref_matched, ref_iou = _reference_simota(points.tolist(), strides.tolist(), gt.tolist(),
                                             labels.tolist(), pred.tolist(), scores.tolist())
    assert matched.tolist() == ref_matched
    torch.testing.assert_close(iou, torch.tensor(ref_iou), rtol=1e-5, atol=1e-6)
    assert 5 <= int((matched >= 0).sum()) <= 50  # every box got at least one, at most 10 each


def test_classification_cost_equals_explicit_bce_sum():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(7, 4, generator=g)
    scores[0, 0], scores[1, 2] = 0.0, 1.0  # log(0): clamped at -100 as in PyTorch's BCE
    labels = torch.tensor([0, 2, 3, 0, 1])
    one_hot = F.one_hot(labels, 4).float()
    q = scores.sqrt()[:, None].expand(7, 5, 4)
    expected = F.binary_cross_entropy(q, one_hot[None].expand(7, 5, 4), reduction="none").sum(-1)
    torch.testing.assert_close(SimOTAAssigner.classification_cost(scores, labels), expected)


def test_dynamic_k_hand_worked():
    """Three candidates with predicted IoUs 1.0, 0.6, 0.5 -> k = int(2.1) = 2: the two best
    (equal class scores, so the IoU cost decides); the far location is not a candidate."""
    gt = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    points = torch.tensor([[28.0, 28.0], [36.0, 28.0], [28.0, 36.0], [100.0, 100.0]])
    pred = torch.tensor([[0.0, 0.0, 64.0, 38.4], [0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 32.0, 64.0],
                         [0.0, 0.0, 64.0, 64.0]])
    matched, iou = SimOTAAssigner()(points, torch.full((4,), 8.0), gt, torch.tensor([0]), pred,
                                    torch.full((4, 2), 0.5))
    assert matched.tolist() == [0, 0, -1, -1]
    torch.testing.assert_close(iou, torch.tensor([0.6, 1.0, 0.0, 0.0]))


def test_location_wanted_by_two_boxes_goes_to_the_cheaper():
    gt = torch.tensor([[0.0, 0.0, 64.0, 64.0], [16.0, 16.0, 80.0, 80.0]])
    point = torch.tensor([[40.0, 40.0]])
    pred = gt[1:].clone()  # IoU 1 with box 1, 2304 / 5888 with box 0
    matched, iou = SimOTAAssigner()(point, torch.tensor([8.0]), gt, torch.tensor([1, 1]), pred,
                                    torch.full((1, 2), 0.3))
    assert matched.tolist() == [1] and iou.tolist() == [1.0]


def test_no_boxes_or_no_candidates_give_background():
    a = SimOTAAssigner()
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0]])
    empty = a(points, torch.full((2,), 8.0), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
              torch.zeros(2, 4), torch.rand(2, 2))
    far = a(points, torch.full((2,), 8.0), torch.tensor([[200.0, 200.0, 210.0, 210.0]]),
            torch.tensor([0]), torch.zeros(2, 4), torch.rand(2, 2))
    for matched, iou in (empty, far):
        assert matched.tolist() == [-1, -1] and iou.tolist() == [0.0, 0.0]


def test_decode_and_scores():
    head = YOLOXHead(num_classes=2, in_channels=8, strides=(8, 16), num_convs=1)
    cls = [torch.full((1, 2, 2, 2), 0.5), torch.full((1, 2, 1, 1), -1.0)]
    reg = [torch.zeros(1, 5, 2, 2), torch.zeros(1, 5, 1, 1)]
    reg[0][0, :, 0, 1] = torch.tensor([0.5, -0.25, math.log(3), 0.0, 2.0])
    boxes, scores, sizes = head.predict(cls, reg)
    assert sizes == [4, 1]
    # location (row 0, col 1) of stride 8 is centred at (12, 4): centre (16, 2), size 24 x 8
    torch.testing.assert_close(boxes[0, 1], torch.tensor([4.0, -2.0, 28.0, 6.0]))
    torch.testing.assert_close(boxes[0, 4], torch.tensor([0.0, 0.0, 16.0, 16.0]))  # side = stride
    torch.testing.assert_close(scores[0, 1], torch.sigmoid(torch.tensor(0.5)) * torch.sigmoid(
        torch.tensor(2.0)).expand(2))
    torch.testing.assert_close(scores[0, 4], torch.full((2,), 0.5 * torch.sigmoid(torch.tensor(-1.0))))


def test_yolo_preset_and_config_errors():
    model = build("yolo-n", num_classes=3)
    assert isinstance(model.head, YOLOXHead) and model.head.box_loss == "ciou"
    assert model.head.assigner.center_radius == 2.5
    with pytest.raises(ValueError, match="head.assigner: unknown kind 'atss'; valid: \\['simota'\\]"):
        build("yolo-n", num_classes=3, head={"assigner": "atss"})
    with pytest.raises(ValueError, match="head: unknown kind 'retina'; valid: "):
        build("yolo-n", num_classes=3, head={"kind": "retina"})


def test_crowd_regions_get_no_negative_objectness_loss():
    """Non-positive locations inside an ``ignore`` region give their objectness no gradient;
    the classification and box losses (positives only) do not change."""
    torch.manual_seed(0)
    head = YOLOXHead(num_classes=2, in_channels=8, strides=(8, 16), num_convs=1)
    cls = [torch.randn(2, 2, 8, 8), torch.randn(2, 2, 4, 4)]
    reg = [(torch.randn(2, 5, s, s) * 0.5).requires_grad_(True) for s in (8, 4)]
    targets = [{"boxes": torch.tensor([[36.0, 36.0, 60.0, 60.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[4.0, 40.0, 30.0, 62.0]]), "labels": torch.tensor([0])}]
    region = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    ignored = [dict(t, ignore=region) for t in targets]
    plain = head.loss(cls, reg, targets)
    again = head.loss(cls, reg, ignored)
    grads = torch.autograd.grad(again["loss_obj"], reg)
    g_obj = torch.cat([g[:, 4].flatten(1) for g in grads], dim=1).abs()  # (B, P)
    points, _, _ = head.points(cls)
    inside = ((points[:, 0] > 0) & (points[:, 0] < 40) & (points[:, 1] > 0)
              & (points[:, 1] < 40))
    plain_grads = torch.autograd.grad(plain["loss_obj"], reg)
    positive = torch.cat([g[:, 4].flatten(1) for g in plain_grads], dim=1) < 0  # target 1
    dropped = inside[None] & ~positive
    assert dropped.any() and (g_obj[dropped] == 0).all() and (g_obj[~dropped] > 0).all()
    assert again["loss_obj"] < plain["loss_obj"]
    for key in ("loss_cls", "loss_box"):
        torch.testing.assert_close(again[key], plain[key])
