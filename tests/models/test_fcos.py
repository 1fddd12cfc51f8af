"""FCOS head losses: how positives are weighted (``box_weighting``) in the box and distribution
losses, checked against the losses written out by hand from the per-positive terms."""

import pytest
import torch

from scaledet.losses.distribution import distribution_focal_loss
from scaledet.losses.iou_loss import iou_loss
from scaledet.models import build
from scaledet.models.heads.dense import flatten_levels, pad_targets
from scaledet.models.heads.fcos import FCOSHead
from tests.models.reference import pair_iou


def _head_and_inputs(weighting: str):
    torch.manual_seed(0)
    model = build("fcos-n", num_classes=3, head={"box_weighting": weighting}).train()
    images = torch.rand(3, 3, 96, 96)
    # A large box (many positives) and a tiny one (one or two); an image without boxes; one
    # whose box has the same index as the first image's (a different object all the same).
    targets = [{"boxes": torch.tensor([[8.0, 10.0, 80.0, 70.0], [50.0, 75.0, 56.0, 81.0]]),
                "labels": torch.tensor([0, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
               {"boxes": torch.tensor([[20.0, 30.0, 60.0, 58.0]]), "labels": torch.tensor([1])}]
    with torch.no_grad():
        cls_maps, reg_maps = model.head(model.features(images))
    return model.head, cls_maps, reg_maps, targets


@pytest.mark.parametrize("weighting", ["iou", "uniform", "object", "balanced"])
def test_box_loss_weighting_matches_hand_written_loss(weighting):
    head, cls_maps, reg_maps, targets = _head_and_inputs(weighting)
    losses = head.loss(cls_maps, reg_maps, targets)
    # Recompute: positives, their IoUs and their objects, then the weighted mean by hand.
    points, strides, sizes = head.points(cls_maps)
    boxes = head.decode(points, strides, flatten_levels(reg_maps))
    gt_boxes, gt_labels, gt_valid = pad_targets(targets)
    matched = head.assigner.assign(points, strides, sizes, gt_boxes, gt_labels, gt_valid, boxes,
                                   boxes.new_zeros(*boxes.shape[:2], 1)).matched
    reg = flatten_levels(reg_maps)
    total, dfl_total, norm, per_object, sums = 0.0, 0.0, 0.0, {}, []
    for b, p in (matched >= 0).nonzero().tolist():
        per_object.setdefault((b, int(matched[b, p])), []).append(p)
    assert len(per_object) == 3 and max(len(v) for v in per_object.values()) > 2
    for (b, j), positives in per_object.items():
        ious = [max(pair_iou(boxes[b, p].tolist(), gt_boxes[b, j].tolist()), 1e-6)
                for p in positives]
        sums.append(sum(ious))
        for p, iou in zip(positives, ious):
            term = float(iou_loss(boxes[b, p][None], gt_boxes[b, j][None], "giou", reduction="sum"))
            w = {"iou": iou, "uniform": 1.0, "object": 1.0 / len(positives),
                 "balanced": iou / min(1.0, sum(ious))}[weighting]
            target = head.coder.encode(points[p][None], gt_boxes[b, j][None], strides[p][None])
            dfl = distribution_focal_loss(reg[b, p].unflatten(-1, (4, head.reg_max + 1))[None],
                                          target)
            total, norm = total + w * term, norm + w
            dfl_total += w * float(dfl.mean())
    expected = head.box_loss_weight * total / max(norm, 1.0)
    assert float(losses["loss_box"]) == pytest.approx(expected, rel=1e-4)
    # The distribution focal loss takes the same weights.
    expected_dfl = head.dfl_weight * dfl_total / max(norm, 1.0)
    assert float(losses["loss_dfl"]) == pytest.approx(expected_dfl, rel=1e-4)
    if weighting == "object":  # every object's positives sum to weight 1
        assert norm == pytest.approx(3.0)
    if weighting == "balanced":  # both branches: the large object's IoUs sum past 1, the tiny one's not
        assert min(sums) < 1.0 < max(sums)


def test_unknown_box_weighting_is_rejected():
    with pytest.raises(ValueError, match="box_weighting"):
        FCOSHead(num_classes=2, in_channels=16, box_weighting="area")



def test_ignore_weight_by_hand():
    from scaledet.models.heads.dense import ignore_weight

    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 20.0], [28.0, 4.0]])
    targets = [{"ignore": torch.tensor([[0.0, 0.0, 16.0, 8.0]])},  # holds points 0 and 1
               {"ignore": torch.zeros(0, 4)},
               {}]
    positive = torch.tensor([[False, True, False, False]]).expand(3, 4)
    w = ignore_weight(points, targets, positive)
    assert w.shape == (3, 4, 1)
    assert w[..., 0].tolist() == [[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]  # positive 1 stays
    assert ignore_weight(points, [{}, {"ignore": torch.zeros(0, 4)}], positive[:2]) is None


def test_crowd_regions_get_no_negative_loss():
    """Locations inside an ``ignore`` region that are not positives contribute nothing: their
    logits get no gradient, and the loss drops by exactly their negative terms."""
    head, cls_maps, reg_maps, targets = _head_and_inputs("iou")
    cls_maps = [m.clone().requires_grad_(True) for m in cls_maps]
    region = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    ignored = [dict(t, ignore=region) for t in targets]
    plain = head.loss(cls_maps, reg_maps, targets)
    grads = torch.autograd.grad(head.loss(cls_maps, reg_maps, ignored)["loss_cls"], cls_maps)
    points, strides, sizes = head.points(cls_maps)
    gt_boxes, gt_labels, gt_valid = pad_targets(targets)
    boxes = head.decode(points, strides, flatten_levels(reg_maps))
    positive = head.assigner.assign(points, strides, sizes, gt_boxes, gt_labels, gt_valid, boxes,
                                    boxes.new_zeros(*boxes.shape[:2], 1)).matched >= 0
    inside = ((points[:, 0] > 0) & (points[:, 0] < 40) & (points[:, 1] > 0)
              & (points[:, 1] < 40))
    g = flatten_levels(grads).abs().sum(-1)  # (B, P)
    dropped = inside[None] & ~positive
    assert dropped.any() and (g[dropped] == 0).all()
    assert (g[~dropped] > 0).all()
    again = head.loss(cls_maps, reg_maps, ignored)
    assert again["loss_cls"] < plain["loss_cls"]
    torch.testing.assert_close(again["loss_box"], plain["loss_box"])
