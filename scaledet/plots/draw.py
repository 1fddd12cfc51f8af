"""Boxes drawn on images: annotated predictions and the first training batch."""

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


def _colour(label: int) -> tuple[int, int, int]:
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
               (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128)]
    return palette[label % len(palette)]


def draw_detections(image: np.ndarray, det: Detections, class_names: Sequence[str]) -> Image.Image:
    """Boxes with ``"name score"`` labels (``"name"`` when ``det`` has no ``"scores"``, e.g.
    ground truth) drawn on a copy of ``image`` ((H, W, 3) uint8 RGB), using PIL's built-in
    default font (nothing is downloaded)."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    labels = det["labels"].tolist()
    scores = det["scores"].tolist() if "scores" in det else [None] * len(labels)
    for (x1, y1, x2, y2), s, lab in zip(det["boxes"].tolist(), scores, labels):
        colour = _colour(lab)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        name = class_names[lab] if 0 <= lab < len(class_names) else str(lab)
        text = name if s is None else f"{name} {s:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((x1, y1), text, font=font)
        ty = y1 - (ty1 - ty0) - 2 if y1 - (ty1 - ty0) - 2 >= 0 else y1
        draw.rectangle([x1, ty, x1 + (tx1 - tx0) + 2, ty + (ty1 - ty0) + 2], fill=colour)
        draw.text((x1 + 1, ty), text, fill=(0, 0, 0), font=font)
    return im


def save_annotated(image: np.ndarray, det: Detections, class_names: Sequence[str],
                   path: str | os.PathLike) -> Path:
    """``draw_detections`` written to ``path`` (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_detections(image, det, class_names).save(path)
    return path


def plot_train_batch(images: Any, targets: list[dict], class_names: list[str],
                     path: str | Path, max_images: int = 16) -> Path:
    """Write the first ``max_images`` of a training batch as one JPEG grid with boxes drawn.

    Args:
        images: ``(B, 3, S, S)`` float in ``[0, 1]`` or uint8 (any device).
        targets: per image ``boxes (N, 4)`` xyxy pixels of the image and ``labels (N,)``,
            optionally ``ignore (K, 4)`` regions (drawn grey, unlabelled).
        class_names: names indexed by label.
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
        tile = draw_detections(hwc, {"boxes": t["boxes"], "labels": t["labels"]}, class_names)
        draw = ImageDraw.Draw(tile)
        for box in t.get("ignore", torch.zeros(0, 4)).tolist():
            draw.rectangle(box, outline=(160, 160, 160), width=1)
        grid.paste(tile, ((i % cols) * w, (i // cols) * h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=90)
    return path
