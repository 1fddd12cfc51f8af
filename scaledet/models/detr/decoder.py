"""The DETR decoder with iterative box refinement (Deformable DETR, RT-DETR).

Every layer: self-attention among the queries (with the denoising mask), deformable
cross-attention into the multi-level memory around each query's reference box, a feed-forward
block; then a class head and a box head whose output is a correction of the reference box in
logit space. The refined box is the next layer's reference, detached (Deformable DETR's
refinement: each layer learns its own correction; RT-DETR and DINO instead train layer i's box
on the previous box before detaching, "look forward twice").

Optionally the scores are refined the same way: each layer's class head predicts a correction
of the previous layer's logits, starting from the logits of the proposal that seeded the query.
The decoder then starts out as good as its proposals and only has to learn what set prediction
adds: lowering the scores of duplicates and raising those of well-placed boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from scaledet.models.detr.deformable import MSDeformableAttention
from scaledet.nn.activations import feed_forward
from scaledet.nn.attention import MultiheadAttention


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """``logit(x)`` with ``x`` clamped to ``[eps, 1 - eps]``."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention, deformable cross-attention, feed-forward."""

    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int,
                 ffn_dim: int, ffn: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads, dropout=dropout)
        self.cross_attn = MSDeformableAttention(dim, num_heads, num_levels, num_points)
        self.ffn = feed_forward(ffn, dim, ffn_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, tgt: Tensor, pos: Tensor, ref_boxes: Tensor, memory: Tensor,
                shapes: Sequence[tuple[int, int]], attn_mask: Tensor | None = None) -> Tensor:
        """``tgt, pos``: ``(B, Q, C)`` query content and box embedding; ``ref_boxes``
        ``(B, Q, 4)`` normalised ``cxcywh``; ``memory`` ``(B, S, C)``; ``attn_mask``
        ``(Q, Q)`` bool, True = may not attend."""
        q = tgt + pos
        tgt = self.norm1(tgt + self.self_attn(q, q, tgt, attn_mask=attn_mask))
        tgt = self.norm2(tgt + self.cross_attn(tgt + pos, ref_boxes, memory, shapes))
        return self.norm3(tgt + self.ffn(tgt))


class Decoder(nn.Module):
    """``num_layers`` :class:`DecoderLayer` with a class and a box head after each.

    Args:
        dim: model width; ``num_classes``: foreground classes (sigmoid scores).
        prior_prob: initial score of every class (the class-head bias).
        refine_scores: class heads predict corrections of the incoming logits (see the module
            docstring), zero at initialisation; otherwise absolute logits from the prior.
    """

    def __init__(self, dim: int, num_classes: int, *, num_layers: int = 3, num_heads: int = 4,
                 num_levels: int = 3, num_points: int = 4, ffn_dim: int = 512,
                 ffn: str = "relu", dropout: float = 0.0, prior_prob: float = 0.01,
                 refine_scores: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, num_levels, num_points, ffn_dim, ffn, dropout)
            for _ in range(num_layers))
        self.query_pos = MLP(4, 2 * dim, dim, 2)
        self.class_heads = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(num_layers))
        self.box_heads = nn.ModuleList(MLP(dim, dim, 4, 3) for _ in range(num_layers))
        self.refine_scores = refine_scores
        self.prior_logit = -torch.log(torch.tensor((1 - prior_prob) / prior_prob)).item()
        for head in self.class_heads:
            if refine_scores:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
            else:
                nn.init.constant_(head.bias, self.prior_logit)
        for head in self.box_heads:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)

    def forward(self, tgt: Tensor, ref_boxes: Tensor, memory: Tensor,
                shapes: Sequence[tuple[int, int]], attn_mask: Tensor | None = None,
                ref_logits: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Args:
            tgt: ``(B, Q, C)`` initial query content; ``ref_boxes``: ``(B, Q, 4)`` initial
                boxes, normalised ``cxcywh``; ``memory``, ``shapes``, ``attn_mask``: see
                :class:`DecoderLayer`.
            ref_logits: ``(B, Q, num_classes)`` initial logits for ``refine_scores`` (default:
                the prior's).

        Returns:
            Per layer ``(logits (B, Q, num_classes), boxes (B, Q, 4))``, boxes normalised
            ``cxcywh``.
        """
        outputs = []
        ref = ref_boxes  # learned reference boxes (plain DETR) train through the first layer
        logits = None
        if self.refine_scores:
            logits = (ref_logits.detach() if ref_logits is not None else
                      tgt.new_full((*tgt.shape[:2], self.class_heads[0].out_features),
                                   self.prior_logit))
        for layer, class_head, box_head in zip(self.layers, self.class_heads, self.box_heads):
            tgt = layer(tgt, self.query_pos(ref), ref, memory, shapes, attn_mask)
            boxes = (box_head(tgt) + inverse_sigmoid(ref)).sigmoid()
            if self.refine_scores:
                out_logits = class_head(tgt) + logits
                logits = out_logits.detach()
            else:
                out_logits = class_head(tgt)
            outputs.append((out_logits, boxes))
            ref = boxes.detach()
        return outputs
