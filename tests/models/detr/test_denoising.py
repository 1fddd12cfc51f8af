"""Contrastive denoising groups: layout, noise bounds, label flips, and the attention mask."""

import torch

from scaledet.models.detr.denoising import make_denoising_queries
from scaledet.ops import box_convert


def _targets():
    return [{"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]]),
             "labels": torch.tensor([1, 2])},
            {"boxes": torch.tensor([[0.5, 0.4, 0.1, 0.3]]), "labels": torch.tensor([0])}]


def test_layout_and_indices():
    dn = make_denoising_queries(_targets(), num_classes=3, num_queries=5, num_denoising=8,
                                label_noise=0.0)
    # max 2 objects -> 4 groups of 2 positives + 2 negatives
    assert dn.groups == 4 and dn.labels.shape == (2, 16) and dn.boxes.shape == (2, 16, 4)
    pos, gt = dn.indices[0]
    assert pos.tolist() == [0, 1, 4, 5, 8, 9, 12, 13] and gt.tolist() == [0, 1] * 4
    pos1, gt1 = dn.indices[1]
    assert pos1.tolist() == [0, 4, 8, 12] and gt1.tolist() == [0] * 4
    assert dn.labels[0, :4].tolist() == [1, 2, 1, 2]  # positives, then negatives
    assert dn.labels[1, :4].tolist() == [0, 3, 0, 3]  # image 1 pads its second slots with C
    assert dn.boxes[1, 1].abs().sum() == 0


def test_attention_mask():
    dn = make_denoising_queries(_targets(), num_classes=3, num_queries=5, num_denoising=8)
    m, d = dn.attn_mask, 16
    assert m.shape == (21, 21)
    assert m[d:, :d].all() and not m[d:, d:].any()  # matching queries never see the answers
    assert not m[:d, d:].any()  # denoising queries may look at the matching ones
    for g in range(4):
        block = slice(4 * g, 4 * g + 4)
        assert not m[block, block].any()
        others = torch.ones(d, dtype=torch.bool)
        others[block] = False
        assert m[block][:, :d][:, others].all()


def test_noise_bounds():
    torch.manual_seed(0)
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(50, 1),
                "labels": torch.zeros(50, dtype=torch.long)}]
    dn = make_denoising_queries(targets, num_classes=2, num_queries=1, num_denoising=100,
                                box_noise=0.4)
    gt = box_convert(targets[0]["boxes"][:1], "cxcywh", "xyxy")
    half = 0.1 * 0.4  # half the side times the noise scale
    pos, _ = dn.indices[0]
    shift_pos = (box_convert(dn.boxes[0, pos], "cxcywh", "xyxy") - gt).abs()
    neg = pos + 50
    shift_neg = (box_convert(dn.boxes[0, neg], "cxcywh", "xyxy") - gt).abs()
    assert shift_pos.max() < half + 1e-5
    assert shift_neg.min() >= half - 1e-5 and shift_neg.max() < 2 * half + 1e-5


def test_label_flip_rate():
    torch.manual_seed(0)
    n = 4000
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(n, 1),
                "labels": torch.zeros(n, dtype=torch.long)}]
    dn = make_denoising_queries(targets, num_classes=10, num_queries=1, num_denoising=n,
                                label_noise=0.5)
    pos, _ = dn.indices[0]
    changed = (dn.labels[0, pos] != 0).float().mean()
    # flipped with probability 0.25, to a random class: 9 of 10 change it -> 0.225
    assert abs(float(changed) - 0.225) < 0.02
    assert (dn.labels[0, pos + n] == 0).all()  # negatives keep their label


def test_no_objects_gives_none():
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    assert make_denoising_queries(empty, 3, 10, 100) is None
    assert make_denoising_queries(_targets(), 3, 10, 0) is None
