"""Synthetic faces with identities and exact landmarks: a recognition set (identity-per-folder
aligned crops and LFW-style verification pairs) and a detection set (faces at every scale on
textured backgrounds, COCO with five keypoints), deterministic per seed.

No package here ships faces labelled by identity, so faces are drawn from parameters:

- **Identity** (:class:`FaceIdentity`, fixed per person): face shape (half-width, half-height,
  chin taper), eye spacing, height, size and iris colour, brows, nose length and width, mouth
  height, width and lip colour, skin and hair colour, hairline, ears, and a texture of spots
  (moles / freckles) at fixed places.
- **Nuisances** (:class:`FaceNuisance`, drawn per image): pose (in-plane roll; yaw by squashing
  one half of the face and moving the nose towards it), lighting (a linear brightness gradient
  and overall exposure), expression (eye openness, smile, open mouth), occlusion (a bar or a
  blob over part of the face), blur and pixel noise.

The five landmarks (``FACE_LANDMARK_NAMES``: eyes, nose tip, mouth corners; *left* and *right*
as seen in the image, RetinaFace's order) are the exact images of the drawn features' points
under the same map as every shape (eye = pupil centre, nose tip = the nose triangle's apex,
mouth corners = the lip outline's ends), in continuous pixel coordinates (pixel centres at
integers). Shapes are polygons drawn 4× supersampled and box-filtered down.

Outputs (``make_face_dataset``):

- ``task="faces"`` (detection): ``images/{split}/*.jpg`` and
  ``annotations/instances_{split}.json`` with one category ``face`` whose ``keypoints`` are the
  five names (``left_*`` / ``right_*`` pairs give the flip table) and skeleton; each face's box
  is the face outline's extent (forehead to chin, cheek to cheek, not the hair or ears), its
  ``keypoints`` flags 2 visible, 1 covered by an occluder or a later face, 0 outside the image.
  Face heights are log-uniform from ``MIN_FACE`` px to ``0.8 * imgsz`` (a third below 32 px).
  ``real_faces=f``: a fraction ``f`` of the train / val faces are real LFW training faces
  instead (:mod:`scaledet.data.real_faces`; box = the pasted square, landmarks ``v = 0``).
- ``task="face-identities"`` (recognition): ``train/<id>/<id>_<nnnn>.png`` (LFW's layout)
  crops aligned to the five-point template by :func:`scaledet.faces.align`,
  ``verify/<id>/...`` for a *disjoint* set of identities, and ``pairs.txt`` over ``verify`` in
  LFW's format (10 folds of ``per_fold`` matched then ``per_fold`` mismatched pairs). With
  ``scenes``: also ``verify_scenes/<id>/<id>_<nnnn>.jpg``, the *unaligned* photo of each verify
  crop (the same face, pose, expression and lighting, pasted at a moderate size on a textured
  background; ``synth_identity_scene``), named as the crops so that ``pairs.txt`` serves both,
  and ``verify_scenes/faces.json`` with each photo's true box and landmarks.

Deterministic: identity ``i`` of the set with code ``c`` is drawn from
``numpy.random.default_rng((seed, c, i, 2))``, its image ``n`` from ``(seed, c, i, n, 3)``
(the photo of a verify scene takes its nuisances from there too, its layout from
``(seed, c, i, n, 6)``), detection image ``i`` of a split from ``(seed, split, i, 4)`` (its
LFW faces, with ``real_faces``, from ``(seed, split, i, 8)``), the pairs from ``(seed, 5)``;
the training and verification sets use different codes, so they never share a person.

What it can and cannot tell: the set checks that the machinery works (landmarks, alignment,
margins, the protocol) and compares methods on a clean, controllable problem; the faces are
cartoons, so absolute accuracies say nothing about real photographs
(:mod:`scaledet.data.real_faces` scores a detector on held-out real faces).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from scaledet.data.coco import write_coco_json
from scaledet.data.real_faces import LFW_TRAIN, lfw_subset, tint_patch
from scaledet.data.records import DetectionDataset, DetectionRecord
from scaledet.data.synth import (
    _SPLIT_CODES,
    JPEG_QUALITY,
    _add_noise,
    _background,
    _draw_hatching,
    _draw_line,
)
from scaledet.data.wider_face import FACE_FLIP_IDX, FACE_LANDMARK_NAMES, FACE_SKELETON
from scaledet.faces.align import align

__all__ = ["FaceIdentity", "FaceNuisance", "RenderedFace", "make_face_dataset",
           "make_face_identities", "random_identity", "random_nuisance", "render_face",
           "synth_face_crop", "synth_face_scene", "synth_identity_scene"]

MIN_FACE = 8.0  # smallest face height in a detection scene (px)
SCENE_FACE = (0.25, 0.45)  # face height in a verify scene, as fractions of its side
SUPERSAMPLE = 4
_TRAIN_CODE, _VERIFY_CODE = 10, 11
_MIXED_SPLITS = ("train", "val")  # the splits that make_face_dataset(real_faces=...) mixes


@dataclass(frozen=True)
class FaceIdentity:
    """What makes a person: geometry in face units (the face is about 2 units tall, centred at
    the origin, y down), colours as RGB 0-255, and the spot texture (``spots``: ``(K, 4)`` x, y,
    radius, darkness)."""

    half_width: float
    half_height: float
    chin: float
    eye_y: float
    eye_dx: float
    eye_rx: float
    eye_ry: float
    iris: tuple[int, int, int]
    brow_gap: float
    brow_thick: float
    brow_tilt: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip: tuple[int, int, int]
    lip_thick: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hairline: float
    hair_volume: float
    ear: float
    spots: np.ndarray

    def vector(self) -> np.ndarray:
        """Geometry and colours as one fixed-length float vector (the spots left out), to
        compare identities."""
        parts = [v for v in self.__dict__.values() if not isinstance(v, np.ndarray)]
        return np.concatenate([np.ravel(np.asarray(p, dtype=np.float64)) for p in parts])


@dataclass(frozen=True)
class FaceNuisance:
    """What changes between photos of one person: ``roll`` (radians, in-plane), ``yaw`` (-0.35
    to 0.35: the side of the face that shrinks; positive shrinks the image-right half),
    ``eye_open`` (fraction of the eye's height), ``smile`` (face units the mouth corners rise),
    ``mouth_open``, lighting (``light_angle`` radians, ``light`` gradient strength, ``exposure``
    factor), ``occluder`` (None, ``"bar"`` or ``"blob"``) with its own generator seed
    ``occluder_seed``, and ``blur`` (Gaussian radius as a fraction of the face height)."""

    roll: float = 0.0
    yaw: float = 0.0
    eye_open: float = 1.0
    smile: float = 0.0
    mouth_open: float = 0.0
    light_angle: float = 0.0
    light: float = 0.0
    exposure: float = 1.0
    occluder: str | None = None
    occluder_seed: int = 0
    blur: float = 0.0


@dataclass
class RenderedFace:
    """A face drawn on a patch: ``rgb`` ``(P, P, 3)`` uint8 (unlit background black),
    ``alpha`` ``(P, P)`` uint8 (the head: face, ears, hair), ``landmarks`` ``(5, 2)`` pixels in
    the patch, ``box`` xyxy of the face outline, ``occluded`` ``(5,)`` bool (a landmark under
    the occluder), ``occluder`` ``(P, P)`` bool mask."""

    rgb: np.ndarray
    alpha: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray
    occluded: np.ndarray
    occluder: np.ndarray


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _rgb(v) -> tuple[int, int, int]:
    return tuple(int(np.clip(round(float(c)), 0, 255)) for c in v)


def random_identity(rng: np.random.Generator) -> FaceIdentity:
    """A random person (every parameter uniform over a plausible cartoon range)."""
    tone = _u(rng, 0, 1)  # skin tones from dark to light, with a random tint
    skin = np.array([90, 55, 35]) + tone * np.array([150, 150, 140]) + rng.uniform(-20, 20, 3)
    hair = rng.uniform(10, 90, 3) * _u(rng, 0.5, 2.8)
    n_spots = int(rng.integers(0, 7))
    spots = np.stack([rng.uniform(-0.5, 0.5, n_spots), rng.uniform(-0.3, 0.7, n_spots),
                      rng.uniform(0.02, 0.06, n_spots), rng.uniform(0.3, 0.7, n_spots)], 1)
    return FaceIdentity(
        half_width=_u(rng, 0.6, 0.8), half_height=_u(rng, 0.88, 1.02), chin=_u(rng, 0.0, 0.35),
        eye_y=_u(rng, -0.24, -0.04), eye_dx=_u(rng, 0.24, 0.36), eye_rx=_u(rng, 0.09, 0.14),
        eye_ry=_u(rng, 0.05, 0.08), iris=_rgb(rng.uniform(20, 160, 3)),
        brow_gap=_u(rng, 0.09, 0.17), brow_thick=_u(rng, 0.025, 0.07),
        brow_tilt=_u(rng, -0.06, 0.06), nose_y=_u(rng, 0.16, 0.32), nose_w=_u(rng, 0.07, 0.15),
        mouth_y=_u(rng, 0.46, 0.6), mouth_w=_u(rng, 0.16, 0.28),
        lip=_rgb(np.array([150, 50, 60]) + rng.uniform(-50, 60, 3)),
        lip_thick=_u(rng, 0.03, 0.07), skin=_rgb(skin), hair=_rgb(hair),
        hairline=_u(rng, -0.85, -0.5), hair_volume=_u(rng, 0.05, 0.3), ear=_u(rng, 0.1, 0.17),
        spots=spots)


def random_nuisance(rng: np.random.Generator, strength: float = 1.0) -> FaceNuisance:
    """Random nuisances; ``strength`` in [0, 1] scales every one (0: a frontal, evenly lit,
    neutral, unoccluded, sharp face)."""
    k = float(strength)
    occluder = None
    if rng.random() < 0.3 * k:
        occluder = "bar" if rng.random() < 0.5 else "blob"
    return FaceNuisance(
        roll=float(np.clip(rng.normal(0, 0.2), -0.5, 0.5)) * k, yaw=_u(rng, -0.35, 0.35) * k,
        eye_open=1.0 - _u(rng, 0.0, 0.6) * k, smile=_u(rng, -0.04, 0.1) * k,
        mouth_open=max(0.0, _u(rng, -0.1, 0.12)) * k, light_angle=_u(rng, 0, 2 * math.pi),
        light=_u(rng, 0.0, 0.6) * k, exposure=1.0 + _u(rng, -0.3, 0.2) * k, occluder=occluder,
        occluder_seed=int(rng.integers(2**31)),
        blur=_u(rng, 0.0, 0.03) * k if rng.random() < 0.4 else 0.0)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _face_outline(f: FaceIdentity, n: int = 64) -> np.ndarray:
    """The face's outline: an ellipse whose lower half narrows towards the chin."""
    p = _ellipse(0.0, 0.0, f.half_width, f.half_height, n)
    lower = np.clip(p[:, 1] / f.half_height, 0, 1)
    p[:, 0] *= 1 - f.chin * lower**2
    return p


def render_face(identity: FaceIdentity, nuisance: FaceNuisance, height: float,
                background: np.ndarray | None = None) -> RenderedFace:
    """Draw one face ``height`` pixels tall (the face outline, forehead to chin) centred on a
    square patch of side ``ceil(1.7 * height) + 4``; ``background`` (that size, uint8 RGB) shows
    outside the head when given (else black)."""
    f, nu = identity, nuisance
    side = int(math.ceil(1.7 * height)) + 4
    ss = SUPERSAMPLE
    scale = height / (2 * f.half_height)  # pixels per face unit
    centre = (side - 1) / 2
    cos_r, sin_r = math.cos(nu.roll), math.sin(nu.roll)

    def to_px(p: np.ndarray) -> np.ndarray:
        """Face units to patch pixels: yaw squash, scale, roll, centre."""
        p = np.array(p, dtype=np.float64).reshape(-1, 2)
        x = p[:, 0] * (1 - nu.yaw * np.tanh(4 * p[:, 0]))  # the yaw side shrinks smoothly
        y = p[:, 1]
        xr, yr = cos_r * x - sin_r * y, sin_r * x + cos_r * y
        return np.stack([centre + scale * xr, centre + scale * yr], 1)

    def to_ss(p: np.ndarray) -> list[tuple[float, float]]:
        q = (to_px(p) + 0.5) * ss - 0.5
        return [tuple(v) for v in q]

    big = side * ss
    canvas = Image.new("RGB", (big, big), (0, 0, 0))
    mask = Image.new("L", (big, big), 0)
    draw, mdraw = ImageDraw.Draw(canvas), ImageDraw.Draw(mask)
    skin, hair = f.skin, f.hair
    darker = _rgb(np.array(skin) * 0.78)
    # hair behind the head, ears, face
    back = _ellipse(0.0, -0.25, f.half_width + f.hair_volume, f.half_height * 0.85 + f.hair_volume)
    for poly, colour in ((back, hair),
                         (_ellipse(-f.half_width, f.eye_y + 0.2, f.ear, 2 * f.ear), darker),
                         (_ellipse(f.half_width, f.eye_y + 0.2, f.ear, 2 * f.ear), darker),
                         (_face_outline(f), skin)):
        draw.polygon(to_ss(poly), fill=colour)
        mdraw.polygon(to_ss(poly), fill=255)
    # hair over the forehead: the outline's part above the hairline
    outline = _face_outline(f, 96)
    top = outline[outline[:, 1] < f.hairline]
    if len(top) >= 3:
        top = top[np.argsort(np.arctan2(top[:, 1], top[:, 0]))]
        fringe = np.concatenate([top, [[top[-1, 0], f.hairline], [top[0, 0], f.hairline]]])
        draw.polygon(to_ss(fringe), fill=hair)
    for x, y, r, dark in f.spots:  # texture
        draw.polygon(to_ss(_ellipse(x, y, r, r, 16)), fill=_rgb(np.array(skin) * (1 - dark)))
    # eyes and brows
    eyes = []
    for side_sign in (-1.0, 1.0):
        ex, ey = side_sign * f.eye_dx, f.eye_y
        ry = f.eye_ry * max(nu.eye_open, 0.15)
        draw.polygon(to_ss(_ellipse(ex, ey, f.eye_rx, ry)), fill=(240, 240, 235))
        r_iris = min(0.55 * f.eye_rx, max(ry, 0.03))
        draw.polygon(to_ss(_ellipse(ex, ey, r_iris, r_iris, 24)), fill=f.iris)
        r_pupil = 0.45 * r_iris
        draw.polygon(to_ss(_ellipse(ex, ey, r_pupil, r_pupil, 16)), fill=(15, 15, 15))
        eyes.append((ex, ey))
        by = ey - f.eye_ry - f.brow_gap
        tilt = side_sign * f.brow_tilt
        brow = np.array([[ex - 1.1 * f.eye_rx, by + tilt], [ex + 1.1 * f.eye_rx, by - tilt],
                         [ex + 1.1 * f.eye_rx, by - tilt - f.brow_thick],
                         [ex - 1.1 * f.eye_rx, by + tilt - f.brow_thick]])
        draw.polygon(to_ss(brow), fill=hair)
    # nose: a darker triangle from between the eyes to the tip, nostrils beside the tip
    shift = 0.25 * nu.yaw  # the nose turns towards the shrinking side
    tip = (shift, f.nose_y)
    nose = np.array([[0.3 * shift, f.eye_y + 0.08], [shift - f.nose_w, f.nose_y - 0.02],
                     [tip[0], tip[1]], [shift + f.nose_w, f.nose_y - 0.02]])
    draw.polygon(to_ss(nose), fill=darker)
    for s_ in (-1, 1):
        nostril = _ellipse(shift + s_ * 0.55 * f.nose_w, f.nose_y - 0.03, 0.03, 0.018, 12)
        draw.polygon(to_ss(nostril), fill=_rgb(np.array(skin) * 0.45))
    # mouth: upper and lower lip curves between the corners
    w, my, lift = f.mouth_w, f.mouth_y, nu.smile
    corners = np.array([[-w, my - lift], [w, my - lift]])
    t = np.linspace(-1, 1, 17)
    upper = np.stack([w * t, my - lift * t**2 - f.lip_thick * (1 - t**2)], 1)
    lower = np.stack([w * t, my - lift * t**2 + (f.lip_thick + nu.mouth_open) * (1 - t**2)], 1)
    draw.polygon(to_ss(np.concatenate([upper, lower[::-1]])), fill=f.lip)
    if nu.mouth_open > 0.01:
        inner = np.stack([0.8 * w * t, my - lift * (0.8 * t) ** 2
                          + nu.mouth_open * (1 - t**2) * 0.8], 1)
        mid = np.stack([0.8 * w * t, np.full_like(t, my) - lift * (0.8 * t) ** 2], 1)
        draw.polygon(to_ss(np.concatenate([mid, inner[::-1]])), fill=(40, 10, 15))
    landmarks_units = np.array([eyes[0], eyes[1], tip, corners[0], corners[1]])
    # occluder on top of everything
    occ = Image.new("L", (big, big), 0)
    if nu.occluder is not None:
        orng = np.random.default_rng(nu.occluder_seed)
        colour = _rgb(orng.uniform(0, 255, 3))
        if nu.occluder == "bar":
            y0 = _u(orng, -0.6, 0.6)
            th = _u(orng, 0.12, 0.35)
            ang = _u(orng, -0.4, 0.4)
            dx, dy = math.cos(ang), math.sin(ang)
            c = np.array([0.0, y0])
            along, across = np.array([dx, dy]) * 1.3, np.array([-dy, dx]) * th / 2
            poly = np.array([c - along - across, c + along - across, c + along + across,
                             c - along + across])
        else:
            cx, cy = _u(orng, -0.5, 0.5), _u(orng, -0.4, 0.7)
            n = int(orng.integers(7, 12))
            ang = np.sort(orng.uniform(0, 2 * math.pi, n))
            rad = orng.uniform(0.15, 0.4, n)
            poly = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        draw.polygon(to_ss(poly), fill=colour)
        ImageDraw.Draw(occ).polygon(to_ss(poly), fill=255)
        mdraw.polygon(to_ss(poly), fill=255)
    size = (side, side)
    rgb = np.asarray(canvas.resize(size, Image.BOX), dtype=np.float64)
    alpha = np.asarray(mask.resize(size, Image.BOX), dtype=np.float64) / 255.0
    occluder = np.asarray(occ.resize(size, Image.BOX)) >= 128
    # lighting: a linear gradient across the face times the exposure
    yy, xx = np.mgrid[0:side, 0:side]
    along = ((xx - centre) * math.cos(nu.light_angle) + (yy - centre) * math.sin(nu.light_angle)) \
        / max(scale, 1e-6)
    gain = nu.exposure * (1 + nu.light * np.clip(along, -1.2, 1.2) / 1.2)
    rgb = rgb * gain[..., None]
    if background is not None:
        if background.shape != (side, side, 3):
            raise ValueError(f"background must be ({side}, {side}, 3), got {background.shape}")
        rgb = rgb * alpha[..., None] + background * (1 - alpha[..., None])
    out = Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8))
    alpha_img = Image.fromarray((alpha * 255).round().astype(np.uint8))
    if nu.blur > 0:
        radius = nu.blur * height
        out = out.filter(ImageFilter.GaussianBlur(radius))
        alpha_img = alpha_img.filter(ImageFilter.GaussianBlur(radius))
    landmarks = to_px(landmarks_units)
    box_pts = to_px(_face_outline(f))
    box = np.array([*box_pts.min(0), *(box_pts.max(0) + 1)])
    ij = np.clip(np.floor(landmarks + 0.5).astype(int), 0, side - 1)
    return RenderedFace(np.asarray(out), np.asarray(alpha_img), landmarks, box,
                        occluder[ij[:, 1], ij[:, 0]], occluder)


# ---- recognition: aligned crops per identity ------------------------------------------------

def synth_face_crop(identity: FaceIdentity, rng: np.random.Generator, size: int = 112,
                    strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One photo of ``identity`` with random nuisances, on a random background, aligned to the
    five-point template by its landmarks: ``(crop (size, size, 3) uint8, landmarks (5, 2) in the
    photo before alignment)``."""
    nuisance = random_nuisance(rng, strength)
    height = _u(rng, 0.9, 1.3) * size * 0.8
    side = int(math.ceil(1.7 * height)) + 4
    face = render_face(identity, nuisance, height, _background(rng, side).astype(np.float64))
    image = _add_noise(rng, face.rgb)
    crop, _ = align(image, face.landmarks, size=size)
    return crop, face.landmarks


def synth_identity_scene(identity: FaceIdentity, nuisance: FaceNuisance,
                         rng: np.random.Generator, imgsz: int = 320
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An unaligned photo of one person: ``identity`` with ``nuisance`` (pose, expression,
    lighting, occluder, blur), ``SCENE_FACE`` of the side tall (log-uniform), wholly inside a
    textured ``imgsz`` square (gradient, hatching, lines as the detection scenes), then pixel
    noise. Returns ``(image (imgsz, imgsz, 3) uint8 RGB, box (4,) xyxy, landmarks (5, 2))``,
    pixels (pixel centres at integers)."""
    canvas = Image.fromarray(_background(rng, imgsz))
    for _ in range(rng.integers(0, 3)):
        _draw_hatching(rng, canvas)
    for _ in range(rng.integers(1, 5)):
        _draw_line(rng, canvas)
    lo, hi = SCENE_FACE
    height = math.exp(_u(rng, math.log(lo * imgsz), math.log(hi * imgsz)))
    face = render_face(identity, nuisance, height)
    side = face.rgb.shape[0]
    x0 = int(rng.integers(0, max(imgsz - side, 0) + 1))
    y0 = int(rng.integers(0, max(imgsz - side, 0) + 1))
    w = min(side, imgsz - x0)
    a = face.alpha[:w, :w].astype(np.float64)[..., None] / 255.0
    region = np.asarray(canvas, dtype=np.float64)[y0:y0 + w, x0:x0 + w]
    blended = a * face.rgb[:w, :w] + (1 - a) * region
    canvas.paste(Image.fromarray(blended.round().astype(np.uint8)), (x0, y0))
    box = np.clip(face.box + [x0, y0, x0, y0], 0, imgsz)
    return _add_noise(rng, np.asarray(canvas)), box, face.landmarks + [x0, y0]


def make_face_identities(out: str | Path, identities: int = 100, per_identity: int = 20,
                         verify_identities: int = 50, verify_per_identity: int = 10,
                         pairs_per_fold: int = 30, folds: int = 10, seed: int = 0,
                         size: int = 112, scenes: int | None = None) -> Path:
    """Write the recognition set to the (empty) folder ``out``: ``train/`` (``identities``
    people × ``per_identity`` aligned crops), ``verify/`` (a disjoint set of
    ``verify_identities`` people × ``verify_per_identity``) and ``pairs.txt`` over ``verify``
    (``folds`` folds of ``pairs_per_fold`` matched then ``pairs_per_fold`` mismatched pairs,
    LFW's format). ``scenes``: also write ``verify_scenes/`` (the unaligned ``scenes`` px photo
    of every verify crop, ``synth_identity_scene``) and ``verify_scenes/faces.json``
    (``{"<id>/<id>_<nnnn>.jpg": {"box": xyxy, "landmarks": [[x, y] * 5]}}``). The crops do not
    depend on ``scenes``. Returns ``out``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; remove it or pick another")
    if min(identities, per_identity, pairs_per_fold, folds) < 1:
        raise ValueError("identities, per_identity, pairs_per_fold and folds must be >= 1")
    if verify_identities < 2 or verify_per_identity < 2:
        raise ValueError(f"pairs need >= 2 verification identities with >= 2 images each, got "
                         f"{verify_identities} x {verify_per_identity}")
    if size < 16:
        raise ValueError(f"crop size must be at least 16 px, got {size}")
    if scenes is not None and scenes < 64:
        raise ValueError(f"scene side must be at least 64 px, got {scenes}")
    for folder, code, n_id, n_img in (("train", _TRAIN_CODE, identities, per_identity),
                                      ("verify", _VERIFY_CODE, verify_identities,
                                       verify_per_identity)):
        for i in range(n_id):
            identity = random_identity(np.random.default_rng((seed, code, i, 2)))
            name = _identity_name(code, i)
            (out / folder / name).mkdir(parents=True, exist_ok=True)
            for n in range(1, n_img + 1):
                crop, _ = synth_face_crop(identity, np.random.default_rng((seed, code, i, n, 3)),
                                          size)
                Image.fromarray(crop).save(out / folder / name / f"{name}_{n:04d}.png")
    if scenes is not None:
        _write_scenes(out / "verify_scenes", seed, verify_identities, verify_per_identity,
                      scenes)
    _write_pairs(out / "pairs.txt", np.random.default_rng((seed, 5)), verify_identities,
                 verify_per_identity, pairs_per_fold, folds)
    return out


def _write_scenes(folder: Path, seed: int, n_id: int, n_img: int, imgsz: int) -> None:
    """The unaligned photo of every verify crop (see ``make_face_identities``)."""
    truth = {}
    for i in range(n_id):
        identity = random_identity(np.random.default_rng((seed, _VERIFY_CODE, i, 2)))
        name = _identity_name(_VERIFY_CODE, i)
        (folder / name).mkdir(parents=True, exist_ok=True)
        for n in range(1, n_img + 1):
            # the crop's nuisances: synth_face_crop draws them first from this generator
            nuisance = random_nuisance(np.random.default_rng((seed, _VERIFY_CODE, i, n, 3)))
            image, box, landmarks = synth_identity_scene(
                identity, nuisance, np.random.default_rng((seed, _VERIFY_CODE, i, n, 6)), imgsz)
            rel = f"{name}/{name}_{n:04d}.jpg"
            Image.fromarray(image).save(folder / rel, quality=JPEG_QUALITY)
            truth[rel] = {"box": np.round(box, 3).tolist(),
                          "landmarks": np.round(landmarks, 3).tolist()}
    rows = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in truth.items())
    (folder / "faces.json").write_text("{\n" + rows + "\n}\n", encoding="utf-8")


def _identity_name(code: int, i: int) -> str:
    return f"{'t' if code == _TRAIN_CODE else 'v'}{i:05d}"


def _write_pairs(path: Path, rng: np.random.Generator, n_id: int, n_img: int, per_fold: int,
                 folds: int) -> None:
    lines = [f"{folds}\t{per_fold}"]
    for _ in range(folds):
        for _ in range(per_fold):
            i = int(rng.integers(n_id))
            a, b = rng.choice(n_img, 2, replace=False) + 1
            lines.append(f"{_identity_name(_VERIFY_CODE, i)}\t{a}\t{b}")
        for _ in range(per_fold):
            i, j = rng.choice(n_id, 2, replace=False)
            a, b = rng.integers(1, n_img + 1, 2)
            lines.append(f"{_identity_name(_VERIFY_CODE, int(i))}\t{a}\t"
                         f"{_identity_name(_VERIFY_CODE, int(j))}\t{b}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---- detection: faces at every scale in scenes -----------------------------------------------

def _lfw_face(index: int, skin, height: float) -> RenderedFace:
    """LFW face ``index`` as a :class:`RenderedFace` in the patch ``render_face`` would draw for
    ``height``: a ``round(height)`` square tinted to ``skin`` at the patch's centre (alpha 255
    there, 0 around), box = the square, no landmarks (zeros), no occluder."""
    side = int(math.ceil(1.7 * height)) + 4
    s = max(1, int(round(height)))
    o = (side - s) // 2
    rgb = np.zeros((side, side, 3), dtype=np.uint8)
    alpha = np.zeros((side, side), dtype=np.uint8)
    rgb[o:o + s, o:o + s] = tint_patch(lfw_subset()[index], s, skin)
    alpha[o:o + s, o:o + s] = 255
    return RenderedFace(rgb, alpha, np.zeros((5, 2)), np.array([o, o, o + s, o + s], float),
                        np.zeros(5, dtype=bool), np.zeros((side, side), dtype=bool))


def synth_face_scene(rng: np.random.Generator, imgsz: int = 320, real_faces: float = 0.0,
                     real_rng: np.random.Generator | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: ``(imgsz, imgsz, 3)`` uint8 RGB, face boxes ``(N, 4)`` xyxy pixels and
    keypoints ``(N, 5, 3)`` float32 (``x, y`` pixels, ``v``: 2 visible, 1 covered, 0 outside).
    1-8 faces; height log-uniform in ``[MIN_FACE, 32)`` for a third, ``[32, 0.8 imgsz]`` else.

    ``real_faces`` > 0: each face is, with that chance (drawn from ``real_rng``), replaced by an
    LFW training face (``scaledet.data.real_faces.LFW_TRAIN``, drawn from ``real_rng``) tinted
    to the drawn identity's skin: a square as tall as the synthetic face would have been, at its
    centre, whose box is the square and whose landmarks are unlabelled (``v = 0``). Every draw
    from ``rng`` stays the same, so the rest of the scene does not change; with 0 ``real_rng``
    is not used."""
    canvas = Image.fromarray(_background(rng, imgsz))
    for _ in range(rng.integers(0, 3)):
        _draw_hatching(rng, canvas)
    for _ in range(rng.integers(1, 5)):
        _draw_line(rng, canvas)
    owner = np.full((imgsz, imgsz), -1, dtype=np.int32)
    occluded = np.zeros((imgsz, imgsz), dtype=bool)
    if not 0.0 <= real_faces <= 1.0:
        raise ValueError(f"real_faces must be a fraction in [0, 1], got {real_faces}")
    if real_faces > 0 and real_rng is None:
        raise ValueError("real_faces > 0 needs real_rng, the generator of the LFW draws")
    faces = []
    for j in range(int(rng.integers(1, 9))):
        small = rng.random() < 1 / 3
        lo, hi = (MIN_FACE, 32.0) if small else (32.0, max(32.0, 0.8 * imgsz))
        height = math.exp(_u(rng, math.log(lo), math.log(hi)))
        identity = random_identity(rng)
        nuisance = random_nuisance(rng)
        real = real_faces > 0 and real_rng.random() < real_faces
        if real:
            face = _lfw_face(int(real_rng.choice(LFW_TRAIN)), identity.skin, height)
        else:
            face = render_face(identity, nuisance, height)
        side = face.rgb.shape[0]
        x0 = int(rng.integers(-side // 4, max(imgsz - 3 * side // 4, -side // 4 + 1)))
        y0 = int(rng.integers(-side // 4, max(imgsz - 3 * side // 4, -side // 4 + 1)))
        # the part of the patch inside the image
        px0, py0 = max(0, -x0), max(0, -y0)
        px1, py1 = min(side, imgsz - x0), min(side, imgsz - y0)
        if px1 <= px0 or py1 <= py0:
            continue
        a = face.alpha[py0:py1, px0:px1].astype(np.float64)[..., None] / 255.0
        region = np.asarray(canvas, dtype=np.float64)[y0 + py0:y0 + py1, x0 + px0:x0 + px1]
        blended = a * face.rgb[py0:py1, px0:px1] + (1 - a) * region
        canvas.paste(Image.fromarray(blended.round().astype(np.uint8)), (x0 + px0, y0 + py0))
        head = face.alpha[py0:py1, px0:px1] >= 128
        sl = (slice(y0 + py0, y0 + py1), slice(x0 + px0, x0 + px1))
        owner[sl][head] = j
        occluded[sl][head] = face.occluder[py0:py1, px0:px1][head]
        faces.append((j, face.landmarks + [x0, y0], face.box + [x0, y0, x0, y0], not real))
    boxes, keypoints = [], []
    for j, lm, box, labelled in faces:
        clipped = np.clip(box, 0, imgsz)
        if (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) < 0.5 * (
                (box[2] - box[0]) * (box[3] - box[1])):
            continue  # mostly outside the image
        ij = np.floor(lm + 0.5).astype(int)
        inside = (lm[:, 0] >= 0) & (lm[:, 0] < imgsz) & (lm[:, 1] >= 0) & (lm[:, 1] < imgsz)
        kp = np.zeros((5, 3), dtype=np.float32)
        for k in np.flatnonzero(inside & labelled):
            x, y = np.clip(ij[k], 0, imgsz - 1)
            covered = owner[y, x] != j or occluded[y, x]
            kp[k] = (lm[k, 0], lm[k, 1], 1 if covered else 2)
        if not (owner == j).any():
            continue  # hidden behind later faces
        boxes.append(clipped)
        keypoints.append(kp)
    image = _add_noise(rng, np.asarray(canvas))
    return (image, np.array(boxes, dtype=np.float64).reshape(-1, 4),
            np.array(keypoints, dtype=np.float32).reshape(-1, 5, 3))


def make_face_dataset(out: str | Path, splits: dict[str, int], seed: int = 0,
                      imgsz: int = 320, real_faces: float = 0.0) -> Path:
    """Write the detection set (COCO with five keypoints per face, see the module docstring)
    to the (empty) folder ``out``; ``splits`` maps split names to image counts.

    ``real_faces``: the fraction of faces in the ``train`` and ``val`` splits replaced by LFW
    training faces (``synth_face_scene``; landmarks unlabelled, so the landmark losses skip
    them); the LFW draws of image ``i`` come from ``(seed, split code, i, 8)``. Other splits
    (``test``) never get one. 0 (the default) writes exactly the set without the option."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; remove it or pick another")
    if not 0.0 <= real_faces <= 1.0:
        raise ValueError(f"real_faces must be a fraction in [0, 1], got {real_faces}")
    if real_faces > 0:
        lfw_subset()  # fail before writing anything when scikit-image is missing
    for split, n in splits.items():
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        records = []
        mix = real_faces if split in _MIXED_SPLITS else 0.0
        for i in range(n):
            code = _SPLIT_CODES.get(split, 3)
            rng = np.random.default_rng((seed, code, i, 4))
            real_rng = np.random.default_rng((seed, code, i, 8)) if mix > 0 else None
            image, boxes, keypoints = synth_face_scene(rng, imgsz, mix, real_rng)
            name = f"{i:06d}.jpg"
            Image.fromarray(image).save(image_dir / name, quality=JPEG_QUALITY)
            records.append(DetectionRecord(i + 1, name, imgsz, imgsz, boxes,
                                           np.zeros(len(boxes), dtype=np.int64),
                                           keypoints=keypoints))
        source = f"synthetic faces {split} (seed {seed})"
        if mix > 0:
            source += f", {mix:g} of the faces LFW {LFW_TRAIN[0]}-{LFW_TRAIN[-1]}"
        ds = DetectionDataset(records, ["face"], image_root=image_dir, source=source,
                              keypoint_names=list(FACE_LANDMARK_NAMES),
                              skeleton=list(FACE_SKELETON), flip_idx=list(FACE_FLIP_IDX),
                              num_keypoints=len(FACE_LANDMARK_NAMES))
        write_coco_json(ds, out / "annotations" / f"instances_{split}.json")
    return out
