"""Training and evaluation transforms on an image with its boxes.

A ``Sample`` is an image ``(3, H, W)`` uint8 tensor plus ``boxes`` ``(N, 4)`` float32 xyxy in
pixels of that image, ``labels`` ``(N,)`` int64 and, for keypoint data, ``keypoints``
``(N, K, 3)`` float32 (``x, y`` pixels of that image, visibility ``v`` in ``{0, 1, 2}``). Every
geometric transform moves the points exactly as it moves the boxes (the same arithmetic, so a
point inside its box stays inside it); a point that leaves the image gets ``v = 0`` (its
coordinates are kept, so they still follow the geometry); a dropped box drops its points; a
horizontal flip also swaps left and right joints (``flip_idx``). Every transform takes a
``Sample`` and returns a new one; the random ones take an ``np.random.Generator`` so that a (seed, epoch,
index) triple fixes the result (see ``scaledet.data.loader``).

Image kernels come from ``torchvision.transforms.v2.functional`` (resize with antialias on
uint8, flip) and the flip of boxes from ``tv_tensors.BoundingBoxes``. Written here, and why:

* crop / letterbox / mosaic: torchvision's ``SanitizeBoundingBoxes`` only drops degenerate
  boxes after clamping; we need the *visible-area rule* (keep a cut box only when at least
  ``min_visible`` of its area is still inside) and a crop window that may stick out of the
  image (padded with grey 114, as YOLO letterboxing does).
* colour jitter: ``F.adjust_hue`` converts to HSV in float, which costs more than the rest
  of the pipeline together. Brightness, contrast, saturation and a hue rotation about the
  grey axis are all linear in RGB, so ``color_jitter`` applies them as one 3x3 matrix plus
  offset. The hue rotation is the usual RGB-space
  approximation of an HSV hue shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torch import Tensor
from torchvision import tv_tensors

PAD_VALUE = 114
"""Grey level (0..255) of letterbox / crop padding."""


@dataclass
class Sample:
    """An image with its boxes.

    Attributes:
        image: ``(3, H, W)`` uint8 RGB.
        boxes: ``(N, 4)`` float32 xyxy, pixels of ``image``.
        labels: ``(N,)`` int64 class indices.
        keypoints: ``(N, K, 3)`` float32 ``x, y`` pixels of ``image`` and visibility ``v``, or
            ``None`` (box-only data).
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    keypoints: Tensor | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[-2])

    @property
    def width(self) -> int:
        return int(self.image.shape[-1])


@dataclass
class AugmentConfig:
    """Training augmentation settings (defaults suit a short CPU training budget).

    Attributes:
        scale_range: random scale jitter, a factor on top of the letterbox scale (multi-scale
            training); ``(1.0, 1.0)`` turns it off.
        hflip: probability of a horizontal flip.
        mosaic: probability that a sample is a 4-image mosaic. The engine turns mosaic off
            for the last epochs ("close mosaic") with ``loader.set_mosaic(0.0)``.
        brightness, contrast, saturation: colour jitter strengths; each factor is drawn
            uniformly from ``[1 - s, 1 + s]``.
        hue: hue rotation, uniformly in ``[-hue, hue]`` turns of the colour wheel.
        min_size: boxes narrower or shorter than this (pixels, after transforms) are dropped.
        min_visible: a box cut by a crop is kept only when this fraction of its area remains.
        chips: probability that a training sample is a SNIPER chip (``scaledet.data.sampling``)
            instead of the whole image; 0 (the default) turns chips off. A chip is a
            ``chip_size`` square cut from the image zoomed by one of the ``chip_ranges`` scales,
            placed to hold objects whose size is in that scale's valid range: those are its
            targets, and every other object visible in it (out of range, cut by the chip's edge,
            smaller than ``min_size`` or a crowd region) becomes an ``ignore`` region, so the
            detector learns each object size at the scales where it sees it well and is not
            punished for the others. A chip sample is neither mosaicked nor scale-jittered (the
            chip scale is its scale); it is flipped and colour-jittered like the others. The
            chip draw comes first: ``mosaic`` applies to the samples that are not chips, so
            ``chips=0.5, mosaic=1.0`` gives half chips and half mosaics, and
            ``loader.set_mosaic(0.0)`` leaves chips on.
        chip_size: chip side in pixels; 0 = the training image side. A batch mixing chips of
            another side with whole-image samples is padded bottom/right (grey) to the largest.
        chip_ranges: one ``(scale, min_size, max_size)`` per chip scale: a resize factor of the
            image as the loader reads it (longer side ``imgsz``), and the valid range of object
            sizes ``sqrt(w * h)`` in pixels of that image (``max_size`` ``inf`` or ``None``: no
            bound). Give overlapping ranges that cover all sizes, one of them at the scale that
            fits the whole image in a chip (``chip_size / imgsz``) with no upper bound, so that
            every object is a target somewhere. ``()``: SNIPER's three scales and ranges
            (``default_sniper_scales``).
        chip_stride: spacing in pixels of the candidate chip positions (finer: tighter chips,
            more work to place them).
        chip_negatives: probability that a chip sample is a background chip (one that overlaps
            no object) when the image has one; the other chips are drawn uniformly from the
            image's positive chips.
    """

    scale_range: tuple[float, float] = (0.5, 1.5)
    hflip: float = 0.5
    mosaic: float = 1.0
    brightness: float = 0.3
    contrast: float = 0.2
    saturation: float = 0.4
    hue: float = 0.015
    min_size: float = 2.0
    min_visible: float = 0.25
    chips: float = 0.0
    chip_size: int = 0
    chip_ranges: tuple[tuple[float, float, float], ...] = ()
    chip_stride: int = 32
    chip_negatives: float = 0.1

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {self.scale_range}")
        for name in ("hflip", "mosaic", "min_visible", "chips", "chip_negatives"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation", "hue", "min_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.chip_size != 0 and (self.chip_size != int(self.chip_size) or self.chip_size < 8):
            raise ValueError(f"chip_size must be 0 (the training side) or an integer >= 8 "
                             f"pixels, got {self.chip_size}")
        if self.chip_stride != int(self.chip_stride) or self.chip_stride < 1:
            raise ValueError(f"chip_stride must be an integer >= 1 pixel, got {self.chip_stride}")
        self.chip_size, self.chip_stride = int(self.chip_size), int(self.chip_stride)
        self.chip_ranges = _chip_ranges(self.chip_ranges)


def _chip_ranges(ranges) -> tuple[tuple[float, float, float], ...]:
    """``chip_ranges`` as float triples (from the command line they come as lists, an open
    upper bound as ``None``); a ``ValueError`` for a malformed one."""
    out = []
    for item in ranges:
        if isinstance(item, (str, bytes)) or not hasattr(item, "__len__") or len(item) != 3:
            raise ValueError(f"chip_ranges: each must be (scale, min_size, max_size), got {item!r}")
        scale, lo, hi = item
        scale, lo, hi = float(scale), float(lo), math.inf if hi is None else float(hi)
        if not scale > 0 or not 0 <= lo <= hi:
            raise ValueError(f"chip_ranges: need scale > 0 and 0 <= min_size <= max_size, got "
                             f"{tuple(item)}")
        out.append((scale, lo, hi))
    return tuple(out)


# ---- boxes ------------------------------------------------------------------------------


def clip_boxes(boxes: Tensor, width: int, height: int, min_visible: float = 0.0,
               min_size: float = 0.0) -> tuple[Tensor, Tensor]:
    """Clip xyxy boxes to the image and decide which to keep.

    Args:
        boxes: ``(N, 4)`` xyxy pixels, possibly partly outside ``[0, width] x [0, height]``.
        min_visible: keep a box only if ``clipped area / original area >= min_visible``.
        min_size: keep a box only if its clipped width and height are ``>= min_size`` pixels.

    Returns:
        ``(clipped (N, 4), keep (N,) bool)``; boxes with zero original area are never kept.
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                           boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)
    w = clipped[:, 2] - clipped[:, 0]
    h = clipped[:, 3] - clipped[:, 1]
    keep = (area > 0) & (w * h >= min_visible * area) & (w >= min_size) & (h >= min_size)
    keep &= (w > 0) & (h > 0)
    return clipped, keep


def _filtered(sample: Sample, image: Tensor, boxes: Tensor, min_visible: float,
              min_size: float, keypoints: Tensor | None = None) -> Sample:
    width, height = image.shape[-1], image.shape[-2]
    clipped, keep = clip_boxes(boxes, width, height, min_visible, min_size)
    if keypoints is not None:
        keypoints = hide_outside(keypoints, width, height)[keep]
    return Sample(image, clipped[keep], sample.labels[keep], keypoints)


# ---- keypoints ----------------------------------------------------------------------------


def move_points(keypoints: Tensor | None, scale: float = 1.0,
                shift: tuple[float, float] = (0.0, 0.0)) -> Tensor | None:
    """``x, y -> x * scale - shift`` of ``(N, K, 3)`` points (flags kept); ``None`` stays.

    The arithmetic is the boxes' (``boxes * scale - shift`` in the boxes' dtype), so a point
    on or inside a box edge stays on or inside it."""
    if keypoints is None:
        return None
    out = keypoints.clone()
    xy = out[..., :2]
    if scale != 1.0:
        xy = xy * scale
    if shift != (0.0, 0.0):
        xy = xy - torch.tensor(shift, dtype=keypoints.dtype)
    out[..., :2] = xy
    return out


def hide_outside(keypoints: Tensor, width: int, height: int) -> Tensor:
    """Points outside ``[0, width] x [0, height]`` (pixels, edges included) get ``v = 0``."""
    x, y = keypoints[..., 0], keypoints[..., 1]
    outside = (x < 0) | (y < 0) | (x > width) | (y > height)
    out = keypoints.clone()
    out[..., 2] = out[..., 2].masked_fill(outside, 0)
    return out


def flip_points(keypoints: Tensor, width: int, flip_idx: list[int] | None = None) -> Tensor:
    """Mirror ``(N, K, 3)`` points left-right (``x -> width - x``) and reorder the joints:
    joint ``k`` of the output is joint ``flip_idx[k]`` of the input (``left_*`` <-> ``right_*``;
    ``None``: no reordering)."""
    out = keypoints.clone()
    out[..., 0] = width - out[..., 0]
    if flip_idx is not None:
        out = out[:, torch.as_tensor(flip_idx, dtype=torch.long)]
    return out


# ---- geometry ---------------------------------------------------------------------------


def grey_canvas(height: int, width: int, channels: int = 3,
                dtype: torch.dtype = torch.uint8) -> Tensor:
    """A ``(channels, height, width)`` image of ``PAD_VALUE``, stored channels-last.

    Channels-last (HWC memory) is what the decoder returns and what torchvision's uint8
    resize works in natively (faster than on CHW memory), so images stay in it
    until ``color_jitter`` / the loader make them contiguous.
    """
    return torch.full((height, width, channels), PAD_VALUE, dtype=dtype).permute(2, 0, 1)


def resize(sample: Sample, scale: float) -> Sample:
    """Resize by ``scale`` (output ``round(H * scale) x round(W * scale)``, at least 1 px).

    Boxes and keypoints are multiplied by ``scale`` itself, so that ``box / scale`` maps back
    exactly; the pixel grid is off by at most half a pixel from that (rounding of the output
    size), and no point is hidden here.
    Bilinear with antialias (torchvision's fast uint8 path).
    """
    h = max(1, round(sample.height * scale))
    w = max(1, round(sample.width * scale))
    keypoints = move_points(sample.keypoints, scale)
    if (h, w) == (sample.height, sample.width):
        return replace(sample, boxes=sample.boxes * scale, keypoints=keypoints)
    image = F.resize(sample.image, [h, w], antialias=True)
    return Sample(image, sample.boxes * scale, sample.labels, keypoints)


def crop(sample: Sample, window: tuple[int, int, int, int], min_visible: float = 0.0,
         min_size: float = 0.0) -> Sample:
    """Cut the window ``(x0, y0, x1, y1)`` (integer pixels, may stick out of the image).

    The output is ``(y1 - y0) x (x1 - x0)``; parts of the window outside the image are grey
    ``PAD_VALUE``. Boxes are shifted, clipped to the window and kept by ``clip_boxes``'s
    visible-area and size rules.
    """
    x0, y0, x1, y1 = (int(v) for v in window)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop window must have x1 > x0 and y1 > y0, got {window}")
    image = sample.image
    if (x0, y0) == (0, 0) and (x1, y1) == (sample.width, sample.height):
        out = image
    else:
        out = grey_canvas(y1 - y0, x1 - x0, image.shape[0], image.dtype)
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x1, sample.width), min(y1, sample.height)
        if ix1 > ix0 and iy1 > iy0:
            out[:, iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[:, iy0:iy1, ix0:ix1]
    shift = torch.tensor([x0, y0, x0, y0], dtype=sample.boxes.dtype)
    keypoints = move_points(sample.keypoints, 1.0, (x0, y0))
    return _filtered(sample, out, sample.boxes - shift, min_visible, min_size, keypoints)


def random_window(height: int, width: int, size: tuple[int, int],
                  rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random ``size = (h, w)`` window on a ``height x width`` image, as ``(x0, y0, x1, y1)``.

    Along each axis the offset is uniform over all positions where the window covers as much
    of the image as it can (``[W - w, 0]`` when the image is smaller, else ``[0, W - w]``).
    """
    h, w = size
    x0 = int(rng.integers(min(0, width - w), max(0, width - w) + 1))
    y0 = int(rng.integers(min(0, height - h), max(0, height - h) + 1))
    return x0, y0, x0 + w, y0 + h


def random_crop(sample: Sample, size: tuple[int, int], rng: np.random.Generator,
                min_visible: float = 0.25, min_size: float = 2.0) -> Sample:
    """Crop a random ``size = (h, w)`` window (``random_window``); a smaller image lands at a
    random place on grey."""
    window = random_window(sample.height, sample.width, size, rng)
    return crop(sample, window, min_visible, min_size)


def resized_crop(sample: Sample, scale: float, window: tuple[int, int, int, int],
                 min_visible: float = 0.0, min_size: float = 0.0) -> Sample:
    """``crop(resize(sample, scale), window, ...)``, resizing only the pixels under the window.

    A zoomed-in training crop or a mosaic quadrant needs a fraction of the resized image;
    resizing just that region (plus a margin for the filter) saves most of the work. Boxes are
    exactly ``boxes * scale - (x0, y0)`` as with ``crop(resize(...))``; pixels may differ from
    it by a fraction of a pixel (the region's output size is rounded separately).
    """
    x0, y0, x1, y1 = (int(v) for v in window)
    full_h, full_w = round(sample.height * scale), round(sample.width * scale)
    out = grey_canvas(y1 - y0, x1 - x0, sample.image.shape[0], sample.image.dtype)
    margin = 2 + math.ceil(1 / scale)  # source pixels the (antialiased) filter reaches
    sx0, sy0 = max(0, math.floor(x0 / scale) - margin), max(0, math.floor(y0 / scale) - margin)
    sx1 = min(sample.width, math.ceil(x1 / scale) + margin)
    sy1 = min(sample.height, math.ceil(y1 / scale) + margin)
    if sx1 > sx0 and sy1 > sy0:
        # The region maps to resized pixels [round(sx0 s), round(sx1 s)), so that a region
        # reaching the image edge ends exactly at the resized image's edge.
        px0, py0 = round(sx0 * scale), round(sy0 * scale)
        size = [max(1, round(sy1 * scale) - py0), max(1, round(sx1 * scale) - px0)]
        part = F.resize(sample.image[:, sy0:sy1, sx0:sx1], size, antialias=True)
        dx, dy = x0 - px0, y0 - py0  # window origin in the part's pixels
        # Window pixels inside both the full resized image and the resized region.
        u0, v0 = max(0, -x0, -dx), max(0, -y0, -dy)
        u1 = min(x1 - x0, full_w - x0, size[1] - dx)
        v1 = min(y1 - y0, full_h - y0, size[0] - dy)
        if u1 > u0 and v1 > v0:
            out[:, v0:v1, u0:u1] = part[:, v0 + dy:v1 + dy, u0 + dx:u1 + dx]
    shift = torch.tensor([x0, y0, x0, y0], dtype=sample.boxes.dtype)
    keypoints = move_points(sample.keypoints, scale, (x0, y0))
    return _filtered(sample, out, sample.boxes * scale - shift, min_visible, min_size,
                     keypoints)


def letterbox(sample: Sample, imgsz: int) -> tuple[Sample, float]:
    """Resize so the longer side is ``imgsz`` and pad bottom/right to ``imgsz x imgsz``.

    Returns:
        ``(sample, scale)``: boxes in the letterboxed frame are ``original boxes * scale``.
    """
    scale = imgsz / max(sample.height, sample.width)
    out = crop(resize(sample, scale), (0, 0, imgsz, imgsz))
    return out, scale


def hflip(sample: Sample, flip_idx: list[int] | None = None) -> Sample:
    """Mirror left-right: ``x -> W - x`` (so ``x1' = W - x2``, ``x2' = W - x1``).

    Keypoints are mirrored too and reordered by ``flip_idx`` (``flip_points``): the left wrist
    of a mirrored person is where the right wrist was. ``None`` keeps the joint order."""
    boxes = tv_tensors.BoundingBoxes(sample.boxes, format="XYXY",
                                     canvas_size=(sample.height, sample.width))
    flipped = F.horizontal_flip(boxes).as_subclass(Tensor)
    keypoints = (None if sample.keypoints is None
                 else flip_points(sample.keypoints, sample.width, flip_idx))
    return Sample(F.horizontal_flip(sample.image), flipped, sample.labels, keypoints)


def mosaic(samples: list[Sample], imgsz: int, rng: np.random.Generator,
           scale_range: tuple[float, float] = (1.0, 1.0), min_visible: float = 0.25,
           min_size: float = 2.0) -> Sample:
    """Four images around a random centre of an ``imgsz x imgsz`` canvas (YOLOv4 mosaic).

    Each image is letterbox-scaled (longer side ``imgsz``) times a jitter from
    ``scale_range``, then placed with a corner on the centre ``(xc, yc)``, drawn uniformly
    from the middle half of the canvas: image 0 top-left of the centre, 1 top-right,
    2 bottom-left, 3 bottom-right. What falls outside the canvas is cut (visible-area rule).
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(samples)}")
    s = imgsz
    xc = int(rng.integers(s // 4, 3 * s // 4 + 1))
    yc = int(rng.integers(s // 4, 3 * s // 4 + 1))
    canvas = grey_canvas(s, s, 3, samples[0].image.dtype)
    boxes, labels, points = [], [], []
    for k, sample in enumerate(samples):
        scale = s / max(sample.height, sample.width) * rng.uniform(*scale_range)
        w, h = round(sample.width * scale), round(sample.height * scale)
        left, top = k % 2 == 0, k < 2
        x0 = w - xc if left else 0              # window in the resized image's pixels
        y0 = h - yc if top else 0
        x1 = x0 + (xc if left else s - xc)
        y1 = y0 + (yc if top else s - yc)
        piece = resized_crop(sample, scale, (x0, y0, x1, y1), min_visible, min_size)
        px, py = (0 if left else xc), (0 if top else yc)
        canvas[:, py:py + piece.height, px:px + piece.width] = piece.image
        boxes.append(piece.boxes + torch.tensor([px, py, px, py], dtype=piece.boxes.dtype))
        labels.append(piece.labels)
        points.append(move_points(piece.keypoints, 1.0, (-px, -py)))
    keypoints = None if any(p is None for p in points) else torch.cat(points)
    return Sample(canvas, torch.cat(boxes), torch.cat(labels), keypoints)


# ---- colour -----------------------------------------------------------------------------

_LUMA = torch.tensor([0.299, 0.587, 0.114])
_CHUNK = 1 << 16  # pixels per step of color_jitter


def color_matrix(brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0,
                 hue: float = 0.0, mean_luma: float = 0.0) -> tuple[Tensor, Tensor]:
    """The ``(3, 3)`` matrix ``M`` and ``(3,)`` offset ``b`` with ``rgb' = M @ rgb + b``.

    Factors follow torchvision's ``adjust_*`` definitions (saturation blends with the grey
    image, contrast with the mean grey ``mean_luma``, brightness scales), applied in the
    order hue, saturation, contrast, brightness. ``hue`` is in turns; the hue step is a
    rotation about the grey axis (Rodrigues' formula with axis ``(1, 1, 1) / sqrt(3)``).
    """
    theta = 2 * math.pi * hue
    k = torch.full((3,), 1 / math.sqrt(3))
    cross = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    m = (math.cos(theta) * torch.eye(3) + math.sin(theta) * cross
         + (1 - math.cos(theta)) * torch.outer(k, k))
    grey = torch.outer(torch.ones(3), _LUMA)                   # rgb -> (y, y, y)
    m = (saturation * torch.eye(3) + (1 - saturation) * grey) @ m
    m = contrast * m
    b = torch.full((3,), (1 - contrast) * mean_luma)
    return brightness * m, brightness * b


def color_jitter(sample: Sample, rng: np.random.Generator, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0) -> Sample:
    """Random brightness / contrast / saturation / hue as one affine colour map (see module).

    Factors are drawn uniformly from ``[1 - s, 1 + s]``, the hue from ``[-hue, hue]`` turns;
    the mean grey for contrast is taken over every 7th pixel. Boxes are untouched; the image
    comes back contiguous (CHW memory).
    """
    fb, fc, fs = (rng.uniform(1 - s, 1 + s) for s in (brightness, contrast, saturation))
    fh = rng.uniform(-hue, hue)
    if fb == fc == fs == 1.0 and fh == 0.0:
        return sample
    flat = sample.image.contiguous().view(3, -1)
    mean = float(_LUMA @ flat[:, ::7].float().mean(dim=1)) if fc != 1.0 else 0.0
    m, b = color_matrix(fb, fc, fs, fh, mean)
    out = torch.empty_like(flat)
    # In chunks: a whole-image float copy would cost more in fresh-page faults than the math.
    for i in range(0, flat.shape[1], _CHUNK):
        part = torch.addmm(b[:, None], m, flat[:, i:i + _CHUNK].float())
        out[:, i:i + _CHUNK] = part.clamp_(0, 255).round_()
    return replace(sample, image=out.view_as(sample.image))


# ---- the training pipeline --------------------------------------------------------------


def scale_jitter(sample: Sample, imgsz: int, rng: np.random.Generator,
                 cfg: AugmentConfig) -> Sample:
    """Letterbox scale times a random factor from ``cfg.scale_range``, then a random
    ``imgsz x imgsz`` crop (zoom in) or placement on grey (zoom out)."""
    scale = imgsz / max(sample.height, sample.width) * rng.uniform(*cfg.scale_range)
    h, w = round(sample.height * scale), round(sample.width * scale)
    window = random_window(h, w, (imgsz, imgsz), rng)
    return resized_crop(sample, scale, window, cfg.min_visible, cfg.min_size)


def train_transform(samples: list[Sample], imgsz: int, rng: np.random.Generator,
                    cfg: AugmentConfig, use_mosaic: bool,
                    flip_idx: list[int] | None = None) -> Sample:
    """The training augmentation: mosaic of ``samples[:4]`` (if ``use_mosaic``) or scale
    jitter of ``samples[0]``, then horizontal flip (keypoints reordered by ``flip_idx``) and
    colour jitter. Output ``imgsz``."""
    if use_mosaic:
        out = mosaic(samples[:4], imgsz, rng, cfg.scale_range, cfg.min_visible, cfg.min_size)
    else:
        out = scale_jitter(samples[0], imgsz, rng, cfg)
    return flip_and_jitter(out, rng, cfg, flip_idx)


def flip_and_jitter(sample: Sample, rng: np.random.Generator, cfg: AugmentConfig,
                    flip_idx: list[int] | None = None) -> Sample:
    """The last training steps, shared by whole-image samples and SNIPER chips: a horizontal
    flip with probability ``cfg.hflip`` (keypoints reordered by ``flip_idx``), then colour
    jitter."""
    if rng.random() < cfg.hflip:
        sample = hflip(sample, flip_idx)
    return color_jitter(sample, rng, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
