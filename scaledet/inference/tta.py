"""Image-pyramid test-time augmentation with SNIP-style valid ranges.

The detector runs once per (scale, flip): at scale ``s`` the image is letterboxed to
``imgsz * s`` (rounded to a multiple of 32) instead of ``imgsz``; with ``flip`` a left-right
mirrored copy runs too and its boxes are mirrored back. All boxes are mapped to original-image
pixels, then merged per image by weighted boxes fusion (default) or an NMS variant
(:mod:`scaledet.inference.merge`).

SNIP valid ranges (Singh & Davis, 2018): each scale keeps only the objects whose size it sees
well; an upsampled pass is good at small objects and bad at large ones (cut by the receptive
field), a downsampled one the reverse. A range is ``(min_size, max_size)`` of ``sqrt(w * h)``
measured in pixels of the *scale-1 input* (the ``imgsz`` letterbox), the same convention as
:class:`scaledet.data.sampling.ScaleRange` with the scale-1 input as the reference image.
``snip`` picks ranges from the COCO size boundaries: scales > 1 keep objects below ``large``
(96 px: small and medium), scales < 1 those from ``small`` (32 px: medium and large), scale 1
keeps everything. With WBF, a fused box is averaged over the passes whose range holds its size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scaledet.data.sampling import ScaleRange
from scaledet.inference.merge import (
    concat,
    nms_merge,
    select,
    sort_and_cap,
    wbf_clusters,
    wbf_rescale,
)

Detections = dict[str, Tensor]
MERGE_METHODS = ("wbf", "nms")


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation settings.

    Attributes:
        scales: input-size factors relative to ``imgsz`` (e.g. ``(0.75, 1.0, 1.5)``).
        flip: also run each scale on the left-right mirrored image.
        ranges: SNIP valid ranges, one ``(min_size, max_size)`` per scale in scale-1 input
            pixels (see the module docstring), or None to keep every box of every pass.
        merge: ``"wbf"`` (weighted boxes fusion) or ``"nms"`` (the predictor's NMS variant).
        iou: matching IoU of the merge (default: 0.55 for WBF, the predictor's NMS IoU).
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    ranges: tuple[tuple[float, float], ...] | None = None
    merge: str = "wbf"
    iou: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales or not all(s > 0 and math.isfinite(s) for s in self.scales):
            raise ValueError(f"tta scales must be positive numbers, got {self.scales}")
        if self.merge not in MERGE_METHODS:
            raise ValueError(f"tta merge must be one of {MERGE_METHODS}, got {self.merge!r}")
        if self.iou is not None and not 0 < self.iou <= 1:
            raise ValueError(f"tta iou must be in (0, 1], got {self.iou}")
        if self.ranges is not None:
            ranges = tuple((float(a), float(b)) for a, b in self.ranges)
            if len(ranges) != len(self.scales):
                raise ValueError(f"tta: {len(ranges)} ranges for {len(self.scales)} scales")
            object.__setattr__(self, "ranges", ranges)
            self.levels()  # validates each range

    def levels(self) -> list[ScaleRange]:
        """One :class:`ScaleRange` per scale (unbounded when ``ranges`` is None)."""
        ranges = self.ranges or [(0.0, math.inf)] * len(self.scales)
        return [ScaleRange(s, lo, hi) for s, (lo, hi) in zip(self.scales, ranges)]

    @classmethod
    def parse(cls, spec: str, merge: str = "wbf", iou: float | None = None) -> TTA:
        """From the CLI form ``"scales=0.75,1,1.5[,flip][,snip]"``."""
        key, _, values = spec.partition("=")
        if key.strip() != "scales" or not values:
            raise ValueError(f"--tta: expected 'scales=S1,S2,...[,flip][,snip]', got {spec!r}")
        scales, flip, snip = [], False, False
        for token in (t.strip() for t in values.split(",")):
            if token in ("flip", "snip"):
                flip, snip = flip or token == "flip", snip or token == "snip"
                continue
            try:
                scales.append(float(token))
            except ValueError:
                raise ValueError(f"--tta: {token!r} is neither a scale nor 'flip' / 'snip' "
                                 f"(in {spec!r})") from None
        return cls(tuple(scales), flip, snip_ranges(scales) if snip else None, merge, iou)


def snip_ranges(scales: Sequence[float], small: float = 32.0, large: float = 96.0
                ) -> tuple[tuple[float, float], ...]:
    """Default SNIP ranges (see the module docstring), in scale-1 input pixels."""
    return tuple((0.0, large) if s > 1 else (small, math.inf) if s < 1 else (0.0, math.inf)
                 for s in scales)


def input_size(imgsz: int, scale: float) -> int:
    """Letterbox side of a pass at ``scale``: ``imgsz * scale`` to a multiple of 32 (>= 32)."""
    return max(32, round(imgsz * scale / 32) * 32)


def tta_detect(predictor, images: Sequence[Tensor], tta: TTA) -> list[Detections]:
    """Run every (scale, flip) pass on ``(3, H, W)`` uint8 ``images`` and merge per image.

    Returns:
        One detections dict per image, original-image pixels, score >= ``predictor.conf``,
        sorted, at most ``predictor.max_det``.
    """
    levels = tta.levels()
    passes = []  # (level, detections of every image)
    for level in levels:
        for flip in (False, True) if tta.flip else (False,):
            size = input_size(predictor.imgsz, level.scale)
            passes.append((level, predictor.detect(images, size, flip)))
    out = []
    for i, image in enumerate(images):
        base = predictor.imgsz / max(image.shape[-2:])  # original px -> scale-1 input px
        parts = [_in_range(dets[i], level, base, tta.ranges is not None)
                 for level, dets in passes]
        out.append(_merge(predictor, tta, concat(parts), [lv for lv, _ in passes], base))
    return out


def _in_range(det: Detections, level: ScaleRange, base: float, use_ranges: bool) -> Detections:
    return select(det, level.valid(det["boxes"] * base)) if use_ranges else det


def _merge(predictor, tta: TTA, det: Detections, levels: list[ScaleRange],
           base: float) -> Detections:
    if tta.merge == "wbf":
        fused, counts = wbf_clusters(det, tta.iou if tta.iou is not None else 0.55)
        sources: int | Tensor = len(levels)
        if tta.ranges is not None:  # average over the passes able to see a box of that size
            sources = torch.stack([lv.valid(fused["boxes"] * base) for lv in levels]).sum(0)
        merged = wbf_rescale(fused, counts, sources)
    else:
        iou = tta.iou if tta.iou is not None else predictor.iou
        merged = nms_merge(det, predictor.nms, iou, min_score=max(predictor.conf, 1e-3))
    return sort_and_cap(merged, predictor.conf, predictor.max_det)
