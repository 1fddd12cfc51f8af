"""Image pyramid, SNIP ignore masks, SNIPER chip coverage, sliced tiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.data.sampling import (
    Chip,
    ScaleRange,
    box_size,
    chip_candidates,
    crop_chip,
    cut_chip,
    default_sniper_scales,
    greedy_cover,
    image_pyramid,
    pick_chip,
    slice_image,
    snip_targets,
    sniper_chips,
)
from scaledet.data.transforms import Sample


def random_boxes(rng: np.random.Generator, n: int, h: int, w: int, max_size: float,
                 max_aspect: float = 3.0) -> torch.Tensor:
    """Boxes of size sqrt(w h) log-uniform in [4, max_size], aspect ratio up to max_aspect."""
    size = np.exp(rng.uniform(np.log(4), np.log(max_size), size=n))
    aspect = np.exp(rng.uniform(-np.log(max_aspect), np.log(max_aspect), size=n))
    side = np.stack([size * np.sqrt(aspect), size / np.sqrt(aspect)], 1)
    side = np.minimum(side, [w, h])
    x0 = rng.uniform(0, w - side[:, 0])
    y0 = rng.uniform(0, h - side[:, 1])
    return torch.tensor(np.stack([x0, y0, x0 + side[:, 0], y0 + side[:, 1]], 1),
                        dtype=torch.float32)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 500), w=st.integers(1, 500), tile=st.integers(2, 200),
       overlap=st.floats(0, 0.9))
def test_slices_cover_the_image_with_the_requested_overlap(h, w, tile, overlap):
    tiles = slice_image(h, w, tile, overlap)
    covered = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in tiles:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (x1 - x0, y1 - y0) == (min(tile, w), min(tile, h))
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({t[0] for t in tiles})
    shared = min(round(overlap * tile), tile - 1)  # tiles advance by at least one pixel
    for a, b in zip(xs, xs[1:]):  # neighbours share at least the requested overlap
        assert tile - (b - a) >= shared
    assert len(tiles) == len(set(tiles))


def test_slice_image_hand_worked_and_bad_arguments():
    assert slice_image(100, 250, 100, 0.2) == [(0, 0, 100, 100), (80, 0, 180, 100),
                                               (150, 0, 250, 100)]
    with pytest.raises(ValueError, match="overlap"):
        slice_image(100, 100, 50, 20)
    with pytest.raises(ValueError, match="tile"):
        slice_image(100, 100, 0)


def test_image_pyramid_sizes():
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    levels = image_pyramid(image, [0.5, 1.0, 2.0])
    assert [(tuple(im.shape), s) for im, s in levels] == [
        ((3, 20, 30), 0.5), ((3, 40, 60), 1.0), ((3, 80, 120), 2.0)]


def test_snip_ignore_masks_match_brute_force():
    boxes = random_boxes(np.random.default_rng(0), 50, 400, 400, 300)
    labels = torch.arange(50)
    scales = [ScaleRange(2.0, 0, 64), ScaleRange(1.0, 32, 160), ScaleRange(0.5, 128)]
    out = snip_targets(boxes, labels, scales)
    for r, level in zip(scales, out):
        assert level["scale"] == r.scale
        torch.testing.assert_close(level["boxes"], boxes * r.scale)
        for b, ignored in zip(boxes.tolist(), level["ignore"].tolist()):
            size = math.sqrt((b[2] - b[0]) * (b[3] - b[1]))
            assert ignored == (not r.min_size <= size <= r.max_size)
    # With overlapping ranges that cover all sizes, every object trains at some scale.
    assert bool(torch.stack([~lv["ignore"] for lv in out]).any(dim=0).all())


def test_scale_range_rejects_bad_values():
    with pytest.raises(ValueError, match="scale"):
        ScaleRange(0.0)
    with pytest.raises(ValueError, match="valid range"):
        ScaleRange(1.0, 50, 10)


def test_greedy_cover_hand_worked():
    contains = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert greedy_cover(contains, torch.ones(4, dtype=torch.bool)) == [1, 0]
    assert greedy_cover(contains, torch.tensor([1, 0, 0, 0], dtype=torch.bool)) == [0]
    assert greedy_cover(contains, torch.ones(4, dtype=torch.bool), max_chips=1) == [1]


@pytest.mark.parametrize("seed", range(6))
def test_sniper_chips_cover_every_box_at_a_scale_where_it_is_valid(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(300, 900)), int(rng.integers(300, 900))
    boxes = random_boxes(rng, int(rng.integers(1, 30)), h, w, 400)
    scales = default_sniper_scales((h, w), chip_size=256)
    chips = sniper_chips(boxes, (h, w), scales, chip_size=256, stride=32,
                         rng=np.random.default_rng(seed))
    by_scale = {r.scale: r for r in scales}
    for n, box in enumerate(boxes):
        covering = [c for c in chips if n in c.positives]
        assert covering, f"box {n} {box.tolist()} not covered"
        for c in covering:
            x0, y0, x1, y1 = c.window
            assert (x1 - x0, y1 - y0) == (256, 256)
            b = box * c.scale
            assert x0 <= b[0] and y0 <= b[1] and b[2] <= x1 and b[3] <= y1
            assert bool(by_scale[c.scale].valid(box[None])[0])
    for c in chips:  # negative chips touch no ground truth at their scale
        if not c.positives:
            b = boxes * c.scale
            x0, y0, x1, y1 = c.window
            assert not bool(((b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1)
                             & (b[:, 3] > y0)).any())


def test_sniper_leaves_a_box_uncovered_only_where_no_chip_can_hold_it():
    # 200 x 2 px: size 20 is valid only at 3x, where the box is 600 px long > 256 px chip.
    boxes = torch.tensor([[10.0, 10, 210, 12], [300, 300, 340, 340]])
    scales = default_sniper_scales((400, 400), chip_size=256)
    chips = sniper_chips(boxes, (400, 400), scales, chip_size=256)
    covered = {n for c in chips for n in c.positives}
    assert covered == {1}


def test_sniper_chips_cost_a_fraction_of_the_pyramid():
    rng = np.random.default_rng(0)
    h, w = 1000, 1200
    boxes = random_boxes(rng, 5, h, w, 60)  # a few small objects in a large image
    scales = default_sniper_scales((h, w), chip_size=512)
    chips = sniper_chips(boxes, (h, w), scales, chip_size=512, negatives_per_scale=1)
    pyramid = sum(h * w * r.scale**2 for r in scales)
    assert len(chips) * 512**2 < 0.25 * pyramid


def test_sniper_negative_chips_from_proposals():
    h, w = 600, 600
    boxes = torch.tensor([[10.0, 10, 40, 40]])
    proposals = torch.tensor([[500.0, 500, 530, 530], [20.0, 20, 35, 35]])
    scales = [ScaleRange(1.0)]
    chips = sniper_chips(boxes, (h, w), scales, chip_size=128, stride=32, proposals=proposals)
    pos = [c for c in chips if c.positives]
    neg = [c for c in chips if not c.positives]
    assert len(pos) == 1 and len(neg) == 1
    x0, y0, x1, y1 = neg[0].window
    assert x0 <= 500 and y0 <= 500 and 530 <= x1 and 530 <= y1  # the uncovered proposal


def test_chip_candidates_cover_image():
    cand = chip_candidates(300, 700, 256, 100)
    assert cand[:, 0].tolist().count(0) == 2 and cand[:, 2].max() == 700
    assert cand[:, 3].max() == 300 and cand.shape == (2 * 6, 4)


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.5])
def test_crop_chip_matches_cropping_the_resized_image(scale):
    h, w = 120, 160
    image = torch.full((3, h, w), 30, dtype=torch.uint8)
    image[:, 40:70, 60:100] = 250
    sample = Sample(image, torch.tensor([[60.0, 40, 100, 70], [2, 2, 6, 6]]),
                    torch.tensor([0, 1]))
    sx, sy = int(50 * scale), int(30 * scale)
    chip = Chip(scale, (sx, sy, sx + 96, sy + 96), (0,))
    out, ignore = crop_chip(sample, chip, 96, ScaleRange(scale, 10, 100))
    assert out.image.shape == (3, 96, 96)
    expected = sample.boxes[:1] * scale - torch.tensor([sx, sy, sx, sy])
    expected = expected.clamp(0, 96)
    torch.testing.assert_close(out.boxes[:1], expected)
    assert out.labels[0] == 0 and not bool(ignore[0])
    bright = (out.image[0] > 200).nonzero()
    got = [bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1, bright[:, 0].max() + 1]
    assert np.allclose([float(v) for v in got], out.boxes[0].tolist(), atol=1.5)


def test_box_size_is_sqrt_area():
    torch.testing.assert_close(box_size(torch.tensor([[0.0, 0, 4, 9], [1, 1, 1, 5]])),
                               torch.tensor([6.0, 0.0]))


@pytest.mark.parametrize("seed", range(4))
def test_training_chip_targets_are_valid_and_inside_and_the_rest_is_ignored(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(150, 400)), int(rng.integers(150, 400))
    boxes = random_boxes(rng, 12, h, w, 150)
    objects = torch.from_numpy(rng.random(12) > 0.2)  # the others: crowd regions
    sample = Sample(torch.zeros(3, h, w, dtype=torch.uint8), boxes, torch.arange(12))
    scales = default_sniper_scales((h, w), chip_size=128)
    by_scale = {r.scale: r for r in scales}
    for draw in range(4):
        chip = pick_chip(boxes, (h, w), scales, 128, np.random.default_rng((seed, draw)),
                         negative=0.3, objects=objects)
        assert set(chip.positives) <= set(objects.nonzero().flatten().tolist())
        out, ignore = cut_chip(sample, chip)
        assert out.image.shape == (3, 128, 128)
        targets = out.boxes[~ignore]
        assert sorted(out.labels[~ignore].tolist()) == sorted(chip.positives)
        assert bool(((targets >= 0) & (targets <= 128)).all())
        size = box_size(targets) / chip.scale
        r = by_scale[chip.scale]
        assert bool(((size >= r.min_size * 0.999) & (size <= r.max_size * 1.001)).all())
        # Every other box with visible area in the window comes out as an ignore region.
        x0, y0, x1, y1 = chip.window
        b = boxes * chip.scale
        vw = b[:, 2].clamp(x0, x1) - b[:, 0].clamp(x0, x1)
        vh = b[:, 3].clamp(y0, y1) - b[:, 1].clamp(y0, y1)
        others = [n for n in range(12) if vw[n] > 0 and vh[n] > 0 and n not in chip.positives]
        assert sorted(out.labels[ignore].tolist()) == others


def test_pick_chip_is_deterministic_and_falls_back_without_positives():
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 8, 300, 300, 100)
    scales = default_sniper_scales((300, 300), chip_size=128)
    draws = [pick_chip(boxes, (300, 300), scales, 128, np.random.default_rng(5), negative=0.5)
             for _ in range(2)]
    assert draws[0] == draws[1]
    # No object: a background chip; everything ignored when every box is a crowd region.
    empty = pick_chip(torch.zeros(0, 4), (300, 300), scales, 128, rng)
    assert empty.positives == () and empty.window[2] - empty.window[0] == 128
    crowd = pick_chip(boxes, (300, 300), scales, 128, rng, objects=torch.zeros(8, dtype=bool))
    assert crowd.positives == ()
    # negative=1.0 takes a background chip whenever the image has one.
    small = torch.tensor([[10.0, 10, 20, 20]])
    chip = pick_chip(small, (300, 300), [ScaleRange(1.0)], 64, rng, stride=32, negative=1.0)
    assert chip.positives == () and (chip.window[0] >= 20 or chip.window[1] >= 20)
    with pytest.raises(ValueError, match="scale"):
        pick_chip(small, (300, 300), [], 64, rng)


def test_cut_chip_ignores_positives_below_min_size():
    sample = Sample(torch.zeros(3, 100, 100, dtype=torch.uint8),
                    torch.tensor([[10.0, 10, 11, 11], [20, 20, 40, 40]]), torch.tensor([3, 4]))
    out, ignore = cut_chip(sample, Chip(1.0, (0, 0, 64, 64), (0, 1)), min_size=2.0)
    assert out.labels.tolist() == [3, 4] and ignore.tolist() == [True, False]
