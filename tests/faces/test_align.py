"""Face alignment: ``similarity_transform`` against scikit-image's Umeyama estimate, exact
recovery, refusals (reflections, coincident points); ``align`` puts the landmarks on the
template and takes the crop from where the matrix says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.transform import SimilarityTransform

from scaledet.faces import ARCFACE_TEMPLATE_112, align, similarity_transform, warp_affine


def _skimage_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The ``(2, 3)`` similarity scikit-image estimates (``from_estimate`` from 0.26 on)."""
    if hasattr(SimilarityTransform, "from_estimate"):
        tf = SimilarityTransform.from_estimate(src, dst)
        assert tf, "scikit-image could not estimate the transform"
    else:
        tf = SimilarityTransform()
        assert tf.estimate(src, dst)
    return tf.params[:2]


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _inverse(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]


@pytest.mark.parametrize("n", [2, 3, 5, 20])
@pytest.mark.parametrize("noise", [0.0, 0.5, 2.0])
def test_matches_skimage(n, noise):
    rng = np.random.default_rng(100 * n + int(10 * noise))
    for _ in range(20):
        src = rng.uniform(-50, 150, (n, 2))
        true = _similarity(rng.uniform(-math.pi, math.pi), rng.uniform(0.5, 5),
                           *rng.uniform(-100, 100, 2))
        dst = _apply(true, src) + rng.normal(0, noise, (n, 2))
        ours = similarity_transform(src, dst)
        assert ours.shape == (2, 3) and ours.dtype == np.float64
        np.testing.assert_allclose(ours, _skimage_matrix(src, dst), rtol=0, atol=1e-6)


def test_unrelated_random_sets_match_skimage_or_are_refused_as_reflections():
    """Independent random sets: about half are best fitted by a reflection (det of the
    covariance < 0), which is refused; the others match scikit-image."""
    rng = np.random.default_rng(7)
    matched = refused = 0
    for _ in range(200):
        src, dst = rng.uniform(0, 100, (6, 2)), rng.uniform(0, 100, (6, 2))
        cov = (dst - dst.mean(0)).T @ (src - src.mean(0))
        if np.linalg.det(cov) < 0:
            with pytest.raises(ValueError, match="reflection"):
                similarity_transform(src, dst)
            refused += 1
        else:
            np.testing.assert_allclose(similarity_transform(src, dst),
                                       _skimage_matrix(src, dst), rtol=0, atol=1e-6)
            matched += 1
    assert matched > 50 and refused > 50


def test_collinear_points_match_skimage():
    src = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [5.0, 5.0]])
    true = _similarity(2.0, 1.7, 3.0, -4.0)
    dst = _apply(true, src)
    np.testing.assert_allclose(similarity_transform(src, dst), true, atol=1e-9)
    np.testing.assert_allclose(similarity_transform(src, dst), _skimage_matrix(src, dst),
                               atol=1e-6)


@pytest.mark.parametrize("angle", [0.0, 0.3, -1.2, math.pi / 2, 3.0, -math.pi])
def test_recovers_a_known_transform_exactly(angle):
    true = _similarity(angle, 2.5, 13.0, -7.5)
    dst = _apply(true, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(similarity_transform(ARCFACE_TEMPLATE_112, dst), true,
                               rtol=0, atol=1e-9)
    # and back: the inverse transform is recovered from the swapped sets
    np.testing.assert_allclose(similarity_transform(dst, ARCFACE_TEMPLATE_112), _inverse(true),
                               rtol=0, atol=1e-9)


def test_accepts_lists_and_tensors():
    true = _similarity(0.4, 0.5, 1.0, 2.0)
    dst = _apply(true, ARCFACE_TEMPLATE_112)
    from_list = similarity_transform(ARCFACE_TEMPLATE_112.tolist(), dst.tolist())
    from_tensor = similarity_transform(torch.tensor(ARCFACE_TEMPLATE_112).float(),
                                       torch.from_numpy(dst))
    np.testing.assert_allclose(from_list, true, atol=1e-9)
    np.testing.assert_allclose(from_tensor, true, atol=1e-4)  # float32 input


def test_a_mirror_image_is_refused():
    mirrored = ARCFACE_TEMPLATE_112 * [-1.0, 1.0] + [112.0, 0.0]  # flipped left-right
    with pytest.raises(ValueError, match="reflection"):
        similarity_transform(ARCFACE_TEMPLATE_112, mirrored)
    noisy = mirrored + np.random.default_rng(0).normal(0, 0.5, mirrored.shape)
    with pytest.raises(ValueError, match="mirror image"):
        similarity_transform(ARCFACE_TEMPLATE_112, noisy)


def test_swapped_left_and_right_landmarks_are_refused():
    true = _similarity(0.2, 1.8, 40.0, 30.0)
    landmarks = _apply(true, ARCFACE_TEMPLATE_112)[[1, 0, 2, 4, 3]]  # eyes and mouth swapped
    image = np.zeros((300, 300, 3), np.uint8)
    with pytest.raises(ValueError, match="reflection.*left and right"):
        align(image, landmarks)


def test_coincident_points_are_named():
    src = ARCFACE_TEMPLATE_112.copy()
    src[3] = src[1]
    with pytest.raises(ValueError, match=r"src points 1 and 3 coincide"):
        similarity_transform(src, ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError, match=r"dst points 1 and 3 coincide"):
        similarity_transform(ARCFACE_TEMPLATE_112, src)
    with pytest.raises(ValueError, match=r"landmarks points 1 and 3 coincide"):
        align(np.zeros((112, 112, 3), np.uint8), src)


def test_all_points_coinciding_or_too_few_are_refused():
    same = np.full((5, 2), 7.0)
    with pytest.raises(ValueError, match="all 5 src points coincide"):
        similarity_transform(same, ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError, match="all 5 dst points coincide"):
        similarity_transform(ARCFACE_TEMPLATE_112, same)
    with pytest.raises(ValueError, match="at least 2 point pairs"):
        similarity_transform([[1.0, 2.0]], [[3.0, 4.0]])


@pytest.mark.parametrize(("src", "dst", "message"), [
    (np.zeros((5, 3)), np.zeros((5, 3)), r"src must be an \(N, 2\) array"),
    (ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112[:4], "same number of points, got 5 and 4"),
    (np.array([[0.0, 0.0], [np.nan, 1.0]]), np.eye(2), "src point 1 is not finite"),
])
def test_malformed_points_are_named(src, dst, message):
    with pytest.raises(ValueError, match=message):
        similarity_transform(src, dst)


def _face_landmarks(true: np.ndarray) -> np.ndarray:
    """Image landmarks of a face that ``true`` (image -> 112 crop) would align exactly."""
    return _apply(_inverse(true), ARCFACE_TEMPLATE_112)


def test_align_puts_the_landmarks_on_the_template():
    """Landmarks of faces at random poses (exact, then with detector-like noise) end on the
    template when warped with the returned matrix."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (400, 500, 3), dtype=np.uint8)
    for noise, tolerance in ((0.0, 1e-6), (0.1, 0.5)):
        for _ in range(10):
            true = _similarity(rng.uniform(-0.8, 0.8), rng.uniform(0.3, 1.0),
                               *rng.uniform(-150, 50, 2))
            landmarks = _face_landmarks(true) + rng.normal(0, noise, (5, 2))
            crop, matrix = align(image, landmarks)
            assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
            assert matrix.shape == (2, 3)
            error = np.linalg.norm(_apply(matrix, landmarks) - ARCFACE_TEMPLATE_112, axis=1)
            assert error.max() < tolerance, error


def test_align_size_scales_the_template():
    true = _similarity(0.3, 0.8, -20.0, 10.0)
    landmarks = _face_landmarks(true)
    image = np.zeros((300, 300, 3), np.uint8)
    crop, matrix = align(image, landmarks, size=224)
    assert crop.shape == (224, 224, 3)
    np.testing.assert_allclose(_apply(matrix, landmarks), 2 * ARCFACE_TEMPLATE_112, atol=1e-9)


def test_the_crop_reads_the_image_where_the_matrix_says():
    """An image whose red channel is x and green channel is y (exact under bilinear
    interpolation): crop pixel (u, v) must hold the coordinates matrix^-1 (u, v)."""
    h, w = 220, 250
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx, yy, np.full_like(xx, 77)], axis=-1).astype(np.uint8)
    true = _similarity(0.5, 0.9, -40.0, -60.0)
    crop, matrix = align(image, _face_landmarks(true))
    np.testing.assert_allclose(matrix, true, atol=1e-9)
    vv, uu = np.mgrid[0:112, 0:112]
    source = _apply(_inverse(matrix), np.stack([uu, vv], -1).reshape(-1, 2)).reshape(112, 112, 2)
    inside = ((source[..., 0] >= 0) & (source[..., 0] <= w - 1)
              & (source[..., 1] >= 0) & (source[..., 1] <= h - 1))
    assert inside.mean() > 0.5 and not inside.all()  # part of the crop falls outside
    np.testing.assert_allclose(crop[inside][:, :2], source[inside], atol=0.51)
    assert (crop[inside][:, 2] == 77).all()
    outside = ((source[..., 0] < -1) | (source[..., 0] > w) | (source[..., 1] < -1)
               | (source[..., 1] > h))
    assert outside.any() and (crop[outside] == 0).all()  # black beyond the image


def test_marked_landmarks_land_on_the_template():
    """Five coloured disks drawn at the landmarks of a face turn up at the template points."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]],
                       np.uint8)
    # crop -> image: rotated by 0.6 rad, twice the crop's size, inside the 400 x 400 image
    true = _inverse(_similarity(0.6, 2.0, 150.0, 60.0))
    landmarks = _face_landmarks(true)
    image = np.full((400, 400, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:400, 0:400]
    for (x, y), colour in zip(landmarks, colours):
        image[(xx - x) ** 2 + (yy - y) ** 2 <= 6**2] = colour
    crop, _ = align(image, landmarks)
    for (u, v), colour in zip(np.rint(ARCFACE_TEMPLATE_112).astype(int), colours):
        np.testing.assert_array_equal(crop[v, u], colour)
    assert (crop[5, 5] == 128).all() and (crop[106, 56] == 128).all()


def test_warp_affine_identity_and_shift():
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_affine(image, np.eye(2, 3), (30, 40)), image)
    shifted = warp_affine(image, [[1.0, 0.0, -5.0], [0.0, 1.0, -3.0]], (20, 25))
    np.testing.assert_array_equal(shifted, image[3:23, 5:30])


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((10, 10), np.uint8), r"\(H, W, 3\) uint8"),
    (np.zeros((10, 10, 3), np.float32), r"\(H, W, 3\) uint8"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
])
def test_align_refuses_a_malformed_image(image, message):
    with pytest.raises(ValueError, match=message):
        align(image, ARCFACE_TEMPLATE_112)


def test_align_refuses_wrong_landmark_count_and_size():
    image = np.zeros((112, 112, 3), np.uint8)
    with pytest.raises(ValueError, match="landmarks has 4 points, the template 5"):
        align(image, ARCFACE_TEMPLATE_112[:4])
    with pytest.raises(ValueError, match="size must be a positive int"):
        align(image, ARCFACE_TEMPLATE_112, size=0)


def test_template_is_the_insightface_template():
    assert ARCFACE_TEMPLATE_112.shape == (5, 2)
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112[2], [56.0252, 71.7366])
    assert not ARCFACE_TEMPLATE_112.flags.writeable


def test_warp_reads_only_a_patch_but_matches_the_whole_canvas():
    """The warp converts only the patch it reads; the same image inside a larger black canvas
    (with the matrix shifted to match) warps to the same crop, and a crop wholly outside the
    image is black."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    canvas = np.zeros((600, 700, 3), np.uint8)
    canvas[150:350, 100:400] = image
    matrix = _similarity(0.7, 0.6, -30.0, 40.0)
    shifted = matrix.copy()
    shifted[:, 2] -= matrix[:, :2] @ [100.0, 150.0]  # canvas pixel p is image pixel p - (100, 150)
    crop = warp_affine(image, matrix, 112)
    assert (crop > 0).any() and (crop == 0).all(axis=-1).any()  # partly outside the image
    assert np.abs(crop.astype(int) - warp_affine(canvas, shifted, 112)).max() <= 1
    far = _similarity(0.0, 1.0, -5000.0, 0.0)
    np.testing.assert_array_equal(warp_affine(image, far, (20, 30)), np.zeros((20, 30, 3)))
