"""YOLO head in its decoupled, anchor-free form (YOLOX, Ge et al., 2021), trained with SimOTA.

Why this YOLO and not the anchor-based YOLOv3-v5 head: anchors from k-means on the training
boxes would make the architecture depend on the dataset (a preset could no longer be built
from its name and class count alone, and every dataset change would need the anchors refitted
and stored with the weights), and their ``(2 sigmoid)^2`` size parametrisation caps boxes at 4x
the anchor. The anchor-free form reuses the shared point grid, box decoding and
post-processing of :class:`~scaledet.models.heads.dense.DenseHead`, and SimOTA
(:mod:`scaledet.models.simota`) replaces the anchors' role in assignment with a dynamic,
prediction-based choice of positives: what differs most from the FCOS head's static ATSS.

Per level (weights not shared, BatchNorm, as in YOLOX): a ``1 x 1`` stem, then a classification
tower and a regression tower of ``num_convs`` conv blocks; the classification tower predicts
``num_classes`` logits, the regression tower the box ``(dx, dy, log w, log h)`` (centre offset
from the location and size, in strides) and an objectness logit. The score of a class is
``sigmoid(class) * sigmoid(objectness)``.

Losses (sums divided by the number of positives): objectness BCE on every location (target 1 on
positives), class BCE on positives with the IoU-valued target of YOLOX, and a CIoU box loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.losses.iou_loss import iou_loss
from scaledet.models.heads.dense import DenseHead, flatten_levels, ignore_weight, pad_targets
from scaledet.models.layers import ConvBNAct, conv_block, init_weights
from scaledet.models.simota import SimOTAAssigner

_MAX_LOG_SIZE = 10.0  # exp() of the size regression is clamped here, never inf


class YOLOXHead(DenseHead):
    """Decoupled anchor-free YOLO head (see the module docstring).

    Args:
        num_classes: foreground classes.
        in_channels: channels of every input level (the neck's width).
        strides: stride of each input level, finest first.
        num_convs: conv blocks per tower (2 in YOLOX).
        depthwise, act: conv block type and activation.
        assigner: a :class:`~scaledet.models.simota.SimOTAAssigner` (default settings if None).
        box_loss: IoU-family kind of the box loss (``"ciou"``; YOLOX uses ``"iou"``).
        box_loss_weight, obj_loss_weight: loss weights (YOLOX's 5 and 1).
        prior_prob: initial class and objectness probability.
    """

    def __init__(self, *, num_classes: int, in_channels: int,
                 strides: Sequence[int] = (8, 16, 32), num_convs: int = 2,
                 depthwise: bool = True, act: str = "relu",
                 assigner: SimOTAAssigner | None = None, box_loss: str = "ciou",
                 box_loss_weight: float = 5.0, obj_loss_weight: float = 1.0,
                 prior_prob: float = 0.01) -> None:
        super().__init__(num_classes=num_classes, strides=strides)
        c, n = in_channels, len(self.strides)

        def towers() -> nn.ModuleList:
            return nn.ModuleList(nn.Sequential(*(conv_block(c, c, depthwise=depthwise, act=act)
                                                 for _ in range(num_convs))) for _ in range(n))

        self.stems = nn.ModuleList(ConvBNAct(c, c, k=1, act=act) for _ in range(n))
        self.cls_towers, self.reg_towers = towers(), towers()
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for _ in range(n))
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, 5, 1) for _ in range(n))  # box 4 + obj 1
        self.assigner = assigner if assigner is not None else SimOTAAssigner()
        self.box_loss, self.box_loss_weight = box_loss, box_loss_weight
        self.obj_loss_weight = obj_loss_weight
        init_weights(self)
        bias = -math.log((1 - prior_prob) / prior_prob)
        for cls_pred, reg_pred in zip(self.cls_preds, self.reg_preds):
            for pred in (cls_pred, reg_pred):
                nn.init.normal_(pred.weight, std=0.01)
                nn.init.zeros_(pred.bias)
            nn.init.constant_(cls_pred.bias, bias)
            nn.init.constant_(reg_pred.bias[4], bias)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class logits ``(B, num_classes, H_l, W_l)`` and ``(B, 5, H_l, W_l)``
        box regression (4) and objectness logit (1)."""
        cls_maps, reg_maps = [], []
        for i, f in enumerate(feats):
            x = self.stems[i](f)
            cls_maps.append(self.cls_preds[i](self.cls_towers[i](x)))
            reg_maps.append(self.reg_preds[i](self.reg_towers[i](x)))
        return cls_maps, reg_maps

    def decode(self, points: Tensor, strides: Tensor, reg: Tensor) -> Tensor:
        """``(B, P, 5)`` regression (the objectness channel is ignored) -> ``(B, P, 4)`` xyxy
        pixels."""
        reg, s = reg.float(), strides[:, None]
        centre = points + reg[..., :2] * s
        half = reg[..., 2:4].clamp(max=_MAX_LOG_SIZE).exp() * s / 2
        return torch.cat([centre - half, centre + half], dim=-1)

    def predict(self, cls_maps: list[Tensor], reg_maps: list[Tensor]
                ) -> tuple[Tensor, Tensor, list[int]]:
        """As :meth:`DenseHead.predict`, with class scores times the objectness."""
        boxes, scores, sizes = super().predict(cls_maps, reg_maps)
        objectness = flatten_levels(reg_maps)[..., 4:].float().sigmoid()
        return boxes, scores * objectness, sizes

    def loss(self, cls_maps: list[Tensor], reg_maps: list[Tensor], targets: list[dict]
             ) -> dict[str, Tensor]:
        """``loss_obj``, ``loss_cls``, ``loss_box`` (see the module docstring) and ``loss``.

        ``targets``: one dict per image with ``boxes (N, 4)`` xyxy input pixels and
        ``labels (N,)`` int64, optionally ``ignore (K, 4)`` xyxy regions (COCO crowds) where
        locations that are not positives get no objectness loss.
        """
        points, strides, sizes = self.points(cls_maps)
        logits = flatten_levels(cls_maps).float()  # (B, P, C)
        reg = flatten_levels(reg_maps).float()  # (B, P, 5)
        boxes = self.decode(points, strides, reg)
        with torch.no_grad():
            scores = logits.sigmoid() * reg[..., 4:].sigmoid()
        obj_target = torch.zeros_like(reg[..., 4])
        gt_boxes, gt_labels, gt_valid = pad_targets(targets)
        assignment = self.assigner.assign(points, strides, sizes, gt_boxes, gt_labels, gt_valid,
                                          boxes.detach(), scores)
        cls_pos, cls_target, box_pos, box_target = [], [], [], []
        for b, t in enumerate(targets):
            matched, iou = assignment.matched[b], assignment.quality[b]
            pos = (matched >= 0).nonzero().squeeze(1)
            obj_target[b, pos] = 1.0
            one_hot = F.one_hot(t["labels"][matched[pos]], self.num_classes).float()
            cls_pos.append(logits[b, pos])
            cls_target.append(one_hot * iou[pos, None])
            box_pos.append(boxes[b, pos])
            box_target.append(t["boxes"][matched[pos]].float())
        num_pos = max(sum(len(p) for p in box_pos), 1)
        keep = ignore_weight(points, targets, obj_target > 0)  # crowd regions: no negatives
        loss_obj = self.obj_loss_weight * F.binary_cross_entropy_with_logits(
            reg[..., 4], obj_target, weight=None if keep is None else keep[..., 0],
            reduction="sum") / num_pos
        loss_cls = F.binary_cross_entropy_with_logits(
            torch.cat(cls_pos), torch.cat(cls_target), reduction="sum") / num_pos
        loss_box = iou_loss(torch.cat(box_pos), torch.cat(box_target), self.box_loss,
                            reduction="sum") / num_pos
        loss_box = self.box_loss_weight * loss_box + 0.0 * boxes.sum()  # keep the graph if empty
        return {"loss_obj": loss_obj, "loss_cls": loss_cls, "loss_box": loss_box,
                "loss": loss_obj + loss_cls + loss_box}
