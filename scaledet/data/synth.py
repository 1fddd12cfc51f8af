"""The built-in synthetic detection dataset: shapes on cluttered backgrounds, no download needed.

Every image holds 3-12 objects of ``CLASS_NAMES`` (8 shapes drawn with ``PIL.ImageDraw``), each
with a random colour (class is never decided by colour), an optional outline, a small rotation and
aspect jitter. Sizes (``sqrt(box area)``) are log-uniform in ``[6, 32)`` px for a third of the
objects (COCO "small") and in ``[32, imgsz / 2]`` for the rest. Backgrounds mix a colour gradient,
low-frequency colour blobs, random lines and pixel noise; distractor shapes that are no class
(jagged blobs, L shapes, arcs) are drawn in between, over patches of hatching. Later shapes occlude earlier ones: an object
less than ``MIN_VISIBLE`` visible is dropped from the labels (it stays in the picture).
Boxes are the full (amodal) extent of each shape, ``xyxy`` pixels, rounded to 0.01 px.

Deterministic: image ``i`` of split ``s`` is drawn from ``numpy.random.default_rng((seed, s, i))``
only, and written as a quality-90 JPEG, so two runs give identical files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from scaledet.data.coco import to_coco_dict, write_coco_json
from scaledet.data.records import DetectionDataset, DetectionRecord

__all__ = ["CLASS_NAMES", "make_synthetic_dataset", "synth_image", "to_coco_dict"]

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "arrow")
MIN_VISIBLE = 0.5  # keep an occluded object's box when at least this fraction is visible
SMALL_FRACTION = 1 / 3
MIN_SIZE = 6.0
JPEG_QUALITY = 90
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def _regular(n: int, radius_ratio: float = 1.0, start_deg: float = 90.0) -> np.ndarray:
    """Vertices of a regular ``n``-gon (or a star when ``radius_ratio < 1``, 2n vertices)."""
    k = n if radius_ratio == 1.0 else 2 * n
    angles = np.deg2rad(start_deg) + np.arange(k) * 2 * math.pi / k
    radii = np.where(np.arange(k) % 2 == 1, radius_ratio, 1.0)
    return np.stack([radii * np.cos(angles), -radii * np.sin(angles)], axis=1)


_T = 0.35  # half thickness of the cross arms
_POLYGONS = {
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64),
    "triangle": _regular(3),
    "star": _regular(5, 0.45),
    "cross": np.array([[-_T, -1], [_T, -1], [_T, -_T], [1, -_T], [1, _T], [_T, _T], [_T, 1],
                       [-_T, 1], [-_T, _T], [-1, _T], [-1, -_T], [-_T, -_T]]),
    "hexagon": _regular(6, start_deg=0.0),
    "arrow": np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.75], [1, 0], [0.2, 0.75], [0.2, 0.3],
                       [-1, 0.3]]),
}


def make_synthetic_dataset(out: str | Path, n_train: int = 800, n_val: int = 200, seed: int = 0,
                           imgsz: int = 320, format: str = "coco", task: str = "detect") -> Path:
    """Write the synthetic dataset to ``out`` and return ``out``.

    COCO layout: ``annotations/instances_{train,val}.json`` + ``images/{train,val}/*.jpg``.
    YOLO layout (``format="yolo"``): ``data.yaml`` + ``images/`` + ``labels/``.
    ``out`` must not exist or be empty. ``task="keypoints"``: the stick-figure keypoint dataset
    of :mod:`scaledet.data.synth_keypoints` (COCO keypoints or YOLO pose) instead of shapes.
    """
    if format not in ("coco", "yolo"):
        raise ValueError(f"format must be 'coco' or 'yolo', got {format!r}")
    if task not in ("detect", "keypoints"):
        raise ValueError(f"task must be 'detect' or 'keypoints', got {task!r}")
    if imgsz < 64:
        raise ValueError(f"imgsz must be at least 64, got {imgsz}")
    if n_train < 0 or n_val < 0:
        raise ValueError(f"n_train and n_val must be >= 0, got {n_train}, {n_val}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; remove it or pick another")
    splits = {"train": n_train, "val": n_val}
    if task == "keypoints":
        from scaledet.data.synth_keypoints import make_keypoint_dataset

        return make_keypoint_dataset(out, splits, seed, imgsz, format)
    datasets = {s: _write_split(out, s, n, seed, imgsz) for s, n in splits.items()}
    if format == "coco":
        for split, ds in datasets.items():
            write_coco_json(ds, out / "annotations" / f"instances_{split}.json")
    else:
        from scaledet.data.yolo import write_yolo_labels, write_yolo_yaml

        for split, ds in datasets.items():
            write_yolo_labels(ds, out / "labels" / split)
        write_yolo_yaml(out / "data.yaml", list(CLASS_NAMES), {s: f"images/{s}" for s in splits})
    return out


def _write_split(out: Path, split: str, n: int, seed: int, imgsz: int) -> DetectionDataset:
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rng = np.random.default_rng((seed, _SPLIT_CODES.get(split, 3), i))
        image, boxes, labels = synth_image(rng, imgsz)
        name = f"{i:06d}.jpg"
        Image.fromarray(image).save(image_dir / name, quality=JPEG_QUALITY)
        records.append(DetectionRecord(i + 1, name, imgsz, imgsz, boxes, labels))
    return DetectionDataset(records, list(CLASS_NAMES), image_root=image_dir,
                            source=f"synthetic {split} (seed {seed})")


def synth_image(rng: np.random.Generator, imgsz: int = 320
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: ``(imgsz, imgsz, 3)`` uint8 RGB, boxes ``(N, 4)`` xyxy pixels, labels ``(N,)``."""
    canvas = Image.fromarray(_background(rng, imgsz))
    for _ in range(rng.integers(0, 3)):
        _draw_hatching(rng, canvas)
    for _ in range(rng.integers(2, 7)):
        _draw_line(rng, canvas)
    owner = np.full((imgsz, imgsz), -1, dtype=np.int16)  # which item owns each pixel
    n_objects, n_distractors = int(rng.integers(3, 13)), int(rng.integers(1, 5))
    kinds = rng.permutation(np.r_[np.zeros(n_objects), np.ones(n_distractors)].astype(bool))
    boxes, labels, drawn_pixels = [], [], []
    for is_distractor in kinds:
        if is_distractor:
            mask, (x, y) = _distractor(rng, imgsz)
            _paint(rng, canvas, owner, mask, x, y, item=-2)
            continue
        label = int(rng.integers(len(CLASS_NAMES)))
        mask, (x, y), box = _object(rng, imgsz, CLASS_NAMES[label])
        drawn_pixels.append(_paint(rng, canvas, owner, mask, x, y, item=len(boxes)))
        boxes.append(box)
        labels.append(label)
    visible = np.bincount(owner[owner >= 0].ravel(), minlength=len(boxes))
    keep = [i for i in range(len(boxes)) if visible[i] >= MIN_VISIBLE * max(drawn_pixels[i], 1)]
    image = _add_noise(rng, np.asarray(canvas))
    boxes_out = np.round(np.array([boxes[i] for i in keep], dtype=np.float64).reshape(-1, 4), 2)
    return image, boxes_out, np.array([labels[i] for i in keep], dtype=np.int64)


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """A colour gradient mixed with low-frequency colour blobs, ``(s, s, 3)`` uint8.

    Both are built on a coarse ``n x n`` grid and upsampled once with a bicubic filter (which
    reproduces a linear gradient), far cheaper than computing them at full resolution.
    """
    n = int(rng.integers(3, 7))
    c0, c1 = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, n)
    t = np.clip(0.5 + ramp[None, :] * math.cos(angle) + ramp[:, None] * math.sin(angle), 0, 1)
    gradient = c0 + t[..., None] * (c1 - c0)
    blobs = rng.uniform(0, 255, (n, n, 3))
    alpha = rng.uniform(0.2, 0.6)
    coarse = ((1 - alpha) * gradient + alpha * blobs).round().astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((s, s), Image.BICUBIC))


def _draw_line(rng: np.random.Generator, canvas: Image.Image) -> None:
    s = canvas.width
    xy = [tuple(rng.uniform(-0.1 * s, 1.1 * s, 2)) for _ in range(2)]
    ImageDraw.Draw(canvas).line(xy, fill=_colour(rng), width=int(rng.integers(1, 4)))


def _draw_hatching(rng: np.random.Generator, canvas: Image.Image) -> None:
    """Texture clutter: a rectangle of parallel thin lines at a random angle and spacing."""
    s = canvas.width
    w, h = (int(rng.uniform(0.1, 0.5) * s) for _ in range(2))
    x, y = int(rng.integers(0, s - w)), int(rng.integers(0, s - h))
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    angle, spacing = rng.uniform(0, math.pi), rng.uniform(3, 9)
    dx, dy = math.cos(angle), math.sin(angle)
    reach = w + h
    for offset in np.arange(-reach, reach, spacing):
        cx, cy = w / 2 - dy * offset, h / 2 + dx * offset
        draw.line([(cx - dx * reach, cy - dy * reach), (cx + dx * reach, cy + dy * reach)],
                  fill=int(rng.integers(80, 200)), width=1)
    canvas.paste(_colour(rng), (x, y), mask)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _object_size(rng: np.random.Generator, imgsz: int) -> float:
    """``sqrt(box area)`` in pixels: a third log-uniform in [6, 32), the rest in [32, imgsz/2]."""
    lo, hi = (MIN_SIZE, 32.0) if rng.random() < SMALL_FRACTION else (32.0, imgsz / 2)
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _object(rng: np.random.Generator, imgsz: int, name: str):
    """Antialiased ``L`` mask, its integer top-left corner, and the shape's exact xyxy box."""
    size = _object_size(rng, imgsz)
    if name in ("circle", "ring"):
        points, natural_aspect = None, 1.0
    else:
        turn = rng.integers(4) * 90 if name == "arrow" else 0
        points = _rotate(_POLYGONS[name], turn + rng.uniform(-20, 20))
        extent = points.max(0) - points.min(0)
        natural_aspect = extent[0] / extent[1]
    aspect = natural_aspect * math.exp(rng.uniform(-0.25, 0.25))
    w = min(size * math.sqrt(aspect), 0.9 * imgsz)
    h = min(size / math.sqrt(aspect), 0.9 * imgsz)
    x0, y0 = rng.uniform(0, imgsz - w), rng.uniform(0, imgsz - h)
    inner = rng.uniform(0.45, 0.65) if name == "ring" else 0.0
    mask, corner = _render(points, x0, y0, w, h, inner)
    return mask, corner, (x0, y0, x0 + w, y0 + h)


def _distractor(rng: np.random.Generator, imgsz: int):
    """A shape that is no class: a jagged blob, an L shape or a thick arc."""
    w, h = (_object_size(rng, imgsz) * math.exp(rng.uniform(-0.4, 0.4)) for _ in range(2))
    w, h = min(w, 0.9 * imgsz), min(h, 0.9 * imgsz)
    x0, y0 = rng.uniform(0, imgsz - w), rng.uniform(0, imgsz - h)
    kind = rng.integers(3)
    if kind == 0:  # jagged blob: random radius per vertex
        n = int(rng.integers(9, 15))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = rng.uniform(0.35, 1.0, n)
        points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    elif kind == 1:  # L shape
        points = _rotate(np.array([[-1, -1], [-0.4, -1], [-0.4, 0.4], [1, 0.4], [1, 1], [-1, 1]]),
                         rng.integers(4) * 90)
    else:
        return _render_arc(rng, x0, y0, w, h)
    return _render(points, x0, y0, w, h, 0.0)


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return points @ rotation.T


def _supersampling(w: float, h: float) -> int:
    return 4 if max(w, h) < 48 else 2


def _render(points: np.ndarray | None, x0: float, y0: float, w: float, h: float, inner: float):
    """Draw a polygon (normalised to fill the box) or an ellipse (``points=None``; a ring when
    ``inner > 0``) supersampled, then reduce: an antialiased mask on the integer pixel grid."""
    k = _supersampling(w, h)
    ix, iy = math.floor(x0), math.floor(y0)
    size = (math.ceil(x0 + w) - ix, math.ceil(y0 + h) - iy)
    mask = Image.new("L", (size[0] * k, size[1] * k), 0)
    draw = ImageDraw.Draw(mask)
    left, top = (x0 - ix) * k, (y0 - iy) * k
    if points is None:
        draw.ellipse([left, top, left + w * k, top + h * k], fill=255)
        if inner > 0:
            dx, dy = (1 - inner) * w * k / 2, (1 - inner) * h * k / 2
            draw.ellipse([left + dx, top + dy, left + w * k - dx, top + h * k - dy], fill=0)
    else:
        lo, extent = points.min(0), points.max(0) - points.min(0)
        unit = (points - lo) / extent
        xy = [(left + u * w * k, top + v * h * k) for u, v in unit]
        draw.polygon(xy, fill=255)
    return mask.reduce(k), (ix, iy)


def _render_arc(rng: np.random.Generator, x0: float, y0: float, w: float, h: float):
    k = _supersampling(w, h)
    ix, iy = math.floor(x0), math.floor(y0)
    mask = Image.new("L", ((math.ceil(x0 + w) - ix) * k, (math.ceil(y0 + h) - iy) * k), 0)
    start = rng.uniform(0, 360)
    box = [(x0 - ix) * k, (y0 - iy) * k, (x0 - ix + w) * k, (y0 - iy + h) * k]
    width = max(1, int(min(w, h) * k * rng.uniform(0.1, 0.25)))
    ImageDraw.Draw(mask).arc(box, start, start + rng.uniform(90, 200), fill=255, width=width)
    return mask.reduce(k), (ix, iy)


def _paint(rng: np.random.Generator, canvas: Image.Image, owner: np.ndarray, mask: Image.Image,
           x: int, y: int, item: int) -> int:
    """Composite a random colour (and maybe an outline) through ``mask``; return its pixel count."""
    region = np.asarray(canvas.crop((x, y, x + mask.width, y + mask.height)), dtype=np.float64)
    colour = _contrasting_colour(rng, region.reshape(-1, 3).mean(0))
    canvas.paste(colour, (x, y), mask)
    if rng.random() < 0.5 and min(mask.size) >= 8:  # outline: the mask's rim, darker or lighter
        edge = np.asarray(mask) > 127
        rim = edge & ~_erode(edge, max(1, min(mask.size) // 12))
        outline = tuple(int(v) for v in np.clip(np.array(colour) + rng.choice([-1, 1]) * 110,
                                                0, 255))
        canvas.paste(outline, (x, y), Image.fromarray((rim * 255).astype(np.uint8)))
    solid = np.asarray(mask) > 127
    owner[y:y + mask.height, x:x + mask.width][solid] = item
    return int(solid.sum())


def _erode(m: np.ndarray, r: int) -> np.ndarray:
    """Binary erosion by a ``(2r+1)``-square (outside the array counts as background)."""
    padded = np.pad(m, r)
    out = np.ones_like(m)
    h, w = m.shape
    for dy in range(2 * r + 1):
        for dx in (0, 2 * r):  # the square's left and right columns ...
            out &= padded[dy:dy + h, dx:dx + w]
    for dx in range(2 * r + 1):
        for dy in (0, 2 * r):  # ... and its top and bottom rows suffice for convex-ish rims
            out &= padded[dy:dy + h, dx:dx + w]
    return out & m


def _contrasting_colour(rng: np.random.Generator, behind: np.ndarray) -> tuple[int, int, int]:
    """A random colour at least a little different from the mean colour behind the shape."""
    colour = _colour(rng)
    for _ in range(8):
        if np.abs(np.array(colour) - behind).sum() >= 90:
            break
        colour = _colour(rng)
    return colour


def _add_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Uniform pixel noise of a random amplitude (integer arithmetic: cheaper than Gaussian)."""
    amplitude = int(rng.integers(3, 15))
    noisy = image.astype(np.int16)
    noisy += rng.integers(-amplitude, amplitude + 1, image.shape, dtype=np.int16)
    return np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
