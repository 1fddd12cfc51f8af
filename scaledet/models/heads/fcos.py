"""FCOS head (Tian et al., ICCV 2019) with VarifocalNet's IoU-aware classification score
(Zhang et al., CVPR 2021).

Every location of every level predicts ``num_classes`` logits and four distances to the box
sides. The classification target of a positive location is not 1 but the IoU of its predicted
box with its ground truth (IoU-aware classification score, IACS), trained with varifocal loss;
the score therefore ranks boxes by localisation quality and no separate centerness branch is
needed. Boxes are trained with a GIoU (or other IoU-family) loss weighted by that same IoU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from scaledet.losses.focal import varifocal_loss
from scaledet.losses.iou_loss import iou_loss
from scaledet.models.assigners import ATSSAssigner
from scaledet.models.box_coders import PointDistanceCoder
from scaledet.models.heads.dense import DenseHead, flatten_levels
from scaledet.models.layers import conv_block, init_weights
from scaledet.ops import box_iou

# exp() of the regression is clamped here: distances up to e^10 ~ 22000 strides, never inf.
_MAX_LOG_DISTANCE = 10.0


class FCOSHead(DenseHead):
    """Anchor-free head shared across pyramid levels.

    Two towers (classification, regression) of ``num_convs`` conv blocks each (depthwise-
    separable when ``depthwise``, GroupNorm by default so that sharing the weights across
    levels is harmless), then a classification and a regression conv. Distances are
    ``exp(scale_l * r) * stride_l`` with a learnable ``scale_l`` per level.

    Args:
        num_classes: foreground classes.
        in_channels: channels of every input level (the neck's width).
        strides: stride of each input level, finest first.
        num_convs: conv blocks per tower (0: predict straight from the neck features).
        depthwise: depthwise-separable tower convs and ``1x1`` prediction convs.
        norm, act: tower normalisation (``"gn"`` or ``"bn"``) and activation.
        assigner: a callable as described in :mod:`scaledet.models.assigners`
            (default :class:`~scaledet.models.assigners.ATSSAssigner`).
        box_loss: IoU-family kind for the box loss (``"giou"``, ``"ciou"``, ...).
        box_loss_weight: weight of the box loss in the total.
        vfl_alpha, vfl_gamma: varifocal loss parameters.
        prior_prob: initial foreground probability of every score (the classification bias
            is ``-log((1 - p) / p)``, so the first steps are not swamped by easy negatives).
    """

    def __init__(self, *, num_classes: int, in_channels: int, strides: Sequence[int] = (8, 16, 32),
                 num_convs: int = 1, depthwise: bool = True, norm: str = "gn",
                 act: str = "relu", assigner=None, box_loss: str = "giou",
                 box_loss_weight: float = 2.0, vfl_alpha: float = 0.75, vfl_gamma: float = 2.0,
                 prior_prob: float = 0.01) -> None:
        super().__init__(num_classes=num_classes, strides=strides)

        def tower() -> nn.Sequential:
            return nn.Sequential(*(conv_block(in_channels, in_channels, depthwise=depthwise,
                                              norm=norm, act=act) for _ in range(num_convs)))

        k = 1 if depthwise else 3
        self.cls_tower, self.reg_tower = tower(), tower()
        self.cls_pred = nn.Conv2d(in_channels, num_classes, k, padding=k // 2)
        self.reg_pred = nn.Conv2d(in_channels, 4, k, padding=k // 2)
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
        (in strides, before ``exp``)."""
        cls_maps, reg_maps = [], []
        for i, f in enumerate(feats):
            cls_maps.append(self.cls_pred(self.cls_tower(f)))
            reg_maps.append(self.reg_pred(self.reg_tower(f)) * self.scales[i])
        return cls_maps, reg_maps

    def decode(self, points: Tensor, strides: Tensor, reg: Tensor) -> Tensor:
        """``(B, P, 4)`` log-distances -> ``(B, P, 4)`` xyxy pixels."""
        distances = reg.float().clamp(max=_MAX_LOG_DISTANCE).exp()
        return self.coder.decode(points, distances, strides)

    def loss(self, cls_maps: list[Tensor], reg_maps: list[Tensor], targets: list[dict]
             ) -> dict[str, Tensor]:
        """Varifocal + IoU-family losses; see the module docstring.

        ``targets``: one dict per image with ``boxes (N, 4)`` xyxy input pixels and ``labels
        (N,)`` int64. Returns ``loss_cls``, ``loss_box`` and their sum ``loss``.
        """
        points, strides, sizes = self.points(cls_maps)
        logits = flatten_levels(cls_maps).float()
        boxes = self.decode(points, strides, flatten_levels(reg_maps))
        if not bool(torch.isfinite(boxes).all()):  # diverged: NaN losses for the trainer's guard
            nan = boxes.sum() * math.nan
            return {"loss_cls": nan, "loss_box": nan, "loss": nan}
        cls_target = torch.zeros_like(logits)
        pred_pos, gt_pos, iou_pos = [], [], []
        for b, t in enumerate(targets):
            matched = self.assigner(points, strides, sizes, t["boxes"])
            pos = (matched >= 0).nonzero().squeeze(1)
            gt = t["boxes"][matched[pos]].float()
            iou = box_iou(boxes[b, pos].detach(), gt, aligned=True).clamp(min=1e-6)
            cls_target[b, pos, t["labels"][matched[pos]]] = iou
            pred_pos.append(boxes[b, pos])
            gt_pos.append(gt)
            iou_pos.append(iou)
        iou_pos = torch.cat(iou_pos)
        num_pos = max(iou_pos.numel(), 1)
        loss_cls = varifocal_loss(logits, cls_target, self.vfl_alpha, self.vfl_gamma) / num_pos
        # VarifocalNet: box loss weighted by the IoU, normalised by the weights' sum (>= 1).
        loss_box = iou_loss(torch.cat(pred_pos), torch.cat(gt_pos), self.box_loss,
                            reduction="sum", weight=iou_pos) / iou_pos.sum().clamp(min=1.0)
        loss_box = self.box_loss_weight * loss_box + 0.0 * boxes.sum()  # keep the graph if empty
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss": loss_cls + loss_box}
