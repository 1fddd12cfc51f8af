"""RT-DETR-style set-prediction head (Zhao et al., "DETRs Beat YOLOs on Real-time Object
Detection", CVPR 2024), on the neck's multi-level features.

1. Memory: every level projected to ``hidden_dim`` (1x1 conv + BN) and flattened.
2. Query selection: the ``num_queries`` best-scoring locations of a proposal stage become the
   decoder's initial boxes and content (IoU-aware: the proposal scores are trained with the
   IoU as their target, so the selected queries are well-localised ones). The proposal stage is

   - ``"dense"``: a dense FCOS head (:class:`~scaledet.models.heads.fcos.FCOSHead`) trained
     one-to-many with its own assigner, as the auxiliary dense heads of Co-DETR and the dense
     supervision of DEIM: it gives the encoder many positives per object from the first step;
   - ``"hungarian"``: RT-DETR's own, a class and box head per location (boxes relative to a
     grid anchor) trained with the set loss on the selected top-k;
   - ``"none"``: plain DETR, learned queries and learned reference boxes, no selection.
3. Decoder (:class:`~scaledet.models.detr.decoder.Decoder`) with deformable cross-attention,
   class and box heads after every layer; in training, contrastive denoising groups
   (:mod:`~scaledet.models.detr.denoising`) run beside the matching queries.
4. Set loss (:mod:`~scaledet.models.detr.criterion`) with Hungarian matching on every decoder
   layer, plus the denoising and proposal losses.

Inference is NMS-free: the last layer's queries are the detections.
Boxes: inputs and outputs in xyxy pixels of the padded input; inside, normalised ``cxcywh``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.models.detr.criterion import SetLossWeights, mean_over_ranks, set_loss
from scaledet.models.detr.decoder import MLP, Decoder, inverse_sigmoid
from scaledet.models.detr.denoising import make_denoising_queries
from scaledet.models.detr.matcher import HungarianMatcher
from scaledet.models.heads.dense import flatten_levels
from scaledet.ops import box_convert

QUERY_SELECTIONS = ("dense", "hungarian", "none")


class RTDETRHead(nn.Module):
    """Set-prediction head; see the module docstring.

    Args:
        num_classes: foreground classes (sigmoid scores).
        in_channels: channels of every neck level; ``strides``: their strides, finest first.
        hidden_dim: transformer width; ``num_heads``: its heads.
        num_queries: detections per image (and queries of the decoder).
        num_decoder_layers, num_points, ffn_dim, ffn: decoder shape.
        query_selection: ``"dense"``, ``"hungarian"`` or ``"none"`` (see above).
        proposal_head: the dense head for ``"dense"`` selection (built on the neck levels).
        num_denoising: budget of denoising groups' positives per image (each group adds as
            many negatives; 0: no denoising).
        label_noise, box_noise: denoising noise (DINO's defaults 0.5 and 1.0).
        matcher: the Hungarian matcher; ``loss_weights``: set-loss weights.
        proposal_loss_weight: weight of the proposal stage's loss.
        refine_scores: the decoder corrects the proposals' logits layer by layer instead of
            predicting its own from scratch (:mod:`~scaledet.models.detr.decoder`).
        transformer_lr_scale: learning-rate multiplier of everything but the dense proposal
            head (read by the optimizer from ``lr_scale``): the presets' learning rate suits
            convolutions trained from scratch, attention layers need a smaller one.
        feature_grad_scale: the share of the decoder's gradient that reaches the neck features
            (through the memory projection); 0 stops it there, so that the backbone and neck
            learn from the dense head's one-to-many loss alone, as the dense detector they
            come from, and the decoder learns on top of them. Forward values are unchanged.
    """

    def __init__(self, *, num_classes: int, in_channels: int, strides: Sequence[int],
                 hidden_dim: int = 64, num_heads: int = 4, num_queries: int = 100,
                 num_decoder_layers: int = 3, num_points: int = 4, ffn_dim: int = 256,
                 ffn: str = "relu", query_selection: str = "dense",
                 proposal_head: nn.Module | None = None, num_denoising: int = 60,
                 label_noise: float = 0.5, box_noise: float = 1.0,
                 matcher: HungarianMatcher | None = None,
                 loss_weights: SetLossWeights | None = None,
                 proposal_loss_weight: float = 1.0, transformer_lr_scale: float = 0.05,
                 refine_scores: bool = False, feature_grad_scale: float = 1.0) -> None:
        super().__init__()
        if query_selection not in QUERY_SELECTIONS:
            raise ValueError(f"query_selection must be one of {QUERY_SELECTIONS}, "
                             f"got {query_selection!r}")
        if query_selection == "dense" and proposal_head is None:
            raise ValueError("query_selection='dense' needs a proposal_head")
        self.num_classes, self.strides = num_classes, tuple(int(s) for s in strides)
        self.num_queries, self.query_selection = num_queries, query_selection
        self.num_denoising, self.label_noise, self.box_noise = num_denoising, label_noise, box_noise
        self.matcher = matcher or HungarianMatcher()
        self.loss_weights = loss_weights or SetLossWeights()
        self.proposal_loss_weight = proposal_loss_weight
        if not 0.0 <= feature_grad_scale <= 1.0:
            raise ValueError(f"feature_grad_scale must be in [0, 1], got {feature_grad_scale}")
        self.feature_grad_scale = feature_grad_scale
        d = hidden_dim
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, d, 1, bias=False), nn.BatchNorm2d(d))
            for _ in self.strides)
        self.proposal_head = proposal_head if query_selection == "dense" else None
        if query_selection == "hungarian":
            self.enc_output = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))
            self.enc_class = nn.Linear(d, num_classes)
            self.enc_box = MLP(d, d, 4, 3)
            nn.init.constant_(self.enc_class.bias, -4.595)  # prior 0.01
            nn.init.zeros_(self.enc_box.layers[-1].weight)
            nn.init.zeros_(self.enc_box.layers[-1].bias)
        if query_selection == "none":
            self.query_content = nn.Embedding(num_queries, d)
            self.query_boxes = nn.Embedding(num_queries, 4)
            nn.init.uniform_(self.query_boxes.weight[:, :2], -3.0, 3.0)  # centres spread out
            nn.init.constant_(self.query_boxes.weight[:, 2:], -2.0)  # ~0.12 of the image
        self.denoising_embed = (nn.Embedding(num_classes + 1, d, padding_idx=num_classes)
                                if num_denoising > 0 else None)
        self.decoder = Decoder(d, num_classes, num_layers=num_decoder_layers,
                               num_heads=num_heads, num_levels=len(self.strides),
                               num_points=num_points, ffn_dim=ffn_dim, ffn=ffn,
                               refine_scores=refine_scores and query_selection != "none")
        self.lr_scale = transformer_lr_scale
        if self.proposal_head is not None:
            self.proposal_head.lr_scale = 1.0

    # ---- the Detector interface: forward -> (loss | predict) --------------------------------

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor]]:
        """The neck levels, passed on: both training and inference run the set stage in
        :meth:`loss` / :meth:`predict` (training adds denoising queries built from the
        targets)."""
        return (list(feats),)

    def predict(self, feats: list[Tensor]) -> tuple[Tensor, Tensor, list[int]]:
        """Boxes ``(B, Q, 4)`` xyxy pixels of the padded input and scores ``(B, Q, C)`` of the
        last decoder layer (float32), and ``[Q]``. No data-dependent control flow; an ONNX
        export fixes ``Q`` at the export size, so it needs inputs with at least ``Q``
        locations (100 queries: 96 px and up)."""
        out = self._run(feats)
        logits, boxes = out["layers"][-1]
        return self._to_pixels(boxes, out["size"]), logits.float().sigmoid(), [boxes.shape[1]]

    def loss(self, feats: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        """Set loss on every decoder layer, denoising loss, proposal loss.

        ``targets``: per image ``boxes (N, 4)`` xyxy pixels, ``labels (N,)``. Returns
        ``loss_cls`` (varifocal) and ``loss_box`` (L1 + GIoU) of the matching queries summed
        over the decoder layers, ``loss_dn`` (the same terms of the denoising queries),
        ``loss_enc`` (the proposal stage) and their sum ``loss``.
        """
        size = self._input_size(feats)
        norm_targets = [{"boxes": self._normalise(t["boxes"], size), "labels": t["labels"]}
                        for t in targets]
        dn = make_denoising_queries(norm_targets, self.num_classes, self._num_matching(feats),
                                    self.num_denoising, self.label_noise, self.box_noise)
        out = self._run(feats, dn)
        num_boxes = mean_over_ranks(sum(len(t["labels"]) for t in targets), feats[0].device)
        losses = {"loss_cls": 0.0, "loss_box": 0.0, "loss_dn": 0.0}
        for logits, boxes in out["layers"]:
            if dn is not None:
                d = dn.labels.shape[1]
                terms = set_loss(logits[:, :d], boxes[:, :d], norm_targets, dn.indices,
                                 num_boxes * dn.groups, self.loss_weights)
                losses["loss_dn"] = losses["loss_dn"] + sum(terms.values())
                logits, boxes = logits[:, d:], boxes[:, d:]
            indices = self.matcher(logits, boxes, norm_targets)
            terms = set_loss(logits, boxes, norm_targets, indices, num_boxes, self.loss_weights)
            losses["loss_cls"] = losses["loss_cls"] + terms["vfl"]
            losses["loss_box"] = losses["loss_box"] + terms["l1"] + terms["giou"]
        losses["loss_enc"] = self.proposal_loss_weight * self._proposal_loss(
            out, targets, norm_targets, num_boxes)
        if dn is None and self.denoising_embed is not None:  # every parameter in the graph (DDP)
            losses["loss_dn"] = 0.0 * self.denoising_embed.weight.sum()
        losses = {k: v if isinstance(v, Tensor) else torch.zeros((), device=feats[0].device)
                  for k, v in losses.items()}
        if not all(bool(torch.isfinite(v)) for v in losses.values()):
            nan = sum(losses.values()) * float("nan")  # the trainer's divergence guard
            losses = {k: nan for k in losses}
        losses["loss"] = sum(losses.values())
        return losses

    # ---- internals --------------------------------------------------------------------------

    def _num_matching(self, feats: Sequence[Tensor]) -> int:
        """Matching queries: ``num_queries``, or every location of a small input when query
        selection has fewer to choose from."""
        if self.query_selection == "none":
            return self.num_queries
        return min(self.num_queries, sum(f.shape[-2] * f.shape[-1] for f in feats))

    def _input_size(self, feats: Sequence[Tensor]) -> Tensor:
        """``(W, H, W, H)`` float32 of the padded input, from the finest level. Built from
        the traced shape so that an ONNX export with dynamic axes keeps it dynamic."""
        hw = torch._shape_as_tensor(feats[0])[-2:].to(torch.float32) * self.strides[0]
        return hw.flip(0).repeat(2).to(feats[0].device)

    @staticmethod
    def _normalise(xyxy: Tensor, size: Tensor) -> Tensor:
        return box_convert(xyxy.float(), "xyxy", "cxcywh") / size

    @staticmethod
    def _to_pixels(cxcywh: Tensor, size: Tensor) -> Tensor:
        return box_convert(cxcywh.float(), "cxcywh", "xyxy") * size

    def _run(self, feats: Sequence[Tensor], dn=None) -> dict:
        size = self._input_size(feats)
        shapes = [(f.shape[-2], f.shape[-1]) for f in feats]
        memory = torch.cat([_tokens(proj, _scale_grad(f, self.feature_grad_scale))
                            for proj, f in zip(self.input_proj, feats)], dim=1)  # (B, S, d)
        b = memory.shape[0]
        out: dict = {"size": size}
        k = self._num_matching(feats)
        if self.query_selection == "dense":
            cls_maps, reg_maps = self.proposal_head(feats)
            out["dense"] = (cls_maps, reg_maps)
            boxes_px, scores, _ = self.proposal_head.predict(cls_maps, reg_maps)  # (B, S, 4/C)
            top = scores.max(-1).values.topk(k, dim=1).indices  # (B, k)
            ref = _gather(self._normalise(boxes_px, size), top).detach()
            ref = ref.clamp(1e-4, 1 - 1e-4)
            content = _gather(memory, top).detach()
            ref_logits = _gather(flatten_levels(cls_maps), top).float()
        elif self.query_selection == "hungarian":
            enc = self.enc_output(memory)
            logits = self.enc_class(enc)  # (B, S, C)
            anchors = _grid_anchors(shapes, memory.device)  # (S, 4) logits of cxcywh
            boxes = (self.enc_box(enc) + anchors).sigmoid()
            top = logits.max(-1).values.topk(k, dim=1).indices
            out["enc"] = (_gather(logits, top), _gather(boxes, top))
            ref = out["enc"][1].detach()
            ref_logits = out["enc"][0].float()
            content = _gather(enc, top).detach()
        else:
            content = self.query_content.weight[None].expand(b, -1, -1)
            ref = self.query_boxes.weight.sigmoid()[None].expand(b, -1, -1)
            ref_logits = None
        mask = None
        if dn is not None:
            content = torch.cat([self.denoising_embed(dn.labels).to(content.dtype), content], 1)
            ref = torch.cat([dn.boxes.to(ref.dtype), ref], 1)
            mask = dn.attn_mask
            if ref_logits is not None:  # denoising queries start from the prior
                prior = ref_logits.new_full((b, dn.labels.shape[1], ref_logits.shape[-1]),
                                            self.decoder.prior_logit)
                ref_logits = torch.cat([prior, ref_logits], 1)
        out["layers"] = self.decoder(content, ref, memory, shapes, mask, ref_logits)
        return out

    def _proposal_loss(self, out: dict, targets: list[dict], norm_targets: list[dict],
                       num_boxes: int) -> Tensor | float:
        if self.query_selection == "dense":
            return self.proposal_head.loss(*out["dense"], targets)["loss"]
        if self.query_selection == "hungarian":
            logits, boxes = out["enc"]
            indices = self.matcher(logits, boxes, norm_targets)
            return sum(set_loss(logits, boxes, norm_targets, indices, num_boxes,
                                self.loss_weights).values())
        return 0.0


def _scale_grad(x: Tensor, scale: float) -> Tensor:
    """``x`` in the forward pass, ``scale`` times its gradient in the backward pass."""
    if scale == 1.0 or not x.requires_grad:
        return x
    if scale == 0.0:
        return x.detach()
    return x * scale + x.detach() * (1.0 - scale)


def _tokens(proj: nn.Sequential, x: Tensor) -> Tensor:
    """``proj`` (1x1 conv, BatchNorm) on ``x (B, C, H, W)`` as tokens ``(B, H*W, d)``: the
    maths of ``proj(x).flatten(2).transpose(1, 2)``, computed on the flattened tokens because
    BatchNorm's backward on the transposed layout takes a slow path on CPU."""
    conv, bn = proj
    if type(conv) is not nn.Conv2d:  # wrapped (e.g. by a LoRA adapter): the module's own maths
        return proj(x).flatten(2).transpose(1, 2)
    t = F.linear(x.flatten(2).transpose(1, 2), conv.weight.flatten(1))  # (B, H*W, d)
    return bn(t.reshape(-1, t.shape[-1], 1, 1)).view_as(t)


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """``x (B, S, K)``, ``index (B, k)`` -> ``(B, k, K)``."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _grid_anchors(shapes: Sequence[tuple[int, int]], device: torch.device,
                  base: float = 0.05) -> Tensor:
    """RT-DETR's proposal anchors in logit space: each location's centre and a square of side
    ``base * 2^level`` of the image, ``(S, 4)`` ``cxcywh``."""
    anchors = []
    for level, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                torch.arange(w, device=device, dtype=torch.float32),
                                indexing="ij")
        cx, cy = (xs.flatten() + 0.5) / w, (ys.flatten() + 0.5) / h
        side = torch.full_like(cx, base * 2.0 ** level)
        anchors.append(torch.stack([cx, cy, side, side], dim=1))
    return inverse_sigmoid(torch.cat(anchors), eps=1e-2)


__all__ = ["QUERY_SELECTIONS", "RTDETRHead"]
