"""FCOS head (Tian et al., ICCV 2019) with VarifocalNet's IoU-aware classification score
(Zhang et al., CVPR 2021).

Every location of every level predicts ``num_classes`` logits and four distances to the box
sides. The classification target of a positive location is not 1 but the IoU of its predicted
box with its ground truth (IoU-aware classification score, IACS), trained with varifocal loss;
the score therefore ranks boxes by localisation quality and no separate centerness branch is
needed. Boxes are trained with a GIoU (or other IoU-family) loss weighted by that same IoU.

With ``reg_max > 0`` each side is a distribution over ``reg_max + 1`` bins (in strides) as in
Generalized Focal Loss (Li et al., NeurIPS 2020), decoded as its expectation and trained with
distribution focal loss on top of the IoU loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scaledet.losses.distribution import distribution_expectation, distribution_focal_loss
from scaledet.losses.focal import varifocal_loss
from scaledet.losses.iou_loss import iou_loss
from scaledet.models.assigners import ATSSAssigner
from scaledet.models.box_coders import PointDistanceCoder
from scaledet.models.heads.dense import DenseHead, flatten_levels, ignore_weight, pad_targets
from scaledet.models.layers import LevelNormTower, conv_block, init_weights
from scaledet.ops import box_iou

# exp() of the regression is clamped here: distances up to e^10 ~ 22000 strides, never inf.
_MAX_LOG_DISTANCE = 10.0
BOX_WEIGHTINGS = ("iou", "uniform", "object", "balanced")


@dataclass
class Positives:
    """The ``M`` positive locations of a batch after assignment.

    Attributes:
        image: ``(M,)`` int64 image index in the batch.
        location: ``(M,)`` int64 location index (flattened levels, see
            :mod:`~scaledet.models.heads.dense`).
        object: ``(M,)`` int64 index of the assigned object among the image's (padded)
            ground truths.
    """

    image: Tensor
    location: Tensor
    object: Tensor


class SharedTower(nn.Sequential):
    """Conv blocks applied unchanged to every level; ``forward(x, level)`` has the signature of
    :class:`~scaledet.models.layers.LevelNormTower` and ignores ``level``."""

    def forward(self, x: Tensor, level: int) -> Tensor:
        return super().forward(x)


class FCOSHead(DenseHead):
    """Anchor-free head shared across pyramid levels.

    Two towers (classification, regression) of ``num_convs`` conv blocks each (depthwise-
    separable when ``depthwise``, GroupNorm by default so that sharing the weights across
    levels is harmless), then a classification and a regression conv. Distances are
    ``exp(scale_l * r) * stride_l`` with a learnable ``scale_l`` per level, or with
    ``reg_max > 0`` the expectation of a softmax over bins ``0..reg_max`` (logits times
    ``scale_l``) times ``stride_l``.

    Args:
        num_classes: foreground classes.
        in_channels: channels of every input level (the neck's width).
        strides: stride of each input level, finest first.
        num_convs: conv blocks per tower (0: predict straight from the neck features).
        depthwise: depthwise-separable tower convs and ``1x1`` prediction convs.
        norm, act: tower normalisation and activation. ``"gn"`` (FCOS's GroupNorm), ``"bn"``
            (one BatchNorm shared by all levels: mixes their statistics) or ``"level_bn"``
            (shared convs, a BatchNorm per level: :class:`~scaledet.models.layers.LevelNormTower`).
        assigner: an :class:`~scaledet.models.assigners.Assigner` (default
            :class:`~scaledet.models.assigners.ATSSAssigner`). When its assignment carries a
            quality (:class:`~scaledet.models.tal.TaskAlignedAssigner`: the normalised task
            alignment), that is the classification target and box-loss weight of a positive
            instead of its IoU.
        box_loss: IoU-family kind for the box loss (``"giou"``, ``"ciou"``, ...).
        box_loss_weight: weight of the box loss in the total (VarifocalNet uses 2.0 for long
            COCO runs; the presets set their own).
        vfl_alpha, vfl_gamma: varifocal loss parameters.
        prior_prob: initial foreground probability of every score (the classification bias
            is ``-log((1 - p) / p)``, so the first steps are not swamped by easy negatives).
        reg_max: 0 for FCOS's ``exp`` distances; ``n > 0`` for GFL's distributions over
            ``n + 1`` bins (distances up to ``n`` strides; ``4 (n + 1)`` regression channels).
        dfl_weight: weight of the distribution focal loss (``reg_max > 0`` only), which is
            weighted per location like the box loss.
        box_weighting: how the box (and distribution) loss weighs the positives: ``"iou"``
            (VarifocalNet: by the IoU of the predicted box, so badly localised positives
            count least), ``"uniform"`` (every positive alike), ``"object"`` (every object
            alike: a positive's weight is one over its object's number of positives, so a
            tiny object with one location counts as much as a large one with twenty) or
            ``"balanced"`` (by the IoU, scaled up for objects whose positives' IoUs sum to
            less than 1, so that every object weighs at least 1: the few, badly localised
            positives of tiny objects are not drowned out, large objects keep VarifocalNet's
            weighting). ``"iou"`` is the default.
    """

    def __init__(self, *, num_classes: int, in_channels: int, strides: Sequence[int] = (8, 16, 32),
                 num_convs: int = 1, depthwise: bool = True, norm: str = "gn",
                 act: str = "relu", assigner=None, box_loss: str = "giou",
                 box_loss_weight: float = 0.25, vfl_alpha: float = 0.75, vfl_gamma: float = 2.0,
                 prior_prob: float = 0.01, reg_max: int = 0, dfl_weight: float = 0.25,
                 box_weighting: str = "iou") -> None:
        super().__init__(num_classes=num_classes, strides=strides)
        if reg_max < 0:
            raise ValueError(f"reg_max must be >= 0, got {reg_max}")
        if box_weighting not in BOX_WEIGHTINGS:
            raise ValueError(f"box_weighting must be one of {BOX_WEIGHTINGS}, got {box_weighting!r}")
        self.box_weighting = box_weighting
        self.reg_max, self.dfl_weight = int(reg_max), dfl_weight

        def tower() -> nn.Module:
            if norm == "level_bn":
                return LevelNormTower(in_channels, num_convs=num_convs, depthwise=depthwise,
                                      num_levels=len(self.strides), act=act)
            return SharedTower(*(conv_block(in_channels, in_channels, depthwise=depthwise,
                                            norm=norm, act=act) for _ in range(num_convs)))

        k = 1 if depthwise else 3
        self.cls_tower, self.reg_tower = tower(), tower()
        self.cls_pred = nn.Conv2d(in_channels, num_classes, k, padding=k // 2)
        self.reg_pred = nn.Conv2d(in_channels, 4 * (self.reg_max + 1 if self.reg_max else 1), k,
                                  padding=k // 2)
        self.scales = nn.Parameter(torch.ones(len(self.strides)))
        self.assigner = assigner if assigner is not None else ATSSAssigner()
        self.coder = PointDistanceCoder()
        self.box_loss, self.box_loss_weight = box_loss, box_loss_weight
        self.vfl_alpha, self.vfl_gamma = vfl_alpha, vfl_gamma
        init_weights(self)
        for pred in (self.cls_pred, self.reg_pred):
            nn.init.normal_(pred.weight, std=0.01)
            nn.init.zeros_(pred.bias)
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: logits ``(B, num_classes, H_l, W_l)`` and log-distances ``(B, 4, H_l, W_l)``
        (in strides, before ``exp``) or, with ``reg_max``, bin logits ``(B, 4 (reg_max + 1),
        H_l, W_l)`` (side-major: ``l, t, r, b`` blocks of ``reg_max + 1``)."""
        cls_maps, reg_maps = [], []
        for i, f in enumerate(feats):
            cls_maps.append(self.cls_pred(self.cls_tower(f, i)))
            reg_maps.append(self.reg_pred(self.reg_tower(f, i)) * self.scales[i])
        return cls_maps, reg_maps

    def distances(self, reg: Tensor) -> Tensor:
        """``(B, P, R)`` regression -> ``(B, P, 4)`` float32 ``ltrb`` distances in strides."""
        if self.reg_max:
            return distribution_expectation(reg.unflatten(-1, (4, self.reg_max + 1)))
        return reg.float().clamp(max=_MAX_LOG_DISTANCE).exp()

    def decode(self, points: Tensor, strides: Tensor, reg: Tensor) -> Tensor:
        """``(B, P, R)`` regression (see :meth:`forward`) -> ``(B, P, 4)`` xyxy pixels."""
        return self.coder.decode(points, self.distances(reg), strides)

    def loss(self, cls_maps: list[Tensor], reg_maps: list[Tensor], targets: list[dict]
             ) -> dict[str, Tensor]:
        """Varifocal + IoU-family losses; see the module docstring.

        ``targets``: one dict per image with ``boxes (N, 4)`` xyxy input pixels and ``labels
        (N,)`` int64, optionally ``ignore (K, 4)`` xyxy regions (COCO crowds) where locations
        that are not positives get no classification loss. Returns ``loss_cls``,
        ``loss_box`` (and ``loss_dfl``) and their sum ``loss``.
        """
        out, _ = self.dense_losses(cls_maps, reg_maps, targets)
        out["loss"] = sum(out.values())
        return out

    def dense_losses(self, cls_maps: list[Tensor], reg_maps: list[Tensor], targets: list[dict]
                     ) -> tuple[dict[str, Tensor], Positives | None]:
        """The named losses of :meth:`loss` without their sum, and the positives they were
        computed on (None when the predictions diverged and every loss is NaN), for a
        subclass that adds a branch trained on the same locations."""
        points, strides, sizes = self.points(cls_maps)
        logits = flatten_levels(cls_maps).float()
        reg = flatten_levels(reg_maps)
        boxes = self.decode(points, strides, reg)
        if not bool(torch.isfinite(boxes).all()):  # diverged: NaN losses for the trainer's guard
            nan = boxes.sum() * math.nan
            return {"loss_cls": nan, "loss_box": nan}, None
        gt_boxes, gt_labels, gt_valid = pad_targets(targets)
        assignment = self.assigner.assign(points, strides, sizes, gt_boxes, gt_labels, gt_valid,
                                          boxes.detach(), logits.detach().sigmoid())
        matched, quality = assignment.matched, assignment.quality
        b, p = (matched >= 0).nonzero(as_tuple=True)
        gt, labels, pred = gt_boxes[b, matched[b, p]], gt_labels[b, matched[b, p]], boxes[b, p]
        # IoU-aware target (VarifocalNet) or the normalised task alignment (TOOD).
        iou = box_iou(pred.detach(), gt, aligned=True) if quality is None else quality[b, p]
        iou = iou.clamp(min=1e-6)
        cls_target = torch.zeros_like(logits)
        cls_target[b, p, labels] = iou
        # VarifocalNet normalises by the number of positives; with task alignment (top-k soft
        # targets, most of them small) that starves the scores, so divide by the targets' sum
        # as PP-YOLOE and YOLOv8 do.
        norm = max(len(b), 1) if quality is None else iou.sum().clamp(min=1.0)
        keep = ignore_weight(points, targets, matched >= 0)  # crowd regions: no negatives
        loss_cls = varifocal_loss(logits, cls_target, self.vfl_alpha, self.vfl_gamma,
                                  weight=keep) / norm
        # VarifocalNet weighs the box losses by the IoU; see box_weighting for the others.
        weight = self._box_weights(iou, b * gt_boxes.shape[1] + matched[b, p])
        box_norm = weight.sum().clamp(min=1.0)
        loss_box = iou_loss(pred, gt, self.box_loss, reduction="sum", weight=weight)
        loss_box = self.box_loss_weight * loss_box / box_norm
        loss_box = loss_box + 0.0 * boxes.sum()  # keeps every output in the graph when empty
        out = {"loss_cls": loss_cls, "loss_box": loss_box}
        if self.reg_max:
            target = self.coder.encode(points[p], gt, strides[p])  # (M, 4) in strides
            dfl = distribution_focal_loss(reg[b, p].unflatten(-1, (4, self.reg_max + 1)), target)
            out["loss_dfl"] = self.dfl_weight * (dfl.mean(-1) * weight).sum() / box_norm
        return out, Positives(b, p, matched[b, p])

    def _box_weights(self, iou: Tensor, object_id: Tensor) -> Tensor:
        """``(M,)`` box-loss weights of the positives (see ``box_weighting``); ``object_id``
        ``(M,)`` tells which object (batch-wide index) each positive belongs to. The losses
        divide by the weights' sum (at least 1)."""
        if self.box_weighting == "iou":
            return iou
        if self.box_weighting == "uniform":
            return torch.ones_like(iou)
        _, inverse, counts = object_id.unique(return_inverse=True, return_counts=True)
        if self.box_weighting == "object":
            return 1.0 / counts[inverse].to(iou.dtype)
        total = torch.zeros(len(counts), dtype=iou.dtype, device=iou.device)
        return iou / total.index_add_(0, inverse, iou)[inverse].clamp(max=1.0)
