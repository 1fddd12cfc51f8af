"""CenterNet head (Zhou et al., "Objects as Points", 2019) at stride 4.

An object is the peak of a class heatmap at its box centre, plus the box size and the
sub-cell offset of the centre regressed at that one location. Inference takes the local maxima
of the heatmap (``3 x 3`` max-pool equality) and the top-k of them: no NMS (the preset uses
``PostProcess(nms="none", topk_per_level=100)``).

Heatmap targets follow TTFNet (Liu et al., AAAI 2020), not CenterNet's circular Gaussian: an
elliptical Gaussian per box whose radii are ``floor(alpha * w / 2)`` and ``floor(alpha * h /
2)`` output cells (``alpha = 0.54``), ``sigma = (2 r + 1) / 6`` per axis, truncated at the
radii. It follows the box's aspect ratio, and it avoids CornerNet's ``gaussian_radius``
(min_overlap 0.7), whose published quadratic roots are known to differ from the derivation
they cite. The regression (size, offset, L1 losses at the centre only) is CenterNet's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.losses.heatmap import penalty_reduced_focal_loss
from scaledet.models.heads.dense import DenseHead, flatten_levels, ignore_weight
from scaledet.models.layers import conv_block, init_weights


def centernet_targets(boxes: Tensor, labels: Tensor, num_classes: int,
                      map_size: tuple[int, int], stride: int, alpha: float = 0.54
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Training targets of one image (see the module docstring).

    Args:
        boxes: ``(N, 4)`` xyxy input pixels; labels: ``(N,)`` int64.
        map_size: ``(H, W)`` of the stride-``stride`` output map.

    Returns:
        ``heatmap (C, H, W)`` in ``[0, 1]``, 1 exactly at each box's centre cell (the cell
        holding the centre, clamped into the map) and the element-wise max over boxes of a
        class elsewhere; ``index (M,)`` the distinct centre cells, sorted (row-major ``y * W + x``);
        ``reg (M, 4)`` their targets ``(dx, dy, w, h)`` in cells (``dx, dy`` the centre's
        offset from the cell's top-left corner). When boxes share a centre cell the smallest
        (area) gets it. Memory ``O(N H W)``.
    """
    h, w = map_size
    n = boxes.shape[0]
    heatmap = boxes.new_zeros(num_classes, h * w)
    if n == 0:
        return heatmap.view(num_classes, h, w), labels.new_zeros(0), boxes.new_zeros(0, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / (2 * stride)  # (N, 2) xy cells
    size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0) / stride
    cell = centre.floor().long()
    cell[:, 0].clamp_(0, w - 1)
    cell[:, 1].clamp_(0, h - 1)
    radius = (alpha * size / 2).floor()
    sigma = (2 * radius + 1) / 6
    gx = _gaussian_1d(torch.arange(w, device=boxes.device) - cell[:, :1], sigma[:, :1],
                      radius[:, :1])  # (N, W)
    gy = _gaussian_1d(torch.arange(h, device=boxes.device) - cell[:, 1:], sigma[:, 1:],
                      radius[:, 1:])  # (N, H)
    g = (gy[:, :, None] * gx[:, None, :]).reshape(n, -1)  # separable: (N, H * W)
    heatmap.scatter_reduce_(0, labels[:, None].expand_as(g), g, "amax")
    flat = cell[:, 1] * w + cell[:, 0]
    order = (size[:, 0] * size[:, 1]).argsort(stable=True)  # smallest first
    index, inverse = torch.unique(flat[order], return_inverse=True)
    first = torch.full_like(index, n).scatter_reduce(0, inverse, torch.arange(n, device=flat.device),
                                                    "amin")
    chosen = order[first]
    reg = torch.cat([centre - cell, size], dim=1)[chosen]
    return heatmap.view(num_classes, h, w), index, reg


def _gaussian_1d(d: Tensor, sigma: Tensor, radius: Tensor) -> Tensor:
    return torch.exp(-d.square() / (2 * sigma.square())) * (d.abs() <= radius)


def heatmap_peaks(logits: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> same-shape bool mask of local maxima (equal to the max of their
    ``3 x 3`` neighbourhood): CenterNet's replacement for NMS."""
    logits = logits.float()
    return logits == F.max_pool2d(logits, 3, stride=1, padding=1)


class CenterNetHead(DenseHead):
    """Heatmap and regression branches on the finest neck level (stride 4, P2 of an FPN).

    Only ``feats[0]`` is used: coarser levels reach it through the neck's top-down path. Each
    branch is one conv block (depthwise-separable when ``depthwise``) and a ``1 x 1`` conv: the
    heatmap branch gives ``num_classes`` logits, the regression branch ``(dx, dy, w, h)`` in
    output cells (the size is clamped at 0 when decoding).

    Args:
        num_classes: foreground classes.
        in_channels: channels of the neck's finest level.
        stride: stride of that level (4 in CenterNet).
        depthwise, act: conv block type and activation.
        gaussian_alpha: TTFNet's Gaussian size factor (module docstring).
        size_loss_weight, offset_loss_weight: L1 loss weights (CenterNet's 0.1 and 1).
        focal_alpha, focal_beta: penalty-reduced focal loss exponents (2 and 4).
        prior_prob: initial heatmap probability (CenterNet's bias -2.19 is ``p = 0.1``).
    """

    def __init__(self, *, num_classes: int, in_channels: int, stride: int = 4,
                 depthwise: bool = True, act: str = "relu", gaussian_alpha: float = 0.54,
                 size_loss_weight: float = 0.1, offset_loss_weight: float = 1.0,
                 focal_alpha: float = 2.0, focal_beta: float = 4.0,
                 prior_prob: float = 0.1) -> None:
        super().__init__(num_classes=num_classes, strides=(stride,))
        self.heatmap = nn.Sequential(conv_block(in_channels, in_channels, depthwise=depthwise,
                                                act=act), nn.Conv2d(in_channels, num_classes, 1))
        self.regression = nn.Sequential(conv_block(in_channels, in_channels,
                                                   depthwise=depthwise, act=act),
                                        nn.Conv2d(in_channels, 4, 1))
        self.gaussian_alpha = gaussian_alpha
        self.size_loss_weight, self.offset_loss_weight = size_loss_weight, offset_loss_weight
        self.focal_alpha, self.focal_beta = focal_alpha, focal_beta
        init_weights(self)
        for pred in (self.heatmap[-1], self.regression[-1]):
            nn.init.normal_(pred.weight, std=0.01)
            nn.init.zeros_(pred.bias)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """One level: heatmap logits ``(B, num_classes, H, W)``, regression ``(B, 4, H, W)``."""
        return [self.heatmap(feats[0])], [self.regression(feats[0])]

    def decode(self, points: Tensor, strides: Tensor, reg: Tensor) -> Tensor:
        """``(B, P, 4)`` ``(dx, dy, w, h)`` cells -> ``(B, P, 4)`` xyxy pixels."""
        reg, s = reg.float(), strides[:, None]
        centre = points - 0.5 * s + reg[..., :2] * s  # cell top-left corner + offset
        half = reg[..., 2:].clamp(min=0) * s / 2
        return torch.cat([centre - half, centre + half], dim=-1)

    def predict(self, cls_maps: list[Tensor], reg_maps: list[Tensor]
                ) -> tuple[Tensor, Tensor, list[int]]:
        """As :meth:`DenseHead.predict`, with the scores of non-peak locations set to 0."""
        boxes, scores, sizes = super().predict(cls_maps, reg_maps)
        peaks = flatten_levels([heatmap_peaks(m) for m in cls_maps])
        return boxes, scores * peaks.to(scores.dtype), sizes

    def loss(self, cls_maps: list[Tensor], reg_maps: list[Tensor], targets: list[dict]
             ) -> dict[str, Tensor]:
        """Penalty-reduced focal loss on the heatmap (``loss_cls``, divided by the number of
        peaks), L1 losses on the size (``loss_box``) and offset (``loss_offset``) at the centre
        cells (divided by their number), and the total ``loss``. Cells inside a target's
        ``ignore (K, 4)`` xyxy regions (COCO crowds) that are no object's peak get no heatmap
        loss."""
        logits = cls_maps[0].float()
        reg = flatten_levels(reg_maps).float()
        num_classes, h, w = logits.shape[1:]
        heatmaps, pred, target = [], [], []
        for b, t in enumerate(targets):
            heatmap, index, r = centernet_targets(t["boxes"], t["labels"], num_classes, (h, w),
                                                  self.strides[0], self.gaussian_alpha)
            heatmaps.append(heatmap)
            pred.append(reg[b, index])
            target.append(r)
        heatmaps = torch.stack(heatmaps)
        is_peak = heatmaps == 1  # (B, C, H, W)
        num_peaks = max(int(is_peak.sum()), 1)
        focal = penalty_reduced_focal_loss(logits, heatmaps, self.focal_alpha, self.focal_beta,
                                           reduction="none")  # (B, C, H, W)
        points, _, _ = self.points(cls_maps)
        peak = is_peak.any(dim=1).flatten(1)  # (B, H * W), row-major as the points
        keep = ignore_weight(points, targets, peak)  # crowd regions: no negatives
        if keep is not None:
            focal = focal * keep.view(-1, 1, h, w)
        loss_cls = focal.sum() / num_peaks
        pred, target = torch.cat(pred), torch.cat(target)
        num_centres = max(target.shape[0], 1)
        l1 = F.l1_loss(pred, target, reduction="none").sum(dim=0) / num_centres  # (4,)
        keep_graph = 0.0 * reg.sum()  # every parameter gets a (zero) gradient with no boxes
        loss_offset = self.offset_loss_weight * l1[:2].sum() + keep_graph
        loss_box = self.size_loss_weight * l1[2:].sum() + keep_graph
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_offset": loss_offset,
                "loss": loss_cls + loss_box + loss_offset}
