"""Real faces for the face detector: scikit-image's 100 LFW face crops pasted into textured
scenes (a held-out test set), and the helpers that mix the training ones into the synthetic
scenes of :mod:`scaledet.data.synth_faces`.

``skimage.data.lfw_subset()`` (shipped with scikit-image, no download) is ``(200, 25, 25)``
float64 grey in ``[0, 1]``: items ``0-99`` are faces randomly drawn from Labeled Faces in the
Wild, ``100-199`` non-faces cut from the backgrounds of the same photos (walls, edges, text,
clothes; a few hold a part of a face, e.g. one eye or a mouth). No identities come with them.
The faces are split once and for all: ``LFW_TRAIN`` (``0-69``) may be used for training
(``make_face_dataset(real_faces=...)``), ``LFW_TEST`` (``70-99``) only in the test scenes here.

What a box covers: each face crop is a loose square around the face, from about the middle of
the forehead to the chin and from cheek to cheek or ear to ear, with a little hair, neck or
photo background in the corners; the box of a pasted face is that whole square (``xyxy``
pixels, ``x2 = x + side``), close to but not exactly the face-outline box of the synthetic
faces or a WIDER FACE box.

Test scenes (``make_real_face_dataset``): the textured background of the synthetic scenes
(gradient, colour blobs, hatching, lines), 2-8 test faces each and 1-5 non-face patches as
unlabelled distractors, all axis-aligned squares that never overlap (at least ``GAP`` px
apart), then pixel noise. A face's side is drawn from one of ``SIZE_BUCKETS`` (chosen with equal
chance, log-uniform inside), so each of the easy / medium / hard height ranges of the WIDER-style
size lists (>= 50, >= 30, >= 10 px) gets about a third of the faces; distractors are drawn the
same way. Every patch, face or not, is upscaled (or shrunk) bicubically from 25 px and its grey
tinted to a skin colour (``skin_tone``; grey ``SKIN_GREY`` becomes that colour), so neither the
square outline nor the colour tells a face from a non-face. COCO as the synthetic face set:
category ``face`` with the five landmark names, every face's ``keypoints`` unlabelled (``v = 0``
at ``0, 0``, ``num_keypoints`` 0). ``real_faces_{split}.json`` beside ``annotations/`` lists
each image's LFW face indices and its distractors (``[x1, y1, x2, y2, lfw index]``).

Deterministic: image ``i`` is drawn from ``numpy.random.default_rng((seed, split code, i, 7))``
(split codes as :mod:`scaledet.data.synth`: test 2) and written as a quality-90 JPEG.

What it can and cannot tell: it checks that a detector trained on cartoons finds real faces of
every size among textured clutter and real non-face patches (recall, AP by size, false alarms on
the distractors). It cannot stand in for WIDER FACE: the faces are 25 px crops magnified up to
four times (blurry, with no detail at large sizes), grey tinted to one colour, mostly frontal,
unoccluded, uncluttered by context (no bodies, no crowds), pasted with hard edges; 30 test faces
are few (the same faces recur in many scenes, so the numbers vary more than the face count says),
and there are no landmarks to score.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from scaledet.data.coco import write_coco_json
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

__all__ = ["GAP", "LFW_NON_FACES", "LFW_TEST", "LFW_TRAIN", "SIZE_BUCKETS", "SKIN_GREY",
           "RealFaceScene", "lfw_subset", "make_real_face_dataset", "real_face_scene",
           "skin_tone", "tint_patch"]

LFW_TRAIN = tuple(range(0, 70))
"""LFW face indices that training sets may use."""
LFW_TEST = tuple(range(70, 100))
"""LFW face indices kept for the test scenes only."""
LFW_NON_FACES = tuple(range(100, 200))
"""The non-face patches of ``lfw_subset()`` (the test scenes' distractors)."""
SIZE_BUCKETS = ((12.0, 30.0), (30.0, 50.0), (50.0, 96.0))
"""Face side ranges (px) of the test scenes: hard-only, medium, easy by the WIDER-style size
lists' edges (10, 30, 50 px)."""
GAP = 2  # px between any two pasted squares of a test scene
SKIN_GREY = 0.5  # grey level that becomes the skin colour (LFW face centres average 0.53)
MIN_IMGSZ = 128  # the largest face (96 px) must fit with room around it
_STREAM = 7  # the last entry of a test scene's seed tuple (synth_faces uses 2-6)


@lru_cache(maxsize=1)
def lfw_subset() -> np.ndarray:
    """``skimage.data.lfw_subset()``, checked: ``(200, 25, 25)`` float64 in ``[0, 1]``, faces
    first (read-only). Needs scikit-image (it ships the file; nothing is downloaded)."""
    try:
        from skimage.data import lfw_subset as load
    except ImportError as e:
        raise ImportError("real faces need scikit-image, which ships the LFW subset "
                          "(pip install scikit-image)") from e
    images = np.asarray(load(), dtype=np.float64)
    if images.shape != (200, 25, 25) or not np.isfinite(images).all() \
            or images.min() < 0 or images.max() > 1:
        raise ValueError(f"skimage.data.lfw_subset() (lfw_subset.npy): expected (200, 25, 25) "
                         f"values in [0, 1], got {images.shape} in "
                         f"[{images.min():g}, {images.max():g}]")
    images.setflags(write=False)
    return images


def skin_tone(rng: np.random.Generator) -> np.ndarray:
    """A skin colour ``(3,)`` RGB 0-255 from dark to light with a random tint: the distribution
    of the synthetic identities' skin (:func:`scaledet.data.synth_faces.random_identity`)."""
    tone = rng.uniform(0, 1)
    return np.clip(np.array([90, 55, 35]) + tone * np.array([150, 150, 140])
                   + rng.uniform(-20, 20, 3), 0, 255)


def tint_patch(grey: np.ndarray, side: int, skin) -> np.ndarray:
    """A grey patch ``(h, w)`` in ``[0, 1]`` resized bicubically to ``(side, side)`` and tinted:
    ``grey * skin / SKIN_GREY``, clipped -> ``(side, side, 3)`` uint8 RGB."""
    if side < 1:
        raise ValueError(f"patch side must be >= 1 px, got {side}")
    img = Image.fromarray(np.asarray(grey, dtype=np.float32)).resize((side, side), Image.BICUBIC)
    g = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
    rgb = g[..., None] * (np.asarray(skin, dtype=np.float64) / SKIN_GREY)
    return np.clip(rgb, 0, 255).round().astype(np.uint8)


@dataclass
class RealFaceScene:
    """One test scene: ``image`` ``(S, S, 3)`` uint8 RGB, ``boxes`` ``(N, 4)`` xyxy pixels of
    the pasted faces, ``faces`` ``(N,)`` their LFW indices, ``distractors`` ``(M, 4)`` xyxy of
    the non-face patches, ``distractor_ids`` ``(M,)`` their LFW indices."""

    image: np.ndarray
    boxes: np.ndarray
    faces: np.ndarray
    distractors: np.ndarray
    distractor_ids: np.ndarray


def _side(rng: np.random.Generator) -> int:
    lo, hi = SIZE_BUCKETS[int(rng.integers(len(SIZE_BUCKETS)))]
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def real_face_scene(rng: np.random.Generator, imgsz: int = 320,
                    faces: tuple[int, ...] = LFW_TEST) -> RealFaceScene:
    """One scene of 2-8 LFW faces (distinct, from ``faces``) and 1-5 non-face patches on a
    textured ``imgsz`` square (see the module docstring). An item that finds no free place in
    50 tries is left out (a scene keeps at least its first face)."""
    if imgsz < MIN_IMGSZ:
        raise ValueError(f"real-face scenes need imgsz >= {MIN_IMGSZ} (faces up to "
                         f"{SIZE_BUCKETS[-1][1]:g} px), got {imgsz}")
    bad = [k for k in faces if not 0 <= k < 100]
    if bad or not faces:
        raise ValueError(f"faces must be LFW face indices 0-99, got {bad or 'none'}")
    lfw = lfw_subset()
    canvas = Image.fromarray(_background(rng, imgsz))
    for _ in range(rng.integers(0, 3)):
        _draw_hatching(rng, canvas)
    for _ in range(rng.integers(1, 5)):
        _draw_line(rng, canvas)
    n_faces = min(int(rng.integers(2, 9)), len(faces))
    face_ids = rng.choice(np.asarray(faces), n_faces, replace=False)
    other_ids = rng.choice(np.asarray(LFW_NON_FACES), int(rng.integers(1, 6)), replace=False)
    placed: list[tuple[int, int, int, int, bool]] = []  # x0, y0, side, LFW index, is face
    for k, is_face in [(int(k), True) for k in face_ids] + [(int(k), False) for k in other_ids]:
        side = _side(rng)
        skin = skin_tone(rng)
        for _ in range(50):
            x0, y0 = (int(v) for v in rng.integers(0, imgsz - side + 1, 2))
            if all(x0 >= x + s + GAP or x >= x0 + side + GAP or y0 >= y + s + GAP
                   or y >= y0 + side + GAP for x, y, s, *_ in placed):
                canvas.paste(Image.fromarray(tint_patch(lfw[k], side, skin)), (x0, y0))
                placed.append((x0, y0, side, k, is_face))
                break
    image = _add_noise(rng, np.asarray(canvas))

    def boxes(face: bool) -> tuple[np.ndarray, np.ndarray]:
        rows = [(x, y, x + s, y + s) for x, y, s, _, f in placed if f == face]
        ids = [k for *_, k, f in placed if f == face]
        return np.array(rows, dtype=np.float64).reshape(-1, 4), np.array(ids, dtype=np.int64)

    return RealFaceScene(image, *boxes(True), *boxes(False))


def make_real_face_dataset(out: str | Path, n: int = 300, seed: int = 0, imgsz: int = 320,
                           split: str = "test") -> Path:
    """Write ``n`` test scenes of held-out LFW faces (``LFW_TEST``) to the (empty) folder
    ``out``: ``images/{split}/*.jpg``, ``annotations/instances_{split}.json`` (COCO, one
    category ``face`` with the five landmark names, landmarks unlabelled) and
    ``real_faces_{split}.json`` (``{file name: {"faces": [LFW index], "distractors": [[x1, y1,
    x2, y2, LFW index]]}}``). Returns ``out``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; remove it or pick another")
    if n < 1:
        raise ValueError(f"the number of real-face scenes must be >= 1, got {n}")
    lfw_subset()  # fail before writing anything when scikit-image is missing
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    records, sidecar = [], {}
    for i in range(n):
        scene = real_face_scene(np.random.default_rng((seed, _SPLIT_CODES.get(split, 3), i,
                                                       _STREAM)), imgsz)
        name = f"{i:06d}.jpg"
        Image.fromarray(scene.image).save(image_dir / name, quality=JPEG_QUALITY)
        records.append(DetectionRecord(i + 1, name, imgsz, imgsz, scene.boxes,
                                       np.zeros(len(scene.boxes), dtype=np.int64),
                                       keypoints=np.zeros((len(scene.boxes), 5, 3),
                                                          dtype=np.float32)))
        sidecar[name] = {"faces": scene.faces.tolist(),
                         "distractors": [[*map(int, b), int(k)] for b, k in
                                         zip(scene.distractors, scene.distractor_ids)]}
    ds = DetectionDataset(records, ["face"], image_root=image_dir,
                          source=f"LFW faces {LFW_TEST[0]}-{LFW_TEST[-1]} in synthetic scenes "
                                 f"{split} (seed {seed})",
                          keypoint_names=list(FACE_LANDMARK_NAMES), skeleton=list(FACE_SKELETON),
                          flip_idx=list(FACE_FLIP_IDX), num_keypoints=len(FACE_LANDMARK_NAMES))
    write_coco_json(ds, out / "annotations" / f"instances_{split}.json")
    rows = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in sidecar.items())
    (out / f"real_faces_{split}.json").write_text("{\n" + rows + "\n}\n", encoding="utf-8")
    return out
