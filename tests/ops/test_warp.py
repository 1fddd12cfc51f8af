"""Crop geometry (``crop_box``, ``crop_matrix``) against scikit-image's transforms and hand-worked
values; ``warp_affine`` against ``skimage.transform.warp`` (its own tests in tests/faces cover
the alignment use)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import transform as sktf

from scaledet.ops.warp import apply_matrix, crop_box, crop_matrix, invert_matrix, warp_affine


def test_crop_box_widens_to_aspect_then_pads():
    # a 20 x 80 box, aspect 0.75 (W / H): width becomes 60, then x 1.25
    centre, size = crop_box([10, 20, 30, 100], aspect=0.75, padding=1.25)
    np.testing.assert_allclose(centre, [20, 60])
    np.testing.assert_allclose(size, [75, 100])
    # a wide box keeps its width and grows in height
    centre, size = crop_box([0, 0, 90, 30], aspect=0.75, padding=1.0)
    np.testing.assert_allclose(size, [90, 120])


def test_crop_matrix_maps_window_edges_to_crop_edges():
    # window centred at (20, 60), 75 x 100 image pixels -> a 128 x 96 crop
    m = crop_matrix([20, 60], [75, 100], (128, 96))
    # the window's continuous edges land on the crop's (-0.5 and W - 0.5)
    corners = apply_matrix([[20 - 37.5, 60 - 50], [20 + 37.5, 60 + 50]], m)
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [95.5, 127.5]], atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(cx=st.floats(-50, 300), cy=st.floats(-50, 300), w=st.floats(5, 200), h=st.floats(5, 200),
       rot=st.floats(-180, 180), scale=st.floats(0.5, 2.0), flip=st.booleans())
def test_crop_matrix_equals_skimage_composition(cx, cy, w, h, rot, scale, flip):
    out_h, out_w = 64, 48
    m = crop_matrix([cx, cy], [w, h], (out_h, out_w), rotation=rot, scale=scale, flip=flip)
    # independent composition: move the centre to the origin, rotate (screen counter-clockwise
    # = negative angle in y-down coordinates), scale the axes, mirror, move to the crop centre
    t = sktf.AffineTransform(translation=(-cx, -cy))
    t = t + sktf.AffineTransform(rotation=-np.deg2rad(rot))
    t = t + sktf.AffineTransform(scale=(out_w / (w * scale), out_h / (h * scale)))
    if flip:
        t = t + sktf.AffineTransform(scale=(-1, 1))
    t = t + sktf.AffineTransform(translation=((out_w - 1) / 2, (out_h - 1) / 2))
    np.testing.assert_allclose(m, t.params[:2], rtol=1e-9, atol=1e-9)
    pts = np.random.default_rng(0).uniform(-100, 100, (5, 2))
    np.testing.assert_allclose(apply_matrix(apply_matrix(pts, m), invert_matrix(m)), pts,
                               atol=1e-7)


def test_warp_affine_matches_skimage_warp_and_fill():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    m = crop_matrix([15, 20], [20, 25], (32, 24), rotation=17, scale=1.1)
    ours = warp_affine(image, m, (32, 24), fill=77).astype(np.float64)
    ref = sktf.warp(image.astype(np.float64), sktf.AffineTransform(np.vstack([m, [0, 0, 1]])
                                                                   ).inverse,
                    output_shape=(32, 24), order=1, mode="constant", cval=77,
                    preserve_range=True)
    # interior pixels (away from the 1-pixel border blend) agree to rounding
    inside = ref != 77
    assert inside.mean() > 0.5
    assert np.abs(ours - np.round(ref))[inside].max() <= 1.0


def test_warp_affine_refuses_singular_matrix():
    with pytest.raises(ValueError, match="singular"):
        warp_affine(np.zeros((4, 4, 3), np.uint8), [[1, 0, 0], [2, 0, 0]], 4)
