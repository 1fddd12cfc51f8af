"""Transforms keep boxes on the pixels they describe; hand-worked geometry; colour maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.data.transforms import (
    PAD_VALUE,
    AugmentConfig,
    Sample,
    clip_boxes,
    color_jitter,
    color_matrix,
    crop,
    hflip,
    letterbox,
    mosaic,
    random_crop,
    resize,
    resized_crop,
    train_transform,
)

BACKGROUND = 40
COLOURS = [(250, 20, 20), (20, 250, 20), (20, 20, 250), (250, 250, 20)]


def painted(h: int, w: int, rects: list[tuple[int, int, int, int]]) -> Sample:
    """A dark image with rectangle k (xyxy, integer) filled with COLOURS[k], label k."""
    image = torch.full((3, h, w), BACKGROUND, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(rects):
        image[:, y0:y1, x0:x1] = torch.tensor(COLOURS[k], dtype=torch.uint8)[:, None, None]
    boxes = torch.tensor(rects, dtype=torch.float32).reshape(-1, 4)
    return Sample(image, boxes, torch.arange(len(rects)))


def colour_bbox(image: torch.Tensor, label: int) -> tuple[float, float, float, float] | None:
    """xyxy bbox of the pixels close to COLOURS[label] (mostly covered by the rectangle)."""
    target = torch.tensor(COLOURS[label], dtype=torch.int32)[:, None, None]
    close = (image.int() - target).abs().amax(dim=0) < 60
    ys, xs = close.nonzero(as_tuple=True)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def assert_aligned(out: Sample, sources: list[Sample], tol: float = 2.0) -> None:
    """Every kept box matches its colour's pixels; every visible colour blob has a box."""
    assert out.boxes.shape == (len(out.labels), 4)
    s = out.image.shape[-1]
    assert bool(((out.boxes >= 0) & (out.boxes <= s)).all())
    assert bool((out.boxes[:, 2:] > out.boxes[:, :2]).all())
    for box, label in zip(out.boxes.tolist(), out.labels.tolist()):
        w, h = box[2] - box[0], box[3] - box[1]
        if min(w, h) < 4:  # too small for the colour test to be meaningful after blur
            continue
        got = colour_bbox(out.image, label)
        assert got is not None, f"box {box} label {label} but no pixels of its colour"
        assert np.allclose(got, box, atol=tol), f"label {label}: box {box} vs pixels {got}"


@st.composite
def scenes(draw):
    h = draw(st.integers(48, 160))
    w = draw(st.integers(48, 160))
    bw = draw(st.integers(16, w // 2))
    bh = draw(st.integers(16, h // 2))
    x0 = draw(st.integers(0, w - bw))
    y0 = draw(st.integers(0, h - bh))
    return painted(h, w, [(x0, y0, x0 + bw, y0 + bh)])


NO_COLOUR = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


@settings(max_examples=40, deadline=None)
@given(scene=scenes(), seed=st.integers(0, 2**32 - 1))
def test_scale_jitter_crop_flip_keep_boxes_aligned(scene, seed):
    cfg = AugmentConfig(mosaic=0.0, **NO_COLOUR)
    out = train_transform([scene], 96, np.random.default_rng(seed), cfg, use_mosaic=False)
    assert out.image.shape == (3, 96, 96)
    assert_aligned(out, [scene])
    if len(out.boxes) == 0:  # dropped: then little of the rectangle can be visible
        got = colour_bbox(out.image, 0)
        if got is not None:
            visible = (got[2] - got[0]) * (got[3] - got[1])
            full = scene.boxes[0, 2:] - scene.boxes[0, :2]
            scale = 96 / max(scene.height, scene.width) * 1.5
            assert visible < (cfg.min_visible + 0.2) * float(full.prod()) * scale**2 + 40


@settings(max_examples=25, deadline=None)
@given(parts=st.lists(scenes(), min_size=4, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_mosaic_keeps_boxes_aligned(parts, seed):
    # Recolour: image k's rectangle gets colour k, label k.
    samples = [painted(p.height, p.width, [tuple(int(v) for v in p.boxes[0].tolist())])
               for p in parts]
    for k, s in enumerate(samples):
        mask = (s.image != BACKGROUND).any(dim=0)
        s.image[:, mask] = torch.tensor(COLOURS[k], dtype=torch.uint8)[:, None]
        s.labels[:] = k
    cfg = AugmentConfig(mosaic=1.0, **NO_COLOUR)
    out = train_transform(samples, 96, np.random.default_rng(seed), cfg, use_mosaic=True)
    assert out.image.shape == (3, 96, 96)
    assert_aligned(out, samples)
    assert len(set(out.labels.tolist())) == len(out.labels)  # one rectangle per image


def test_mosaic_places_four_images_around_centre():
    samples = [painted(40, 40, [(0, 0, 40, 40)]) for _ in range(4)]
    for k, s in enumerate(samples):
        s.image[:] = torch.tensor(COLOURS[k], dtype=torch.uint8)[:, None, None]
        s.labels[:] = k
    out = mosaic(samples, 64, np.random.default_rng(3), min_visible=0.0, min_size=0.0)
    # Each 40x40 image is scaled to 64x64, so each quadrant is filled by its own image.
    xc, yc = out.boxes[0, 2].item(), out.boxes[0, 3].item()  # corner of image 0
    assert 16 <= xc <= 48 and 16 <= yc <= 48
    expected = torch.tensor([[0, 0, xc, yc], [xc, 0, 64, yc], [0, yc, xc, 64], [xc, yc, 64, 64]])
    torch.testing.assert_close(out.boxes, expected.float())
    assert out.labels.tolist() == [0, 1, 2, 3]
    assert tuple(out.image[:, 0, 0].tolist()) == COLOURS[0]
    assert tuple(out.image[:, 63, 63].tolist()) == COLOURS[3]


def test_clip_boxes_visible_area_rule_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 120 - 20
    wh = torch.rand(200, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + wh], dim=1)
    clipped, keep = clip_boxes(boxes, 80, 60, min_visible=0.4, min_size=2.0)
    for b, c, k in zip(boxes.tolist(), clipped.tolist(), keep.tolist()):
        cx0, cy0 = min(max(b[0], 0), 80), min(max(b[1], 0), 60)
        cx1, cy1 = min(max(b[2], 0), 80), min(max(b[3], 0), 60)
        area = (b[2] - b[0]) * (b[3] - b[1])
        vis = (cx1 - cx0) * (cy1 - cy0)
        want = area > 0 and vis >= 0.4 * area and cx1 - cx0 >= 2 and cy1 - cy0 >= 2
        assert k == want
        assert np.allclose(c, [cx0, cy0, cx1, cy1], atol=1e-5)


def test_crop_visible_area_rule_hand_worked():
    s = painted(20, 20, [(0, 0, 10, 10), (12, 12, 20, 20)])
    # Window x in [5, 25): box 0 keeps half its area -> (0, 0, 5, 10); box 1 fully inside.
    out = crop(s, (5, 0, 25, 20), min_visible=0.5)
    assert out.labels.tolist() == [0, 1]
    torch.testing.assert_close(out.boxes, torch.tensor([[0.0, 0, 5, 10], [7, 12, 15, 20]]))
    assert out.image.shape == (3, 20, 20)
    assert bool((out.image[:, :, 15:] == PAD_VALUE).all())  # beyond the image: grey
    assert crop(s, (5, 0, 25, 20), min_visible=0.51).labels.tolist() == [1]
    assert crop(s, (14, 0, 25, 20), min_size=2.0).labels.tolist() == [1]  # box 0 out
    with pytest.raises(ValueError, match="crop window"):
        crop(s, (5, 5, 5, 10))


def test_random_crop_places_small_image_inside_window():
    s = painted(30, 20, [(2, 3, 12, 13)])
    for seed in range(10):
        out = random_crop(s, (50, 50), np.random.default_rng(seed))
        assert out.image.shape == (3, 50, 50)
        dx, dy = out.boxes[0, 0].item() - 2, out.boxes[0, 1].item() - 3
        assert 0 <= dx <= 30 and 0 <= dy <= 20
        torch.testing.assert_close(out.boxes, s.boxes + torch.tensor([dx, dy, dx, dy]))
        assert colour_bbox(out.image, 0) == tuple(out.boxes[0].tolist())


@settings(max_examples=40, deadline=None)
@given(h=st.integers(20, 120), w=st.integers(20, 120), scale=st.floats(0.3, 3.0),
       fx=st.floats(-0.5, 1.2), fy=st.floats(-0.5, 1.2), size=st.integers(8, 100))
def test_resized_crop_equals_resize_then_crop(h, w, scale, fx, fy, size):
    g = torch.Generator().manual_seed(h * 1000 + w)
    smooth = torch.rand(3, h // 16 + 2, w // 16 + 2, generator=g) * 200 + 20
    image = F.resize(smooth, [h, w], antialias=True).round().to(torch.uint8)
    boxes = torch.tensor([[0.0, 0, w, h], [w * 0.2, h * 0.3, w * 0.6, h * 0.9]])
    sample = Sample(image, boxes, torch.tensor([0, 1]))
    full = resize(sample, scale)
    x0, y0 = int(fx * full.width), int(fy * full.height)
    window = (x0, y0, x0 + size, y0 + size)
    want = crop(full, window, 0.25, 2.0)
    got = resized_crop(sample, scale, window, 0.25, 2.0)
    torch.testing.assert_close(got.boxes, want.boxes)
    assert torch.equal(got.labels, want.labels)
    pad = want.image == PAD_VALUE
    diff = (got.image.int() - want.image.int()).abs()
    assert bool((got.image[pad.all(dim=0).expand_as(pad)] == PAD_VALUE).all())
    # Up to about a pixel of shift (rounding) on a gradient of at most ~10 levels per pixel
    # (a small window of a heavily upscaled image was seen at a mean of 5.4).
    assert float(diff.float().mean()) < 8 and int(diff.max()) < 40


def test_hflip_hand_worked():
    s = painted(8, 10, [(1, 2, 4, 6)])
    out = hflip(s)
    torch.testing.assert_close(out.boxes, torch.tensor([[6.0, 2, 9, 6]]))
    assert colour_bbox(out.image, 0) == (6.0, 2.0, 9.0, 6.0)
    torch.testing.assert_close(out.image[:, :, 9], s.image[:, :, 0])
    torch.testing.assert_close(hflip(out).image, s.image)


def test_letterbox_maps_back_to_original_pixels():
    s = painted(50, 100, [(10, 20, 60, 45)])
    out, scale = letterbox(s, 64)
    assert scale == pytest.approx(0.64)
    assert out.image.shape == (3, 64, 64)
    assert bool((out.image[:, 32:, :] == PAD_VALUE).all())  # padded at the bottom
    assert not bool((out.image[:, :32, :] == PAD_VALUE).all(dim=0).any())
    torch.testing.assert_close(out.boxes / scale, s.boxes)
    assert np.allclose(colour_bbox(out.image, 0), out.boxes[0].tolist(), atol=1.0)


def test_resize_scales_boxes_exactly():
    s = painted(33, 47, [(3, 4, 30, 20)])
    out = resize(s, 1.7)
    assert out.image.shape == (3, round(33 * 1.7), round(47 * 1.7))
    torch.testing.assert_close(out.boxes, s.boxes * 1.7)


def test_color_matrix_matches_torchvision_adjust_without_hue():
    g = torch.Generator().manual_seed(0)
    # Mid-range colours, so that torchvision's clamping after each step never triggers.
    image = torch.randint(90, 160, (3, 16, 16), generator=g, dtype=torch.uint8)
    ref = image.float() / 255
    ref = F.adjust_saturation(ref, 1.3)
    ref = F.adjust_contrast(ref, 0.8)
    ref = F.adjust_brightness(ref, 1.1) * 255
    mean = float(torch.tensor([0.299, 0.587, 0.114]) @ image.flatten(1).float().mean(dim=1))
    m, b = color_matrix(1.1, 0.8, 1.3, 0.0, mean)
    ours = (m @ image.flatten(1).float() + b[:, None]).view(3, 16, 16)
    assert 0 < float(ref.min()) and float(ref.max()) < 255
    torch.testing.assert_close(ours, ref, atol=0.5, rtol=0)


def test_hue_rotation_keeps_grey_and_turns_channels():
    m, b = color_matrix(hue=1 / 3)  # 120 degrees about the grey axis: R -> G -> B -> R
    torch.testing.assert_close(m @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(m @ torch.tensor([0.5, 0.5, 0.5]), torch.full((3,), 0.5))
    torch.testing.assert_close(b, torch.zeros(3))
    full, _ = color_matrix(hue=1.0)
    torch.testing.assert_close(full, torch.eye(3), atol=1e-6, rtol=0)


def test_color_jitter_leaves_boxes_and_identity_is_noop():
    s = painted(20, 20, [(1, 1, 9, 9)])
    out = color_jitter(s, np.random.default_rng(0), 0.4, 0.3, 0.5, 0.05)
    assert out.image.dtype == torch.uint8 and out.image.shape == s.image.shape
    assert not torch.equal(out.image, s.image)
    assert out.boxes is s.boxes
    same = color_jitter(s, np.random.default_rng(0))
    assert torch.equal(same.image, s.image)


def test_augment_config_rejects_bad_values():
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.5, 0.5))
    with pytest.raises(ValueError, match="mosaic"):
        AugmentConfig(mosaic=1.5)
    with pytest.raises(ValueError, match="hue"):
        AugmentConfig(hue=-0.1)
