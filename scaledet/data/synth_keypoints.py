"""The built-in synthetic keypoint dataset: articulated stick figures with COCO's 17 joints.

Every image holds 1-5 ``person`` figures on the box dataset's cluttered backgrounds (colour
gradient, blobs, hatching, lines, pixel noise) plus clutter that is no person: jagged blobs and
stick-like polylines as thick as limbs. A figure is posed along a kinematic chain: the pelvis
sets the torso's lean, the torso the shoulders and hips (narrowed for a half-turned body), the
shoulders the upper arms, which the elbows bend, the hips the thighs, which the knees bend, and
the neck the head (tilted). Segment lengths and limb thickness vary per figure; the figure
height (pixels) is log-uniform in ``[MIN_HEIGHT, 48)`` for a third of the figures and in
``[48, 0.95 * imgsz]`` for the rest. A figure faces the camera (its left side on the image's
right, eyes and nose drawn) or turns its back (left on the left; eyes and nose not labelled,
``v = 0``), so a mirrored figure is again a valid figure once left and right are swapped.

Keypoints are the joints' exact positions (pixels, continuous coordinates) in COCO's order
(``KEYPOINT_NAMES``) with COCO's ``SKELETON``. Flags: 2 when the joint's pixel shows the figure
itself; 1 when a later figure or an occluder blob (drawn over joints on purpose) covers it; 0
with ``x = y = 0`` for a joint outside the image (figures may stand partly outside) or an
unlabelled face point. The box is the drawn figure's extent clipped to the image (grown to hold
its labelled points), ``area`` its pixel count. A figure less than ``MIN_VISIBLE`` visible is
left out of the labels (it stays in the picture).

Deterministic: image ``i`` of split ``s`` is drawn from
``numpy.random.default_rng((seed, s, i, 1))`` only and written as a quality-90 JPEG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from scaledet.data.coco import write_coco_json
from scaledet.data.records import DetectionDataset, DetectionRecord, flip_index_from_names
from scaledet.data.synth import (
    _SPLIT_CODES,
    JPEG_QUALITY,
    _add_noise,
    _background,
    _colour,
    _contrasting_colour,
    _distractor,
    _draw_hatching,
    _draw_line,
    _paint,
    _render,
)

__all__ = ["KEYPOINT_NAMES", "SKELETON", "make_keypoint_dataset", "synth_keypoint_image"]

KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)
"""COCO's limbs: 1-based pairs of ``KEYPOINT_NAMES`` indices."""
MIN_HEIGHT = 16.0
MIN_VISIBLE = 0.3
_CLUTTER, _OCCLUDER = -2, -3  # owner ids: clutter under the figures, blobs over them
_J = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
_LIMBS = (("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("right_hip", "right_knee"),
          ("right_knee", "right_ankle"), ("left_shoulder", "left_elbow"),
          ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
          ("right_elbow", "right_wrist"))


def make_keypoint_dataset(out: Path, splits: dict[str, int], seed: int, imgsz: int,
                          format: str) -> Path:
    """Write the keypoint dataset to the (empty) folder ``out``: COCO
    (``annotations/instances_{split}.json`` whose ``person`` category names the joints and the
    skeleton) or YOLO pose (``data.yaml`` with ``kpt_shape: [17, 3]`` and ``flip_idx``)."""
    datasets = {s: _write_split(out, s, n, seed, imgsz) for s, n in splits.items()}
    if format == "coco":
        for split, ds in datasets.items():
            write_coco_json(ds, out / "annotations" / f"instances_{split}.json")
    else:
        from scaledet.data.yolo import write_yolo_labels, write_yolo_yaml

        for split, ds in datasets.items():
            write_yolo_labels(ds, out / "labels" / split)
        write_yolo_yaml(out / "data.yaml", ["person"], {s: f"images/{s}" for s in splits},
                        kpt_shape=(len(KEYPOINT_NAMES), 3),
                        flip_idx=flip_index_from_names(list(KEYPOINT_NAMES)),
                        keypoint_names=list(KEYPOINT_NAMES), skeleton=list(SKELETON))
    return out


def _write_split(out: Path, split: str, n: int, seed: int, imgsz: int) -> DetectionDataset:
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rng = np.random.default_rng((seed, _SPLIT_CODES.get(split, 3), i, 1))
        image, boxes, keypoints, areas = synth_keypoint_image(rng, imgsz)
        name = f"{i:06d}.jpg"
        Image.fromarray(image).save(image_dir / name, quality=JPEG_QUALITY)
        records.append(DetectionRecord(i + 1, name, imgsz, imgsz, boxes,
                                       np.zeros(len(boxes), dtype=np.int64), areas=areas,
                                       keypoints=keypoints))
    return DetectionDataset(records, ["person"], image_root=image_dir,
                            source=f"synthetic keypoints {split} (seed {seed})",
                            keypoint_names=list(KEYPOINT_NAMES), skeleton=list(SKELETON))


def synth_keypoint_image(rng: np.random.Generator, imgsz: int = 320
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image: ``(imgsz, imgsz, 3)`` uint8 RGB, boxes ``(N, 4)`` xyxy pixels, keypoints
    ``(N, 17, 3)`` float32 (``x, y`` pixels, ``v``), areas ``(N,)`` (figure pixels)."""
    canvas = Image.fromarray(_background(rng, imgsz))
    for _ in range(rng.integers(0, 3)):
        _draw_hatching(rng, canvas)
    for _ in range(rng.integers(2, 6)):
        _draw_line(rng, canvas)
    owner = np.full((imgsz, imgsz), -1, dtype=np.int16)  # which figure owns each pixel
    for _ in range(rng.integers(0, 3)):
        mask, (x, y) = _distractor(rng, imgsz)
        _paint(rng, canvas, owner, mask, x, y, item=_CLUTTER)
    for _ in range(rng.integers(0, 4)):
        _draw_sticks(rng, canvas, owner)
    figures = []
    for j in range(int(rng.integers(1, 6))):
        points, labelled, parts = _pose(rng, imgsz)
        mask = _draw_figure(rng, canvas, parts, labelled, points)
        owner[mask] = j
        figures.append((points, labelled, mask))
    for _ in range(rng.integers(0, 3)):
        _draw_occluder(rng, canvas, owner, figures, imgsz)
    boxes, keypoints, areas = [], [], []
    for j, (points, labelled, mask) in enumerate(figures):
        drawn = int(mask.sum())
        if drawn == 0 or (owner == j).sum() < MIN_VISIBLE * drawn:
            continue
        kpts = _flags(points, labelled, owner, j, imgsz)
        boxes.append(_box(mask, kpts))
        keypoints.append(kpts)
        areas.append(float(drawn))
    image = _add_noise(rng, np.asarray(canvas))
    return (image, np.array(boxes, dtype=np.float64).reshape(-1, 4),
            np.array(keypoints, dtype=np.float32).reshape(-1, len(KEYPOINT_NAMES), 3),
            np.array(areas, dtype=np.float64))


def _unit(angle: float) -> np.ndarray:
    """Direction at ``angle`` radians from straight down, counterclockwise on screen (y down):
    0 down, pi/2 right, pi up."""
    return np.array([math.sin(angle), math.cos(angle)])


def _pose(rng: np.random.Generator, imgsz: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """A random pose placed on the image: ``(17, 2)`` joint positions (pixels), ``(17,)`` bool
    labelled (face points of a figure seen from behind are not), and the drawing parameters."""
    small = rng.random() < 1 / 3
    lo, hi = (MIN_HEIGHT, 48.0) if small else (48.0, max(48.0, 0.95 * imgsz))
    height = math.exp(rng.uniform(math.log(lo), math.log(hi)))

    def seg(fraction: float) -> float:
        return fraction * height * math.exp(rng.uniform(-0.12, 0.12))

    torso, neck, head_r = seg(0.30), seg(0.05), seg(0.065)
    width = rng.uniform(0.35, 1.0)  # < 1: the body half turned
    shoulder_w, hip_w = seg(0.11) * width, seg(0.075) * width
    lean = rng.normal(0.0, 0.15)
    up = _unit(math.pi + lean)
    across = np.array([-up[1], up[0]])  # image right for an upright figure
    front = rng.random() < 0.7
    side = 1.0 if front else -1.0  # where the person's left lies along ``across``
    p = np.zeros((len(KEYPOINT_NAMES), 2))
    pelvis = np.zeros(2)
    neck_base = pelvis + torso * up
    for name, sign in (("left", side), ("right", -side)):
        p[_J[f"{name}_shoulder"]] = neck_base + sign * shoulder_w * across
        p[_J[f"{name}_hip"]] = pelvis + sign * hip_w * across
        out = sign  # the image side this shoulder is on (``across`` points right)
        arm = lean + out * rng.uniform(-0.4, 2.8)
        fore = arm + rng.uniform(-2.2, 2.2)
        p[_J[f"{name}_elbow"]] = p[_J[f"{name}_shoulder"]] + seg(0.17) * _unit(arm)
        p[_J[f"{name}_wrist"]] = p[_J[f"{name}_elbow"]] + seg(0.15) * _unit(fore)
        thigh = 0.3 * lean + out * rng.uniform(-0.3, 0.9)
        shin = thigh + rng.uniform(-0.9, 0.9)
        p[_J[f"{name}_knee"]] = p[_J[f"{name}_hip"]] + seg(0.24) * _unit(thigh)
        p[_J[f"{name}_ankle"]] = p[_J[f"{name}_knee"]] + seg(0.23) * _unit(shin)
    tilt = lean + rng.normal(0.0, 0.2)
    head_up = _unit(math.pi + tilt)
    head_across = np.array([-head_up[1], head_up[0]])
    centre = neck_base + (neck + head_r) * head_up
    turn = rng.uniform(-0.35, 0.35) * head_r * head_across  # face turned a little sideways
    p[_J["nose"]] = centre - 0.2 * head_r * head_up + turn
    for name, sign in (("left", side), ("right", -side)):
        p[_J[f"{name}_eye"]] = centre + 0.2 * head_r * head_up + sign * 0.4 * head_r * head_across \
            + turn
        p[_J[f"{name}_ear"]] = centre + sign * 0.95 * head_r * head_across
    labelled = np.ones(len(KEYPOINT_NAMES), dtype=bool)
    if not front:
        labelled[[_J["nose"], _J["left_eye"], _J["right_eye"]]] = False
    lo_xy = np.minimum(p.min(0), centre - head_r)
    hi_xy = np.maximum(p.max(0), centre + head_r)
    extent = hi_xy - lo_xy
    if rng.random() < 0.2:  # partly outside the image: some joints drop out (v = 0)
        offset = rng.uniform(-0.5 * extent, imgsz - 0.5 * extent) - lo_xy
    else:
        room = np.maximum(imgsz - extent, 0.0)
        offset = rng.uniform(0.0, 1.0, 2) * room - lo_xy + np.minimum(imgsz - extent, 0.0) / 2
    limb_w = max(1.0, height * rng.uniform(0.035, 0.08))
    parts = {"centre": centre + offset, "head_r": head_r, "limb_w": limb_w, "front": front}
    return p + offset, labelled, parts


def _draw_figure(rng: np.random.Generator, canvas: Image.Image, parts: dict,
                 labelled: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Draw one figure on ``canvas``; return its ``(H, W)`` bool mask (pixels it covers)."""
    s = canvas.width
    layer = Image.new("L", (s, s), 0)
    centre, head_r, w = parts["centre"], parts["head_r"], parts["limb_w"]
    x0, y0 = np.clip(np.floor(points.min(0) - 2 * w - head_r), 0, s - 1).astype(int)
    region = np.asarray(canvas.crop((int(x0), int(y0), int(x0) + 8, int(y0) + 8)))
    body = _contrasting_colour(rng, region.reshape(-1, 3).mean(0).astype(np.float64))
    shade = tuple(int(v) for v in np.clip(np.array(body) + rng.integers(-50, 51, 3), 0, 255))
    draws = [(ImageDraw.Draw(canvas), body, shade), (ImageDraw.Draw(layer), 255, 255)]
    torso = [tuple(points[_J[n]]) for n in ("left_shoulder", "right_shoulder", "right_hip",
                                            "left_hip")]
    for draw, fill, limb in draws:
        draw.polygon(torso, fill=fill)
        draw.line(torso + [torso[0]], fill=fill, width=max(1, round(w)))
        for a, b in _LIMBS:
            thick = w * (1.25 if "hip" in a or "knee" in a else 1.0)
            _thick_segment(draw, points[_J[a]], points[_J[b]], thick, limb)
        shoulders = (points[_J["left_shoulder"]] + points[_J["right_shoulder"]]) / 2
        _thick_segment(draw, shoulders, centre, w, fill)
        r = head_r
        draw.ellipse([centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r], fill=fill)
    if parts["front"] and head_r >= 3:  # facial features: the cue for left and right
        face = ImageDraw.Draw(canvas)
        eye = tuple(int(v) for v in (np.array(body) + 128) % 256)
        for name in ("left_eye", "right_eye", "nose"):
            x, y = points[_J[name]]
            rr = max(0.8, 0.14 * head_r)
            face.ellipse([x - rr, y - rr, x + rr, y + rr], fill=eye if "eye" in name else shade)
    return np.asarray(layer) > 0


def _thick_segment(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, width: float,
                   fill) -> None:
    """A line of ``width`` pixels with round ends."""
    draw.line([tuple(a), tuple(b)], fill=fill, width=max(1, round(width)))
    r = max(0.5, width / 2)
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def _draw_sticks(rng: np.random.Generator, canvas: Image.Image, owner: np.ndarray) -> None:
    """Clutter: a polyline of 2-4 limb-like segments (no person)."""
    s = canvas.width
    n = int(rng.integers(2, 5))
    length = math.exp(rng.uniform(math.log(8), math.log(s / 3)))
    xy = [rng.uniform(0, s, 2)]
    angle = rng.uniform(0, 2 * math.pi)
    for _ in range(n):
        angle += rng.uniform(-1.5, 1.5)
        xy.append(xy[-1] + length * _unit(angle))
    layer = Image.new("L", (s, s), 0)
    width = max(1.0, length * rng.uniform(0.08, 0.3))
    colour = _colour(rng)
    for draw, fill in ((ImageDraw.Draw(canvas), colour), (ImageDraw.Draw(layer), 255)):
        for a, b in zip(xy[:-1], xy[1:]):
            _thick_segment(draw, a, b, width, fill)
    owner[np.asarray(layer) > 0] = _CLUTTER


def _draw_occluder(rng: np.random.Generator, canvas: Image.Image, owner: np.ndarray,
                   figures: list, imgsz: int) -> None:
    """A jagged blob over a random joint of a random figure (its points there get ``v = 1``)."""
    points = figures[int(rng.integers(len(figures)))][0]
    joint = points[int(rng.integers(len(points)))]
    spread = np.ptp(points, axis=0).max()
    w, h = (float(np.clip(spread * rng.uniform(0.12, 0.35), 4, 0.5 * imgsz)) for _ in range(2))
    x0 = float(np.clip(joint[0] - w * rng.uniform(0.2, 0.8), 0, imgsz - w))
    y0 = float(np.clip(joint[1] - h * rng.uniform(0.2, 0.8), 0, imgsz - h))
    n = int(rng.integers(7, 12))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.5, 1.0, n)
    outline = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    mask, (x, y) = _render(outline, x0, y0, w, h, 0.0)
    mask = mask.crop((0, 0, min(mask.width, imgsz - x), min(mask.height, imgsz - y)))
    _paint(rng, canvas, owner, mask, x, y, item=_OCCLUDER)


def _flags(points: np.ndarray, labelled: np.ndarray, owner: np.ndarray, j: int,
           imgsz: int) -> np.ndarray:
    """``(17, 3)`` float32 ``x, y, v``: 1 when a later figure or an occluder covers the
    joint's pixel, else 2; 0 (``x = y = 0``) unlabelled or outside the image."""
    out = np.zeros((len(points), 3), dtype=np.float32)
    for k, (x, y) in enumerate(points):
        if not labelled[k] or not (0 <= x < imgsz and 0 <= y < imgsz):
            continue
        top = owner[int(y), int(x)]
        out[k] = (x, y, 1 if top > j or top == _OCCLUDER else 2)
    return out


def _box(mask: np.ndarray, kpts: np.ndarray) -> tuple[float, float, float, float]:
    """The mask's pixel extent (``x2`` one past the last column), grown to hold the labelled
    points."""
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    x1, y1, x2, y2 = float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)
    lab = kpts[kpts[:, 2] > 0]
    if len(lab):
        x1, y1 = min(x1, float(lab[:, 0].min())), min(y1, float(lab[:, 1].min()))
        x2, y2 = max(x2, float(lab[:, 0].max())), max(y2, float(lab[:, 1].max()))
    return x1, y1, x2, y2
