"""Shared parts of dense (one prediction per feature-map location) detection heads.

:class:`DenseHead` generates the location grid of every pyramid level, flattens per-level maps
and turns them into boxes and scores; :func:`postprocess` does score threshold, per-level
top-k, class-aware NMS (hard, Soft-NMS, DIoU-NMS) and the per-image cap. A new head
(CenterNet, YOLO...) subclasses :class:`DenseHead` and adds only its layers (``forward``), its
box decoding (``decode``) and its assignment and loss (``loss``).

Locations are numbered level by level, finest level first, row-major inside a level; all
flattened tensors (``(B, P, K)``) follow that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scaledet.ops import batched_diou_nms, batched_nms, batched_soft_nms

NMS_METHODS = ("hard", "soft-linear", "soft-gaussian", "diou", "none")
# Soft-NMS only decays scores, so it needs a positive floor to ever drop a box.
_SOFT_MIN_SCORE = 1e-4


@dataclass
class PostProcess:
    """Inference settings (see :func:`postprocess`).

    Attributes:
        score_thresh: drop (location, class) scores at or below this before NMS (and, for
            Soft-NMS, boxes whose decayed score falls below it, or below 1e-4 if it is 0).
        topk_per_level: keep at most this many candidates per pyramid level before NMS.
        nms: ``"hard"`` (greedy), ``"soft-linear"`` / ``"soft-gaussian"`` (Soft-NMS, Bodla et
            al.), or ``"diou"`` (DIoU-NMS, Zheng et al.); always class-aware; ``"none"`` keeps
            the top-k candidates as they are (CenterNet, whose peaks are already unique).
        nms_iou: IoU threshold (hard, DIoU, Soft-NMS linear).
        soft_sigma: Soft-NMS gaussian width.
        max_det: detections kept per image (100 for COCO-style evaluation; 300 for crowded
            scenes).
    """

    score_thresh: float = 0.05
    topk_per_level: int = 1000
    nms: str = "hard"
    nms_iou: float = 0.6
    soft_sigma: float = 0.5
    max_det: int = 100

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for an unknown NMS method or out-of-range numbers."""
        if self.nms not in NMS_METHODS:
            raise ValueError(f"nms must be one of {NMS_METHODS}, got {self.nms!r}")
        if not 0 <= self.score_thresh < 1:
            raise ValueError(f"score_thresh must be in [0, 1), got {self.score_thresh}")
        if not 0 < self.nms_iou <= 1:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_det < 1 or self.topk_per_level < 1:
            raise ValueError(f"max_det and topk_per_level must be >= 1, got {self.max_det}, "
                             f"{self.topk_per_level}")


def flatten_levels(maps: Sequence[Tensor]) -> Tensor:
    """Per-level ``(B, K, H_l, W_l)`` maps -> ``(B, P, K)`` with ``P = sum(H_l * W_l)``."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps],
                     dim=1)


def make_points(shapes: Sequence[tuple[int, int]], strides: Sequence[int],
                device: torch.device | None = None) -> tuple[Tensor, Tensor, list[int]]:
    """Location centres of every level.

    Args:
        shapes: ``(H_l, W_l)`` of each level's map, finest first.
        strides: pixels per location of each level.

    Returns:
        ``points (P, 2)`` float32 xy pixel centres ``((j + 0.5) * stride, (i + 0.5) * stride)``,
        ``point_strides (P,)`` float32, and the number of locations per level.
    """
    points, point_strides, sizes = [], [], []
    for (h, w), s in zip(shapes, strides):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))
        point_strides.append(torch.full((h * w,), float(s), device=device))
        sizes.append(h * w)
    return torch.cat(points), torch.cat(point_strides), sizes


def pad_targets(targets: Sequence[dict]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image targets into padded batch tensors for batched assignment.

    Args:
        targets: per image ``boxes (N_i, 4)`` and ``labels (N_i,)``.

    Returns:
        ``boxes (B, N, 4)``, ``labels (B, N)`` int64 and ``valid (B, N)`` bool, with
        ``N = max(1, max_i N_i)`` (padding: zero boxes, label 0, ``valid`` False).
    """
    boxes = [t["boxes"] for t in targets]
    labels = [t["labels"].long() for t in targets]
    lengths = torch.tensor([len(x) for x in labels], device=boxes[0].device)
    if int(lengths.max()) == 0:  # keep a dummy column so reductions over N are defined
        boxes = [boxes[0].new_zeros(1, 4)] + boxes[1:]
        labels = [labels[0].new_zeros(1)] + labels[1:]
    boxes = nn.utils.rnn.pad_sequence(boxes, batch_first=True)
    labels = nn.utils.rnn.pad_sequence(labels, batch_first=True)
    valid = torch.arange(labels.shape[1], device=labels.device)[None] < lengths[:, None]
    return boxes, labels, valid


def ignore_weight(points: Tensor, targets: Sequence[dict], positive: Tensor) -> Tensor | None:
    """Classification-loss weights that leave out locations inside ignore regions.

    Args:
        points: ``(P, 2)`` location centres ``(x, y)``, input pixels.
        targets: per image, optionally ``ignore (K_i, 4)`` xyxy regions (COCO crowds).
        positive: ``(B, P)`` bool, locations assigned to an object (they keep their loss).

    Returns:
        ``(B, P, 1)`` float, 0 at a non-positive location whose centre lies inside one of its
        image's ignore regions and 1 elsewhere; ``None`` when no image has an ignore region.
    """
    regions = [t.get("ignore") for t in targets]
    if all(r is None or len(r) == 0 for r in regions):
        return None
    regions = [r if r is not None else points.new_zeros(0, 4) for r in regions]
    padded = nn.utils.rnn.pad_sequence([r.to(points) for r in regions], batch_first=True)
    x, y = points[None, :, None, 0], points[None, :, None, 1]  # (1, P, 1)
    x0, y0, x1, y1 = (padded[:, None, :, i] for i in range(4))  # (B, 1, K); padding is empty
    inside = ((x > x0) & (x < x1) & (y > y0) & (y < y1)).any(dim=2)  # (B, P)
    return (~(inside & ~positive)).to(points.dtype)[..., None]


class DenseHead(nn.Module):
    """Base class of dense heads.

    Subclasses implement:

    - ``forward(feats) -> (cls_maps, reg_maps)``: per level ``(B, num_classes, H_l, W_l)``
      classification logits and ``(B, R, H_l, W_l)`` box regression;
    - ``decode(points, strides, reg) -> boxes``: ``(B, P, R)`` regression to ``(B, P, 4)`` xyxy
      pixels of the (padded) input;
    - ``loss(cls_maps, reg_maps, targets) -> dict`` of named scalar losses with ``"loss"`` the
      total.

    Args:
        num_classes: number of foreground classes (sigmoid scores, no background class).
        strides: stride of each input level, finest first.
    """

    def __init__(self, *, num_classes: int, strides: Sequence[int]) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)

    def points(self, maps: Sequence[Tensor]) -> tuple[Tensor, Tensor, list[int]]:
        """Location centres for per-level maps (see :func:`make_points`)."""
        if len(maps) != len(self.strides):
            raise ValueError(f"head has {len(self.strides)} strides but got {len(maps)} levels")
        key = (tuple(tuple(m.shape[-2:]) for m in maps), str(maps[0].device))
        cache = self.__dict__.setdefault("_points_cache", {})  # not a buffer: no state_dict entry
        if key not in cache:  # ~15 small ops per call, a tenth of a batch-1 CPU forward
            if len(cache) >= 8:
                cache.clear()
            cache[key] = make_points(list(key[0]), self.strides, maps[0].device)
        points, strides, sizes = cache[key]
        return points, strides, list(sizes)

    def decode(self, points: Tensor, strides: Tensor, reg: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, cls_maps: list[Tensor], reg_maps: list[Tensor], targets: list[dict]
             ) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict(self, cls_maps: list[Tensor], reg_maps: list[Tensor]
                ) -> tuple[Tensor, Tensor, list[int]]:
        """Boxes ``(B, P, 4)`` xyxy pixels, scores ``(B, P, C)`` in ``[0, 1]`` (both float32,
        also under autocast), locations per level. Only tensor ops without data-dependent
        control flow, so it exports to ONNX."""
        points, strides, sizes = self.points(cls_maps)
        boxes = self.decode(points, strides, flatten_levels(reg_maps))
        return boxes, flatten_levels(cls_maps).float().sigmoid(), sizes


def postprocess(boxes: Tensor, scores: Tensor, level_sizes: Sequence[int], cfg: PostProcess,
                keypoints: Tensor | None = None) -> list[dict[str, Tensor]]:
    """Turn dense predictions into final detections, image by image.

    Args:
        boxes: ``(B, P, 4)`` xyxy pixels.
        scores: ``(B, P, C)`` per-class scores.
        level_sizes: locations per level (``P`` in total), for the per-level top-k.
        cfg: thresholds and NMS method.
        keypoints: optional ``(B, P, K, 3)`` per-location keypoints (``x, y`` pixels, score).

    Returns:
        One dict per image: ``boxes (D, 4)`` xyxy, ``scores (D,)``, ``labels (D,)`` int64,
        sorted by descending score, ``D <= cfg.max_det``; with ``keypoints``, also
        ``keypoints (D, K, 3)``, each detection's row taken from the location its box came
        from.
    """
    cfg.validate()
    if keypoints is None:
        return [_postprocess_image(b, s, level_sizes, cfg) for b, s in zip(boxes, scores)]
    return [_postprocess_image(b, s, level_sizes, cfg, k)
            for b, s, k in zip(boxes, scores, keypoints)]


def _candidates(scores: Tensor, level_sizes: Sequence[int], cfg: PostProcess
                ) -> tuple[Tensor, Tensor, Tensor]:
    """(location, class) pairs scoring above the threshold, the best ``topk_per_level`` of each
    level: ``(locations, labels, scores)``, each ``(M,)``."""
    num_classes = scores.shape[1]
    locs, labels, values = [], [], []
    start = 0
    for s in scores.split(list(level_sizes)):
        flat = s.reshape(-1)
        idx = (flat > cfg.score_thresh).nonzero().squeeze(1)
        if idx.numel() > cfg.topk_per_level:
            idx = idx[flat[idx].topk(cfg.topk_per_level).indices]
        locs.append(idx // num_classes + start)
        labels.append(idx % num_classes)
        values.append(flat[idx])
        start += s.shape[0]
    return torch.cat(locs), torch.cat(labels), torch.cat(values)


def _postprocess_image(boxes: Tensor, scores: Tensor, level_sizes: Sequence[int],
                       cfg: PostProcess, keypoints: Tensor | None = None) -> dict[str, Tensor]:
    locs, labels, values = _candidates(scores, level_sizes, cfg)
    boxes = boxes[locs]
    if cfg.nms == "hard":
        keep = batched_nms(boxes, values, labels, cfg.nms_iou)
        values = values[keep]
    elif cfg.nms == "diou":
        keep = batched_diou_nms(boxes, values, labels, cfg.nms_iou)
        values = values[keep]
    elif cfg.nms == "none":
        keep = values.argsort(descending=True, stable=True)
        values = values[keep]
    else:  # Soft-NMS returns the decayed scores of the kept boxes, in keep order
        keep, values = batched_soft_nms(boxes, values, labels, method=cfg.nms[len("soft-"):],
                                        sigma=cfg.soft_sigma, iou_threshold=cfg.nms_iou,
                                        score_threshold=max(cfg.score_thresh, _SOFT_MIN_SCORE))
    keep, values = keep[: cfg.max_det], values[: cfg.max_det]
    out = {"boxes": boxes[keep], "scores": values, "labels": labels[keep]}
    if keypoints is not None:
        out["keypoints"] = keypoints[locs[keep]]  # (D, K, 3)
    return out
