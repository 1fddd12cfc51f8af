"""CenterNet: penalty-reduced focal loss vs its formula, TTFNet Gaussian targets vs a
brute-force loop, decoding as the exact inverse of the targets, peak extraction without NMS."""

import math

import pytest
import torch

from scaledet.losses import penalty_reduced_focal_loss
from scaledet.models import CenterNetHead, build
from scaledet.models.heads.centernet import centernet_targets, heatmap_peaks
from scaledet.models.heads.dense import PostProcess, postprocess


def _reference_focal(logits, targets, alpha=2.0, beta=4.0):
    total = 0.0
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        p = 1 / (1 + math.exp(-x))
        if y == 1:
            total += -((1 - p) ** alpha) * math.log(p)
        else:
            total += -((1 - y) ** beta) * p ** alpha * math.log(1 - p)
    return total


def test_penalty_reduced_focal_loss_hand_worked():
    # logit 0 -> p = 1/2: a peak costs (1/2)^2 ln 2; Y = 1/2 costs (1/2)^4 (1/2)^2 ln 2.
    loss = penalty_reduced_focal_loss(torch.zeros(3), torch.tensor([1.0, 0.5, 0.0]),
                                      reduction="none")
    ln2 = math.log(2)
    torch.testing.assert_close(loss, torch.tensor([ln2 / 4, ln2 / 64, ln2 / 4]))


def test_penalty_reduced_focal_loss_matches_formula_and_stays_finite():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64) * 3
    targets = torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64)
    targets[targets > 0.9] = 1.0
    for alpha, beta in ((2.0, 4.0), (1.0, 2.0)):
        got = penalty_reduced_focal_loss(logits, targets, alpha, beta)
        assert got.item() == pytest.approx(_reference_focal(logits, targets, alpha, beta), rel=1e-9)
    mean = penalty_reduced_focal_loss(logits, targets, reduction="mean")
    assert mean.item() == pytest.approx(_reference_focal(logits, targets) / logits.numel(), rel=1e-9)
    extreme = penalty_reduced_focal_loss(torch.tensor([200.0, -200.0]), torch.tensor([1.0, 0.0]))
    assert extreme.item() == 0.0  # confident and right: no loss, no log(0)
    with pytest.raises(ValueError, match="same shape"):
        penalty_reduced_focal_loss(torch.zeros(3), torch.zeros(4))


def _reference_targets(boxes, labels, num_classes, h, w, stride, alpha):
    heat = [[[0.0] * w for _ in range(h)] for _ in range(num_classes)]
    for (x1, y1, x2, y2), c in zip(boxes.tolist(), labels.tolist()):
        cx = min(max(math.floor((x1 + x2) / 2 / stride), 0), w - 1)
        cy = min(max(math.floor((y1 + y2) / 2 / stride), 0), h - 1)
        rx, ry = math.floor(alpha * (x2 - x1) / stride / 2), math.floor(alpha * (y2 - y1) / stride / 2)
        sx, sy = (2 * rx + 1) / 6, (2 * ry + 1) / 6
        for y in range(h):
            for x in range(w):
                if abs(x - cx) <= rx and abs(y - cy) <= ry:
                    v = math.exp(-((x - cx) ** 2 / (2 * sx * sx) + (y - cy) ** 2 / (2 * sy * sy)))
                    heat[c][y][x] = max(heat[c][y][x], v)
    return torch.tensor(heat)


def test_gaussian_targets_match_a_brute_force_loop():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(12, 2, generator=g) * 100 - 10  # some centres fall outside the map
    wh = torch.rand(12, 2, generator=g) * 60 + 0.5
    boxes = torch.cat([xy, xy + wh], 1)
    labels = torch.randint(0, 3, (12,), generator=g)
    heatmap, _, _ = centernet_targets(boxes, labels, 3, (24, 20), 4, alpha=0.54)
    torch.testing.assert_close(heatmap, _reference_targets(boxes, labels, 3, 24, 20, 4, 0.54))


def test_gaussian_is_elliptical_truncated_and_peaks_at_one():
    # 40x20 px at stride 4 = 10x5 cells: radii floor(0.54*10/2)=2, floor(0.54*5/2)=1
    boxes = torch.tensor([[20.0, 40.0, 60.0, 60.0]])
    heatmap, index, reg = centernet_targets(boxes, torch.tensor([1]), 2, (32, 32), 4)
    assert heatmap[0].sum() == 0
    nonzero = (heatmap[1] > 0).nonzero()
    assert nonzero[:, 0].unique().tolist() == [11, 12, 13]  # rows (y): centre 12 +- 1
    assert nonzero[:, 1].unique().tolist() == [8, 9, 10, 11, 12]  # cols (x): centre 10 +- 2
    assert heatmap[1, 12, 10] == 1 and (heatmap == 1).sum() == 1
    assert index.tolist() == [12 * 32 + 10]
    torch.testing.assert_close(reg, torch.tensor([[0.0, 0.5, 10.0, 5.0]]))


def test_shared_centre_cell_goes_to_the_smaller_box():
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [16.0, 16.0, 24.0, 24.0], [60.0, 0.0, 70.0, 9.0]])
    _, index, reg = centernet_targets(boxes, torch.tensor([0, 1, 0]), 2, (16, 32), 4)
    assert index.tolist() == [1 * 32 + 16, 5 * 32 + 5]  # sorted cells
    torch.testing.assert_close(reg[1], torch.tensor([0.0, 0.0, 2.0, 2.0]))
    empty = centernet_targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 2, (4, 4), 4)
    assert empty[0].sum() == 0 and empty[1].numel() == 0 and empty[2].shape == (0, 4)


def test_decoding_inverts_the_targets_without_nms():
    """Heatmap logits with peaks at the target cells and the regression targets written at
    those cells decode to exactly the ground-truth boxes, even two heavily overlapping boxes of
    one class (hard NMS would drop one)."""
    head = CenterNetHead(num_classes=2, in_channels=8)
    boxes = torch.tensor([[10.0, 12.0, 50.0, 44.0], [14.0, 14.0, 52.0, 47.0], [70.5, 3.0, 90.0, 30.5]])
    labels = torch.tensor([0, 0, 1])
    h, w = 16, 24
    heatmap, index, reg = centernet_targets(boxes, labels, 2, (h, w), 4)
    logits = torch.logit(heatmap.clamp(1e-4, 1 - 1e-4) * 0.9).unsqueeze(0)
    logits = logits.masked_fill(heatmap.unsqueeze(0) == 1, 4.0)
    reg_map = torch.zeros(1, h * w, 4)
    reg_map[0, index] = reg
    reg_map = reg_map.view(1, h, w, 4).permute(0, 3, 1, 2)
    pred_boxes, scores, sizes = head.predict([logits], [reg_map])
    assert sizes == [h * w] and pred_boxes.shape == (1, h * w, 4)
    assert int((scores > 0.5).sum()) == 3  # exactly the three peaks score high
    cfg = PostProcess(nms="none", score_thresh=0.5)
    det = postprocess(pred_boxes, scores, sizes, cfg)[0]
    order = det["boxes"][:, 0].argsort()
    torch.testing.assert_close(det["boxes"][order], boxes)
    assert det["labels"][order].tolist() == [0, 0, 1]
    hard = postprocess(pred_boxes, scores, sizes, PostProcess(nms="hard", score_thresh=0.5))[0]
    assert len(hard["boxes"]) == 2


def test_heatmap_peaks_are_local_maxima():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 1, 1], x[0, 0, 1, 2], x[0, 0, 4, 4] = 3.0, 2.0, 1.0
    peaks = heatmap_peaks(x)
    assert peaks[0, 0, 1, 1] and not peaks[0, 0, 1, 2] and peaks[0, 0, 4, 4]
    assert not peaks[0, 0, 0, 0]  # next to the 3.0


def test_preset_head_uses_stride_4_and_top_100_without_nms():
    model = build("centernet-n", num_classes=3)
    assert model.head.strides == (4,) and model.nms == "none"
    assert model.postprocess.topk_per_level == 100
    assert not hasattr(model.neck, "down")  # no bottom-up path: it would get no gradient


def test_crowd_regions_get_no_negative_heatmap_loss():
    """Cells inside an ``ignore`` region that are no object's peak give their heatmap logits no
    gradient; the size and offset losses do not change."""
    torch.manual_seed(0)
    head = CenterNetHead(num_classes=2, in_channels=8, stride=4)
    cls = [torch.randn(2, 2, 16, 16, requires_grad=True)]
    reg = [torch.randn(2, 4, 16, 16)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0], [40.0, 40.0, 60.0, 56.0]]),
                "labels": torch.tensor([1, 0])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    region = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    ignored = [dict(t, ignore=region) for t in targets]
    plain, again = head.loss(cls, reg, targets), head.loss(cls, reg, ignored)
    (g,) = torch.autograd.grad(again["loss_cls"], cls)
    g = g.abs().sum(dim=1)  # (B, H, W)
    centres = (torch.arange(16) + 0.5) * 4  # cell centres in pixels
    inside = (centres[:, None] < 32) & (centres[None, :] < 32)  # (H, W): y, x both in the region
    peak = torch.zeros(2, 16, 16, dtype=torch.bool)
    peak[0, 3, 3] = True  # the first box's centre (12, 12) is in cell (3, 3)
    dropped = inside[None] & ~peak
    assert (g[dropped] == 0).all() and (g[~dropped] > 0).all() and g[0, 3, 3] > 0
    assert again["loss_cls"] < plain["loss_cls"]
    for key in ("loss_box", "loss_offset"):
        torch.testing.assert_close(again[key], plain[key])
