"""Sliced inference over large images (SAHI, Akyon et al., 2022).

A detector that letterboxes a 4000 px image to 640 px shrinks a 20 px object to 3 px, below what
it can see. Instead, overlapping tiles (:func:`scaledet.data.sampling.slice_image`) run at their
native resolution (one tile pixel = one input pixel, unless ``tile_imgsz`` says otherwise),
optionally plus the whole image letterboxed to ``imgsz`` for the objects larger than a tile; the
boxes are shifted back to image pixels and merged across tile borders by greedy non-maximum
merging (an object cut by a tile edge is seen whole or in pieces by the tiles sharing it: the
pieces are mostly inside the whole box, so intersection-over-smaller matches them and their union
is kept) or by NMS.

Known limit: an object longer than the overlap that is cut in *every* tile yields pieces that
overlap only in the overlap band; they merge only if that band is more than ``match`` of the
smaller piece. The full-image pass finds such large objects anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scaledet.data.sampling import slice_image
from scaledet.inference.merge import concat, greedy_nmm, nms_merge, sort_and_cap

Detections = dict[str, Tensor]
MERGE_METHODS = ("nmm", "nms")


@dataclass(frozen=True)
class Slicing:
    """Sliced-inference settings.

    Attributes:
        tile: tile side in original-image pixels.
        overlap: fraction of ``tile`` shared by neighbouring tiles, in ``[0, 1)``.
        full_image: also run the whole image letterboxed to the predictor's ``imgsz``.
        merge: ``"nmm"`` (greedy non-maximum merging, intersection over smaller) or ``"nms"``
            (the predictor's NMS variant, IoU).
        match: matching threshold of the merge (IoS for NMM, IoU for NMS).
        tile_imgsz: letterbox side for the tiles (None: the tile's own size, no resizing).
    """

    tile: int = 512
    overlap: float = 0.2
    full_image: bool = True
    merge: str = "nmm"
    match: float = 0.5
    tile_imgsz: int | None = None

    def __post_init__(self) -> None:
        if self.tile < 32:
            raise ValueError(f"slice tile must be >= 32 pixels, got {self.tile}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"slice overlap must be in [0, 1), got {self.overlap}")
        if self.merge not in MERGE_METHODS:
            raise ValueError(f"slice merge must be one of {MERGE_METHODS}, got {self.merge!r}")
        if not 0 < self.match <= 1:
            raise ValueError(f"slice match threshold must be in (0, 1], got {self.match}")
        if self.tile_imgsz is not None and self.tile_imgsz < 32:
            raise ValueError(f"tile_imgsz must be >= 32, got {self.tile_imgsz}")


def tile_detections(predictor, image: Tensor, cfg: Slicing) -> list[Detections]:
    """Detections of every tile of ``image`` ``(3, H, W)`` uint8, in image pixels (plus the
    full-image pass last when ``cfg.full_image`` and the image is larger than one tile)."""
    h, w = image.shape[-2:]
    windows = slice_image(h, w, cfg.tile, cfg.overlap)
    tiles = [image[:, y0:y1, x0:x1] for x0, y0, x1, y1 in windows]
    size = cfg.tile_imgsz or max(tiles[0].shape[-2:])
    dets = predictor.detect(tiles, size)
    out = []
    for (x0, y0, _, _), d in zip(windows, dets):
        shift = torch.tensor([x0, y0, x0, y0], dtype=d["boxes"].dtype)
        out.append({**d, "boxes": d["boxes"] + shift})
    if cfg.full_image and len(windows) > 1:
        out += predictor.detect([image])
    return out


def sliced_detect(predictor, image: Tensor, cfg: Slicing) -> Detections:
    """Sliced inference on one ``(3, H, W)`` uint8 image: merged detections in image pixels,
    score >= ``predictor.conf``, sorted, at most ``predictor.max_det``."""
    det = concat(tile_detections(predictor, image, cfg))
    if cfg.merge == "nmm":
        merged = greedy_nmm(det, cfg.match, "ios")
    else:
        merged = nms_merge(det, predictor.nms, cfg.match, min_score=max(predictor.conf, 1e-3))
    return sort_and_cap(merged, predictor.conf, predictor.max_det)
