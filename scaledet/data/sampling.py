"""Scale-aware sampling: image pyramids, SNIP valid ranges, SNIPER chips, sliced tiles.

* SNIP (Singh & Davis, 2018): train on an image pyramid, but at each pyramid scale only objects
  whose size is in that scale's *valid range* count; the others are *ignored* (neither positive
  nor negative), so each scale learns the object sizes a detector sees well at that scale.
* SNIPER (Singh, Najibi & Davis, 2018): instead of whole pyramid images, train on fixed-size
  chips (e.g. 512 x 512) placed, at each scale, greedily to cover all valid objects (positive
  chips), plus a few chips on background (negative chips); a large upsampled image then costs
  a few chips instead of all its pixels.
* Sliced inference (SAHI-style): overlapping tiles that cover a large image.

Training with chips (``AugmentConfig.chips``): the loader draws one chip per sample with
``pick_chip`` and cuts it with ``cut_chip``; objects that are not the chip's targets come out as
ignore regions (see ``scaledet.data.loader``).

Conventions: object *size* is ``sqrt(w * h)`` of the box in **original-image pixels**, and
valid ranges are given in original pixels too, as in SNIP (small objects are valid at the
upsampled scales, large ones at the downsampled ones). A *scale* is a resize factor of the
original image. Boxes are ``(N, 4)`` xyxy; chip windows are integer xyxy in pixels of the image
resized by the chip's scale (they may stick out of it: the chip is then padded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from scaledet.data.transforms import Sample, crop, move_points, resize, resized_crop


@dataclass(frozen=True)
class ScaleRange:
    """One pyramid scale and its SNIP valid range.

    Attributes:
        scale: resize factor of the original image.
        min_size, max_size: valid object sizes ``sqrt(w * h)`` in original pixels,
            ``min_size <= size <= max_size``.
    """

    scale: float
    min_size: float = 0.0
    max_size: float = math.inf

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if not 0 <= self.min_size <= self.max_size:
            raise ValueError(f"valid range must satisfy 0 <= min_size <= max_size, "
                             f"got ({self.min_size}, {self.max_size})")

    def valid(self, boxes: Tensor) -> Tensor:
        """``(N,)`` bool: the object size of each ``(N, 4)`` xyxy box is in range."""
        size = box_size(boxes)
        return (size >= self.min_size) & (size <= self.max_size)


def box_size(boxes: Tensor) -> Tensor:
    """``(N,)`` object size ``sqrt(w * h)`` of ``(N, 4)`` xyxy boxes (same units as boxes)."""
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    return (w * h).sqrt()


def image_pyramid(image: Tensor, scales: Sequence[float]) -> list[tuple[Tensor, float]]:
    """The ``(3, H, W)`` image resized by each factor in ``scales`` (test-time pyramid).

    Returns:
        ``[(image (3, round(H s), round(W s)), s), ...]``; a detection ``d`` on level ``s``
        is ``d / s`` in original pixels.
    """
    empty = torch.zeros(0, 4)
    return [(resize(Sample(image, empty, torch.zeros(0, dtype=torch.int64)), s).image, float(s))
            for s in scales]


def snip_targets(boxes: Tensor, labels: Tensor, scales: Sequence[ScaleRange]) -> list[dict]:
    """SNIP training targets for each pyramid scale.

    Args:
        boxes: ``(N, 4)`` xyxy, original pixels.
        labels: ``(N,)`` int64.

    Returns:
        One dict per scale: ``{"scale": s, "boxes": (N, 4) boxes * s, "labels": (N,),
        "ignore": (N,) bool}``; ``ignore`` marks objects outside the scale's valid range
        (the loss must neither match them as positives nor count anchors on them as
        negatives).
    """
    return [{"scale": r.scale, "boxes": boxes * r.scale, "labels": labels,
             "ignore": ~r.valid(boxes)} for r in scales]


# ---- SNIPER chips -------------------------------------------------------------------------


@dataclass(frozen=True)
class Chip:
    """A fixed-size training crop at one scale.

    Attributes:
        scale: resize factor of the original image.
        window: ``(x0, y0, x1, y1)`` integer pixels of the image resized by ``scale``.
        positives: indices of the ground-truth boxes the chip was chosen to cover (valid at
            this scale and fully inside); empty for a negative chip.
    """

    scale: float
    window: tuple[int, int, int, int]
    positives: tuple[int, ...] = ()

    def original_window(self) -> tuple[float, float, float, float]:
        """The window in original-image pixels (``window / scale``)."""
        return tuple(v / self.scale for v in self.window)


def chip_positions(length: int, chip: int, stride: int) -> list[int]:
    """Offsets of chips of size ``chip`` along an axis of ``length`` pixels.

    Every ``stride`` pixels, plus one aligned to the far end, so the chips cover the axis;
    ``[0]`` when the axis is shorter than a chip (the chip then sticks out and is padded).
    """
    if length <= chip:
        return [0]
    offsets = list(range(0, length - chip + 1, stride))
    if offsets[-1] != length - chip:
        offsets.append(length - chip)
    return offsets


def chip_candidates(height: int, width: int, chip: int, stride: int) -> Tensor:
    """``(M, 4)`` int64 windows of all candidate chips on a ``height x width`` image."""
    xs = chip_positions(width, chip, stride)
    ys = chip_positions(height, chip, stride)
    x0 = torch.tensor(xs).repeat(len(ys))
    y0 = torch.tensor(ys).repeat_interleave(len(xs))
    return torch.stack([x0, y0, x0 + chip, y0 + chip], dim=1)


def _contains(windows: Tensor, boxes: Tensor) -> Tensor:
    """``(M, N)`` bool: box ``n`` lies entirely inside window ``m``."""
    w = windows[:, None, :].to(boxes.dtype)
    b = boxes[None]
    return ((b[..., 0] >= w[..., 0]) & (b[..., 1] >= w[..., 1])
            & (b[..., 2] <= w[..., 2]) & (b[..., 3] <= w[..., 3]))


def greedy_cover(contains: Tensor, targets: Tensor, max_chips: int | None = None) -> list[int]:
    """Greedy set cover: repeatedly take the candidate containing most uncovered targets.

    Args:
        contains: ``(M, N)`` bool, candidate ``m`` contains object ``n``.
        targets: ``(N,)`` bool, objects to cover (those no candidate contains are skipped).
        max_chips: stop after this many (``None``: until every coverable target is covered).

    Returns:
        Chosen candidate indices, in the order chosen (ties: the lowest index).
    """
    uncovered = targets & contains.any(dim=0)
    chosen: list[int] = []
    while uncovered.any() and (max_chips is None or len(chosen) < max_chips):
        gain = (contains & uncovered[None]).sum(dim=1)
        best = int(gain.argmax())
        chosen.append(best)
        uncovered &= ~contains[best]
    return chosen


def sniper_chips(boxes: Tensor, image_size: tuple[int, int], scales: Sequence[ScaleRange],
                 chip_size: int = 512, stride: int = 32, proposals: Tensor | None = None,
                 negatives_per_scale: int = 1,
                 rng: np.random.Generator | None = None) -> list[Chip]:
    """SNIPER positive and negative chips for one image.

    At each scale, candidate ``chip_size`` windows every ``stride`` pixels of the resized
    image are chosen greedily until every ground-truth box valid at that scale lies inside a
    chosen chip. A valid box that no candidate contains (longer than about
    ``chip_size - stride`` at that scale: a very elongated box, since validity is on
    ``sqrt(w * h)``) stays uncovered at that scale; ranges whose ``max_size * scale`` is at
    most half a chip cover every box of aspect ratio up to 1:4. Negative chips: with ``proposals``
    (``(M, 4)`` xyxy original pixels, e.g. a detector's false positives, as in the paper),
    greedy chips covering the in-range proposals no positive chip contains; without, random
    candidates that overlap no ground-truth box at all. At most ``negatives_per_scale`` each.

    Args:
        boxes: ``(N, 4)`` xyxy ground truth, original pixels.
        image_size: ``(height, width)`` of the original image.
        scales: pyramid scales with their valid ranges. Make one scale show the whole image
            in a chip (``chip_size / max(h, w)``) with an open-ended range so that every box
            is covered somewhere (see ``default_sniper_scales``).

    Returns:
        Positive chips (scale by scale, in greedy order), then negative chips.
    """
    if chip_size < 1 or stride < 1:
        raise ValueError(f"chip_size and stride must be >= 1, got {chip_size}, {stride}")
    rng = rng if rng is not None else np.random.default_rng(0)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    positives, negatives = [], []
    for r in scales:
        h, w = round(image_size[0] * r.scale), round(image_size[1] * r.scale)
        cand = chip_candidates(h, w, chip_size, stride)
        contains = _contains(cand, boxes * r.scale)
        valid = r.valid(boxes)
        picked = greedy_cover(contains, valid)
        for m in picked:
            inside = (contains[m] & valid).nonzero().flatten().tolist()
            positives.append(Chip(r.scale, tuple(cand[m].tolist()), tuple(inside)))
        taken = torch.zeros(len(cand), dtype=torch.bool)
        taken[picked] = True
        for m in _negatives(cand, taken, boxes * r.scale, proposals, r, negatives_per_scale,
                            rng):
            negatives.append(Chip(r.scale, tuple(cand[m].tolist())))
    return positives + negatives


def _negatives(cand: Tensor, taken: Tensor, scaled_gt: Tensor, proposals: Tensor | None,
               r: ScaleRange, k: int, rng: np.random.Generator) -> list[int]:
    if k <= 0:
        return []
    if proposals is not None:
        props = torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4)
        contains = _contains(cand, props * r.scale)
        uncovered = r.valid(props) & ~contains[taken].any(dim=0)
        return greedy_cover(contains & ~taken[:, None], uncovered, k)
    x0, y0, x1, y1 = (cand[:, None, i].float() for i in range(4))
    g = scaled_gt[None]
    overlaps = ((g[..., 0] < x1) & (g[..., 2] > x0) & (g[..., 1] < y1) & (g[..., 3] > y0))
    free = (~overlaps.any(dim=1) & ~taken).nonzero().flatten().numpy()
    if len(free) == 0:
        return []
    return sorted(rng.choice(free, size=min(k, len(free)), replace=False).tolist())


def default_sniper_scales(image_size: tuple[int, int], chip_size: int = 512) -> list[ScaleRange]:
    """SNIPER's three scales for one image: 3x for small objects (size <= 80 px), 1.667x for
    medium (32-150 px) and the whole image in one chip for large ones (>= 120 px); the sizes
    are SNIPER's for 512 px chips, scaled by ``chip_size / 512``."""
    k = chip_size / 512
    whole = chip_size / max(image_size)
    return [ScaleRange(3.0, 0, 80 * k), ScaleRange(1.667, 32 * k, 150 * k),
            ScaleRange(whole, 120 * k)]


def crop_chip(sample: Sample, chip: Chip, chip_size: int, ranges: ScaleRange | None = None,
              min_visible: float = 0.5, min_size: float = 2.0) -> tuple[Sample, Tensor]:
    """Cut ``chip`` out of the original-resolution ``sample`` without resizing the whole image.

    Only the original pixels under the chip are resized (by ``chip.scale``), so a chip of a
    3x upsampled image costs ``chip_size**2`` pixels, not ``9 H W``.

    Returns:
        ``(chip sample (3, chip_size, chip_size) with boxes in chip pixels, ignore (K,) bool)``
        where ``ignore`` marks kept boxes outside ``ranges``' valid range (none if ``None``).
    """
    s = chip.scale
    x0, y0, _, _ = chip.window
    # Integer region of the original image that holds the chip, one pixel of margin.
    ox0 = max(0, math.floor(x0 / s) - 1)
    oy0 = max(0, math.floor(y0 / s) - 1)
    ox1 = min(sample.width, math.ceil((x0 + chip_size) / s) + 1)
    oy1 = min(sample.height, math.ceil((y0 + chip_size) / s) + 1)
    if ox1 <= ox0 or oy1 <= oy0:
        part = crop(sample, (0, 0, 1, 1))
    else:
        part = crop(sample, (ox0, oy0, ox1, oy1))
    part = resize(part, s)
    dx, dy = round(x0 - ox0 * s), round(y0 - oy0 * s)
    # Pixels may be off by half a pixel (rounding); boxes are exactly ``box * s - (x0, y0)``.
    fx, fy = x0 - ox0 * s - dx, y0 - oy0 * s - dy
    part.boxes = part.boxes - torch.tensor([fx, fy, fx, fy], dtype=part.boxes.dtype)
    part.keypoints = move_points(part.keypoints, 1.0, (fx, fy))
    out = crop(part, (dx, dy, dx + chip_size, dy + chip_size), min_visible, min_size)
    if ranges is None:
        return out, torch.zeros(len(out.boxes), dtype=torch.bool)
    return out, ~ranges.valid(out.boxes / s)


# ---- chips as training samples ------------------------------------------------------------


def pick_chip(boxes: Tensor, image_size: tuple[int, int], scales: Sequence[ScaleRange],
              chip_size: int, rng: np.random.Generator, stride: int = 32,
              negative: float = 0.0, objects: Tensor | None = None) -> Chip:
    """One SNIPER chip for a training sample: a positive chip, or a background chip.

    The chips are ``sniper_chips``' (with one random negative chip per scale). A positive chip
    is drawn uniformly, so that over the epochs each positive chip of the image is trained on
    about equally often, as SNIPER trains on all of them every epoch; with probability
    ``negative`` a negative chip is drawn instead. Without a positive chip (no object, or none
    that a chip can hold) a negative chip is taken, and without either a random candidate
    window at a random scale (everything in it is then ignored).

    Args:
        boxes: ``(N, 4)`` xyxy, original pixels.
        image_size: ``(height, width)`` of the original image.
        scales: pyramid scales with their valid ranges (at least one).
        chip_size, stride: as in ``sniper_chips``.
        rng: the sample's generator (the choice and the negative chips follow it).
        negative: probability of a negative chip when the image has both kinds.
        objects: ``(N,)`` bool, the boxes that may be chip targets (others, e.g. crowd regions,
            never are and do not keep negative chips away); ``None``: all.

    Returns:
        The chip; its ``positives`` index ``boxes``.
    """
    if not scales:
        raise ValueError("pick_chip needs at least one scale")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    index = (torch.arange(len(boxes)) if objects is None
             else torch.as_tensor(objects, dtype=torch.bool).nonzero().flatten())
    chips = sniper_chips(boxes[index], image_size, scales, chip_size, stride,
                         negatives_per_scale=1, rng=rng)
    pos = [c for c in chips if c.positives]
    neg = [c for c in chips if not c.positives]
    if neg and (not pos or rng.random() < negative):
        chip = neg[int(rng.integers(len(neg)))]
    elif pos:
        chip = pos[int(rng.integers(len(pos)))]
    else:
        r = scales[int(rng.integers(len(scales)))]
        h, w = round(image_size[0] * r.scale), round(image_size[1] * r.scale)
        cand = chip_candidates(h, w, chip_size, stride)
        chip = Chip(r.scale, tuple(cand[int(rng.integers(len(cand)))].tolist()))
    return replace(chip, positives=tuple(index[list(chip.positives)].tolist()))


def cut_chip(sample: Sample, chip: Chip, min_size: float = 0.0) -> tuple[Sample, Tensor]:
    """``chip`` as a training sample: its window of ``sample`` resized by ``chip.scale``.

    Only the pixels under the window are resized (``resized_crop``). Every box visible in the
    window is kept, clipped to it; the chip's ``positives`` are its targets and the other boxes
    (out of the chip's valid range, cut by the window, or not objects) are regions to ignore,
    as are positives narrower or shorter than ``min_size`` chip pixels.

    Returns:
        ``(chip sample (3, S, S) with boxes in chip pixels, ignore (K,) bool)``.
    """
    tagged = replace(sample, labels=torch.arange(len(sample.boxes)))
    out = resized_crop(tagged, chip.scale, chip.window)
    index = out.labels
    positive = torch.zeros(len(sample.boxes), dtype=torch.bool)
    positive[list(chip.positives)] = True
    w = out.boxes[:, 2] - out.boxes[:, 0]
    h = out.boxes[:, 3] - out.boxes[:, 1]
    ignore = ~positive[index] | (w < min_size) | (h < min_size)
    return Sample(out.image, out.boxes, sample.labels[index], out.keypoints), ignore


# ---- sliced inference ---------------------------------------------------------------------


def slice_image(height: int, width: int, tile: int,
                overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles covering a ``height x width`` image, for sliced inference.

    Args:
        tile: tile side in pixels (tiles are ``min(tile, H) x min(tile, W)``).
        overlap: fraction of ``tile`` shared by neighbouring tiles, in ``[0, 1)``.

    Returns:
        ``[(x0, y0, x1, y1), ...]`` integer pixels, row by row; the last row and column are
        aligned to the image edge, so every pixel is in some tile.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if tile < 1:
        raise ValueError(f"tile must be >= 1 pixel, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap is a fraction of the tile in [0, 1), got {overlap}")
    stride = max(1, tile - round(overlap * tile))
    xs = chip_positions(width, tile, stride)
    ys = chip_positions(height, tile, stride)
    tw, th = min(tile, width), min(tile, height)
    return [(x, y, x + tw, y + th) for y in ys for x in xs]
