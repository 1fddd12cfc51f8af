"""Sliced inference over large images (SAHI, Akyon et al., 2022).

A detector that letterboxes a 4000 px image to 640 px shrinks a 20 px object to 3 px, below what
it can see. Instead, overlapping tiles (:func:`scaledet.data.sampling.slice_image`) run at their
native resolution (one tile pixel = one input pixel, unless ``tile_imgsz`` says otherwise),
optionally plus the whole image letterboxed to ``imgsz`` for the objects larger than a tile; the
boxes are shifted back to image pixels and merged across tile borders by greedy non-maximum
merging or by NMS. An object cut by a tile edge is seen whole or in pieces by the tiles sharing
it; a box reaching an inner tile edge is marked *cut*, and the merge (``greedy_nmm`` in its
tile-aware form) joins cut pieces into their union when they lie mostly inside the group's box
(intersection over the smaller area), while whole boxes of the same object from two tiles are
de-duplicated by IoU and boxes of the same tile never merge.

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
CUT_MARGIN = 3.0  # px: a box this close to an inner tile edge counts as cut by it
# A piece scoring below this fraction of its group's best box joins without stretching the
# group box: weak edge boxes would otherwise stretch confident ones.
PIECE_RATIO = 0.5


@dataclass(frozen=True)
class Slicing:
    """Sliced-inference settings.

    Attributes:
        tile: tile side in original-image pixels.
        overlap: fraction of ``tile`` shared by neighbouring tiles, in ``[0, 1)``.
        full_image: also run the whole image letterboxed to the predictor's ``imgsz`` (for
            objects larger than a tile; off by default: when every object fits in a tile, the
            downscaled pass adds mostly false boxes).
        merge: ``"nmm"`` (greedy non-maximum merging, intersection over smaller) or ``"nms"``
            (the predictor's NMS variant, IoU).
        match: matching threshold of the merge (IoS for NMM, IoU for NMS).
        tile_imgsz: letterbox side for the tiles (None: the tile's own size, no resizing).
    """

    tile: int = 512
    overlap: float = 0.2
    full_image: bool = False
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


def tile_detections(predictor, image: Tensor, cfg: Slicing
                    ) -> list[tuple[tuple[int, int, int, int] | None, Detections]]:
    """``(window, detections)`` of every tile of ``image`` ``(3, H, W)`` uint8, boxes in image
    pixels, then ``(None, detections)`` of the full-image pass when ``cfg.full_image`` and the
    image is larger than one tile."""
    h, w = image.shape[-2:]
    windows = slice_image(h, w, cfg.tile, cfg.overlap)
    tiles = [image[:, y0:y1, x0:x1] for x0, y0, x1, y1 in windows]
    size = cfg.tile_imgsz or max(tiles[0].shape[-2:])
    out = []
    for (x0, y0, x1, y1), d in zip(windows, predictor.detect(tiles, size)):
        shift = torch.tensor([x0, y0, x0, y0], dtype=d["boxes"].dtype)
        out.append(((x0, y0, x1, y1), {**d, "boxes": d["boxes"] + shift}))
    if cfg.full_image and len(windows) > 1:
        out.append((None, predictor.detect([image])[0]))
    return out


def cut_by_tile_edge(boxes: Tensor, window: tuple[int, int, int, int] | None,
                     image_size: tuple[int, int], margin: float = CUT_MARGIN) -> Tensor:
    """``(K,)`` bool: the ``(K, 4)`` xyxy box reaches (within ``margin`` px) an edge of its
    tile ``window`` that is not an image edge, i.e. the object may continue in the next tile."""
    if window is None:
        return torch.zeros(len(boxes), dtype=torch.bool)
    x0, y0, x1, y1 = window
    h, w = image_size
    return (((boxes[:, 0] <= x0 + margin) & (x0 > 0)) | ((boxes[:, 1] <= y0 + margin) & (y0 > 0))
            | ((boxes[:, 2] >= x1 - margin) & (x1 < w)) | ((boxes[:, 3] >= y1 - margin) & (y1 < h)))


def sliced_detect(predictor, image: Tensor, cfg: Slicing) -> Detections:
    """Sliced inference on one ``(3, H, W)`` uint8 image: merged detections in image pixels,
    score >= ``predictor.conf``, sorted, at most ``predictor.max_det``."""
    parts = tile_detections(predictor, image, cfg)
    det = concat([d for _, d in parts])
    if cfg.merge == "nmm":
        size = tuple(image.shape[-2:])
        cut = torch.cat([cut_by_tile_edge(d["boxes"], win, size) for win, d in parts])
        sources = torch.cat([torch.full((len(d["scores"]),), k) for k, (_, d) in
                             enumerate(parts)])
        merged = greedy_nmm(det, cfg.match, "ios", sources=sources, cut=cut,
                            duplicate_iou=predictor.iou, piece_ratio=PIECE_RATIO)
    else:
        merged = nms_merge(det, predictor.nms, cfg.match, min_score=max(predictor.conf, 1e-3))
    return sort_and_cap(merged, predictor.conf, predictor.max_det)
