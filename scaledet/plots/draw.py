"""Boxes and skeletons drawn on images: annotated predictions and the first training batch."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

Detections = dict[str, Tensor]

KEYPOINT_THRESHOLD = 0.3
"""A predicted joint is drawn when its score is above this (a labelled one when ``v > 0``)."""

# Joint and limb colours: the person's left side, right side, and the middle (nose, eyes'
# midline, limbs joining the two sides), as the COCO keypoint names say.
LEFT, RIGHT, MIDDLE = (0, 160, 255), (255, 128, 0), (60, 220, 60)


def _colour(label: int) -> tuple[int, int, int]:
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
               (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128)]
    return palette[label % len(palette)]


def label_text(name: str, score: float | None) -> str:
    """A box's label: ``"name"``, or ``"name 95%"`` with its score as a percentage, so that a
    digit class name stays apart from the score (``"1 95%"``, never ``"1 0.95"``)."""
    return name if score is None else f"{name} {score:.0%}"


Rect = tuple[int, int, int, int]


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int]],
                 width: int, height: int, max_cover: float = 0.35) -> list[Rect | None]:
    """Where each box's label goes: ``(x0, y0, x1, y1)`` inside the ``width`` x ``height``
    image, or ``None`` when every place for it is taken or when it would take the labels past
    ``max_cover`` of the image's area (more would hide what they describe; the first label
    always goes).

    Boxes are placed in the order given (callers pass the most important first). A label of
    ``sizes[i] = (w, h)`` pixels tries, in turn: above the box's top-left corner, inside the box
    at its top, below the box, inside the box at its bottom; each place shifted into the image.
    It takes the first that overlaps no label placed before it, so labels of overlapping boxes
    neither pile up on one spot nor leave the image."""
    placed: list[Rect] = []
    out: list[Rect | None] = []
    budget = max_cover * width * height
    for (x1, y1, _, y2), (w, h) in zip(boxes, sizes):
        spot = None
        x = min(max(round(x1), 0), max(width - w, 0))
        top, bottom = round(y1), round(y2)
        for y in (top - h, top, bottom, bottom - h) if not placed or w * h <= budget else ():
            y = min(max(y, 0), max(height - h, 0))
            rect = (x, y, x + w, y + h)
            if not any(_overlaps(rect, r) for r in placed):
                spot = rect
                break
        if spot is not None:
            placed.append(spot)
            budget -= w * h
        out.append(spot)
    return out


def _text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light label backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = fill
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _side(name: str | None) -> tuple[int, int, int]:
    """A joint's colour from its name: ``left_*`` / ``right_*`` or the middle."""
    n = (name or "").lower()
    return LEFT if n.startswith("left") else RIGHT if n.startswith("right") else MIDDLE


def draw_keypoints(im: Image.Image, keypoints: Any, skeleton: Sequence[Sequence[int]] | None,
                   keypoint_names: Sequence[str] | None = None,
                   threshold: float = KEYPOINT_THRESHOLD) -> Image.Image:
    """Draw people's joints and limbs on ``im`` (in place; returned).

    Args:
        keypoints: ``(N, K, 3)`` (or ``(K, 3)``) rows ``x, y`` pixels of ``im`` and a score or
            visibility flag; a joint is drawn when that is above ``threshold`` (and not NaN).
        skeleton: limbs as COCO's 1-based joint index pairs (None or empty: joints only);
            a limb is drawn when both its joints are.
        keypoint_names: the ``K`` names: ``left_*`` joints and limbs in blue, ``right_*`` in
            orange, the others green (all green without names).
        threshold: see ``keypoints`` (0 for ground-truth flags: ``v > 0``).
    """
    points = torch.as_tensor(keypoints, dtype=torch.float32).detach().cpu()
    points = points[None] if points.dim() == 2 else points
    names = list(keypoint_names or [])
    k = points.shape[1]
    colours = [_side(names[j] if j < len(names) else None) for j in range(k)]
    draw = ImageDraw.Draw(im)
    r = max(2, round(min(im.width, im.height) / 160))
    for person in points.tolist():
        shown = [v > threshold and not (math.isnan(x) or math.isnan(y)) for x, y, v in person]
        for a, b in skeleton or []:
            i, j = int(a) - 1, int(b) - 1
            if 0 <= i < k and 0 <= j < k and shown[i] and shown[j]:
                colour = colours[i] if colours[i] == colours[j] else MIDDLE
                draw.line([tuple(person[i][:2]), tuple(person[j][:2])], fill=colour, width=r)
        for (x, y, _), ok, colour in zip(person, shown, colours):
            if ok:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
    return im


def draw_detections(image: np.ndarray, det: Detections, class_names: Sequence[str], *,
                    skeleton: Sequence[Sequence[int]] | None = None,
                    keypoint_names: Sequence[str] | None = None) -> Image.Image:
    """Boxes with ``"name 95%"`` labels (``"name"`` when ``det`` has no ``"scores"``, e.g.
    ground truth) drawn on a copy of ``image`` ((H, W, 3) uint8 RGB), using PIL's built-in
    default font (nothing is downloaded). With ``det["keypoints"]`` ``(N, K, 3)`` (joint
    scores; NaN rows for boxes not posed), each posed box's skeleton too
    (:func:`draw_keypoints` with ``skeleton`` and ``keypoint_names``).

    Every label stays inside the image, in black or white, whichever reads on its class
    colour. The labels of the most confident boxes are placed first; a label that would cover
    one already drawn moves (see :func:`place_labels`) and is left out when no place is free or
    the labels already cover about a third of the image (its box keeps the class colour)."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    boxes = det["boxes"].tolist()
    labels = det["labels"].tolist()
    scores = det["scores"].tolist() if "scores" in det else [None] * len(labels)
    order = sorted(range(len(boxes)), key=lambda i: -(scores[i] or 0.0))
    texts, sizes, offsets = [], [], []
    for i in order:
        lab = labels[i]
        name = class_names[lab] if 0 <= lab < len(class_names) else str(lab)
        while True:  # a label wider than the image loses the end of its name, not the score
            text = label_text(name, scores[i])
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            if right - left + 2 <= im.width or len(name) <= 1:
                break
            name = name[:-1].rstrip()
        texts.append(text)
        sizes.append((right - left + 2, bottom - top + 2))
        offsets.append((left, top))
    for i in order[::-1]:  # the most confident box drawn last, on top
        draw.rectangle(boxes[i], outline=_colour(labels[i]), width=2)
    spots = place_labels([boxes[i] for i in order], sizes, im.width, im.height)
    for i, text, (left, top), spot in zip(order, texts, offsets, spots):
        if spot is None:
            continue
        colour = _colour(labels[i])
        draw.rectangle([spot[0], spot[1], spot[2] - 1, spot[3] - 1], fill=colour)
        draw.text((spot[0] + 1 - left, spot[1] + 1 - top), text, fill=_text_colour(colour),
                  font=font)
    if det.get("keypoints") is not None and len(det["keypoints"]):
        draw_keypoints(im, det["keypoints"], skeleton, keypoint_names)
    return im


def save_annotated(image: np.ndarray, det: Detections, class_names: Sequence[str],
                   path: str | os.PathLike) -> Path:
    """``draw_detections`` written to ``path`` (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_detections(image, det, class_names).save(path)
    return path


def plot_train_batch(images: Any, targets: list[dict], class_names: list[str],
                     path: str | Path, max_images: int = 16, *,
                     skeleton: Sequence[Sequence[int]] | None = None,
                     keypoint_names: Sequence[str] | None = None) -> Path:
    """Write the first ``max_images`` of a training batch as one JPEG grid with boxes drawn.

    Args:
        images: ``(B, 3, H, W)`` float in ``[0, 1]`` or uint8 (any device).
        targets: per image ``boxes (N, 4)`` xyxy pixels of the image and ``labels (N,)``,
            optionally ``ignore (K, 4)`` regions (drawn grey, unlabelled); and / or
            ``keypoints`` ``(K, 3)`` or ``(N, K, 3)``: ``x, y`` pixels of the image and the
            visibility flag (a pose batch's person crops have keypoints and no boxes): the
            labelled joints (``v > 0``) and the limbs between them are drawn.
        class_names: names indexed by label.
        skeleton: limbs as COCO's 1-based joint pairs (None: joints without limbs).
        keypoint_names: the joint names, for left / right colours.
    """
    images = images[:max_images].detach().cpu()
    if images.dtype != torch.uint8:
        images = (images.float() * 255).round().clamp(0, 255).to(torch.uint8)
    n, _, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = Image.new("RGB", (cols * w, rows * h), (114, 114, 114))
    for i in range(n):
        t = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in targets[i].items()}
        hwc = np.ascontiguousarray(images[i].permute(1, 2, 0).numpy())
        boxes = t.get("boxes", torch.zeros(0, 4))
        labels = t.get("labels", torch.zeros(len(boxes), dtype=torch.int64))
        tile = draw_detections(hwc, {"boxes": boxes, "labels": labels}, class_names)
        if t.get("keypoints") is not None:
            draw_keypoints(tile, t["keypoints"], skeleton, keypoint_names, threshold=0.0)
        draw = ImageDraw.Draw(tile)
        for box in t.get("ignore", torch.zeros(0, 4)).tolist():
            draw.rectangle(box, outline=(160, 160, 160), width=1)
        grid.paste(tile, ((i % cols) * w, (i // cols) * h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=90)
    return path
