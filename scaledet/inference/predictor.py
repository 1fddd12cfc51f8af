"""Run a trained detector on images: the ``Predictor`` behind ``scaledet predict``.

    predictor = Predictor("runs/train/weights/best.safetensors", conf=0.25)
    dets = predictor.predict([image])          # image: (H, W, 3) uint8 RGB
    dets[0]["boxes"]                            # (K, 4) float32 xyxy, pixels of the original image
    predictor.class_names[int(dets[0]["labels"][0])]

Pre-processing is the evaluation letterbox of ``scaledet.data`` (longer side -> ``imgsz``, pad
bottom/right), so predictions match what ``scaledet val`` scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from scaledet.engine.checkpoint import model_from_weights
from scaledet.engine.validate import to_original_pixels

Detections = dict[str, torch.Tensor]


class Predictor:
    """A detector loaded from a scaledet checkpoint, ready for inference.

    Args:
        weights: ``.safetensors`` checkpoint written by ``scaledet train``.
        device: "cpu", "cuda", "cuda:N".
        conf: minimum score of a returned detection, in [0, 1].
        imgsz: input side in pixels (default: the training image size).
        batch_size: images per forward pass.
    """

    def __init__(self, weights: str | os.PathLike, device: str = "cpu", conf: float = 0.25,
                 imgsz: int | None = None, batch_size: int = 8) -> None:
        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"--conf must be in [0, 1], got {conf}")
        from scaledet.engine.trainer import resolve_device

        self.device = resolve_device(device)
        self.model, self.meta = model_from_weights(weights, self.device)
        self.imgsz = int(imgsz or self.meta.get("imgsz", 320))
        self.conf = conf
        self.batch_size = batch_size
        if hasattr(self.model, "score_thresh"):
            self.model.score_thresh = conf
        n = int(self.meta.get("model_config", {}).get("num_classes", 0) or 0)
        self.class_names: list[str] = list(self.meta.get("class_names") or
                                           [str(i) for i in range(n)])
        self.category_ids: list[int] = list(self.meta.get("category_ids") or
                                            range(1, len(self.class_names) + 1))

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, float]:
        """``(H, W, 3)`` uint8 RGB -> ``((3, imgsz, imgsz)`` uint8 letterboxed, scale)``."""
        from scaledet.data.transforms import Sample, letterbox

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} "
                             f"{tuple(image.shape)}")
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        out, scale = letterbox(Sample(chw, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)),
                               self.imgsz)
        return out.image, scale

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in ``(H, W, 3)`` uint8 RGB images.

        Returns:
            one dict per image: ``"boxes"`` ``(K, 4)`` float32 xyxy original-image pixels,
            ``"scores"`` ``(K,)``, ``"labels"`` ``(K,)`` int64 class indices, sorted by score.
        """
        out: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            prepared = [self.preprocess(im) for im in chunk]
            batch = torch.stack([p[0] for p in prepared]).to(self.device).float().div_(255)
            for det, im, (_, scale) in zip(self.model(batch), chunk, prepared):
                out.append(self._postprocess(det, scale, im.shape[:2]))
        return out

    def _postprocess(self, det: Detections, scale: float, size: tuple[int, int]) -> Detections:
        keep = det["scores"] >= self.conf
        scores = det["scores"][keep].float().cpu()
        order = scores.argsort(descending=True)
        boxes = to_original_pixels(det["boxes"][keep].cpu(), scale, size)
        return {"boxes": boxes[order], "scores": scores[order],
                "labels": det["labels"][keep].long().cpu()[order]}

    def predict_files(self, paths: Sequence[str | os.PathLike]) -> list[Detections]:
        """``predict`` on image files (EXIF orientation applied)."""
        from scaledet.data import read_image

        return [self.predict([read_image(p)])[0] for p in paths]

    def to_coco_results(self, det: Detections, image_id: int) -> list[dict[str, Any]]:
        """COCO results entries ``{image_id, category_id, bbox [x, y, w, h], score}``."""
        rows = []
        for (x1, y1, x2, y2), s, lab in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                            det["labels"].tolist()):
            rows.append({"image_id": int(image_id), "category_id": self.category_ids[lab],
                         "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2),
                                  round(y2 - y1, 2)], "score": round(s, 5)})
        return rows


def _colour(label: int) -> tuple[int, int, int]:
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
               (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128)]
    return palette[label % len(palette)]


def draw_detections(image: np.ndarray, det: Detections, class_names: Sequence[str]) -> Image.Image:
    """Boxes with ``"name score"`` labels drawn on a copy of ``image`` ((H, W, 3) uint8 RGB),
    using PIL's built-in default font (nothing is downloaded)."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    for (x1, y1, x2, y2), s, lab in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                        det["labels"].tolist()):
        colour = _colour(lab)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        name = class_names[lab] if lab < len(class_names) else str(lab)
        text = f"{name} {s:.2f}"
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
