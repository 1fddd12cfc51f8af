"""One iterative stage of DiffusionDet's detection decoder: Sparse R-CNN's dynamic instance
interaction (Sun et al. 2021) with the diffusion time as a scale and shift of the features.

Per box ``i`` of a set of ``N``:

1. RoI features ``f_i`` ``(S*S, d)`` are cropped at the stage's input box;
2. the proposal features ``q`` ``(N, d)`` (the previous stage's object features; the mean of
   the RoI features at the first stage) exchange information by self-attention;
3. *dynamic interaction*: ``q_i`` generates the weights of two linear layers that filter
   ``f_i`` (``d -> r -> d``), the filtered map is flattened and projected back to ``d``;
4. an FFN; then the time embedding gives ``(scale, shift)``: ``h = h (1 + scale) + shift``;
5. a class head (logits) and a box head (R-CNN deltas that refine the input box).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scaledet.models.diffusiondet.boxes import apply_deltas
from scaledet.nn.attention import MultiheadAttention


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Transformer sinusoids of the (float) timesteps ``t`` ``(B,)`` -> ``(B, dim)``: half
    sines, half cosines, frequencies from 1 down to ``1 / 10000``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device,
                                                         dtype=torch.float32) / (half - 1))
    angles = t.float()[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """``t`` ``(B,)`` -> ``(B, 4 d)``: sinusoids of width ``d`` through an MLP (GELU), shared
    by all stages, each of which maps it to its own scale and shift."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, 4 * dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim))


class DynamicInteraction(nn.Module):
    """Sparse R-CNN's dynamic conv: each proposal's features generate the weights of its own
    ``d -> r -> d`` linear filter over its RoI features.

    Args:
        dim: ``d``; ``dynamic_dim``: ``r``; ``num_cells``: ``S*S`` RoI cells.
    """

    def __init__(self, dim: int, dynamic_dim: int, num_cells: int) -> None:
        super().__init__()
        self.dim, self.dynamic_dim = dim, dynamic_dim
        self.params = nn.Linear(dim, 2 * dim * dynamic_dim)
        self.norm1, self.norm2 = nn.LayerNorm(dynamic_dim), nn.LayerNorm(dim)
        self.out = nn.Linear(num_cells * dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.act = nn.ReLU(inplace=True)

    def forward(self, proposals: Tensor, roi: Tensor) -> Tensor:
        """``proposals`` ``(K, d)``, ``roi`` ``(K, S*S, d)`` -> ``(K, d)``."""
        d, r = self.dim, self.dynamic_dim
        params = self.params(proposals)  # (K, 2 d r)
        w1 = params[:, : d * r].view(-1, d, r)  # (K, d, r)
        w2 = params[:, d * r:].view(-1, r, d)  # (K, r, d)
        h = self.act(self.norm1(torch.bmm(roi, w1)))  # (K, S*S, r)
        h = self.act(self.norm2(torch.bmm(h, w2)))  # (K, S*S, d)
        return self.act(self.norm3(self.out(h.flatten(1))))  # (K, d)


class DenoisingStage(nn.Module):
    """One stage (see the module docstring).

    Args:
        num_classes: foreground classes (sigmoid logits).
        dim: feature width ``d``; ``num_heads``: heads of the self-attention.
        ffn_dim: hidden width of the FFN; ``dynamic_dim``: ``r`` of the dynamic interaction.
        pooler_size: ``S`` of the ``S x S`` RoI crops.
        prior_prob: initial foreground probability of the class logits.
    """

    def __init__(self, num_classes: int, dim: int, num_heads: int, ffn_dim: int,
                 dynamic_dim: int, pooler_size: int, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.interact = DynamicInteraction(dim, dynamic_dim, pooler_size * pooler_size)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True),
                                 nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.time_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(4 * dim, 2 * dim))
        self.cls_tower = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim),
                                       nn.ReLU(inplace=True))
        self.reg_tower = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim),
                                       nn.ReLU(inplace=True))
        self.class_logits = nn.Linear(dim, num_classes)
        self.box_deltas = nn.Linear(dim, 4)
        nn.init.constant_(self.class_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.zeros_(self.box_deltas.weight)  # a fresh stage returns its input boxes
        nn.init.zeros_(self.box_deltas.bias)

    def forward(self, roi: Tensor, boxes: Tensor, proposals: Tensor | None, time: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        """One refinement.

        Args:
            roi: ``(B*N, S*S, d)`` RoI features of ``boxes``, cell-major.
            boxes: ``(B, N, 4)`` xyxy pixels, the stage's input boxes.
            proposals: ``(B, N, d)`` features of the previous stage, None at the first.
            time: ``(B, 4 d)`` time embedding.

        Returns:
            Class logits ``(B, N, C)``, refined boxes ``(B, N, 4)`` xyxy pixels and the
            object features ``(B, N, d)`` for the next stage.
        """
        b, n = boxes.shape[:2]
        if proposals is None:
            proposals = roi.mean(1).view(b, n, -1)  # (B, N, d)
        q = self.norm1(proposals + self.self_attn(proposals, proposals, proposals))  # (B, N, d)
        q = q.reshape(b * n, -1)
        obj = self.norm2(q + self.interact(q, roi))  # (B*N, d)
        obj = self.norm3(obj + self.ffn(obj))
        scale, shift = self.time_scale_shift(time).repeat_interleave(n, dim=0).chunk(2, dim=-1)
        h = obj * (scale + 1) + shift  # (B*N, d)
        logits = self.class_logits(self.cls_tower(h)).view(b, n, -1)  # (B, N, C)
        deltas = self.box_deltas(self.reg_tower(h)).view(b, n, 4)
        return logits, apply_deltas(deltas, boxes), obj.view(b, n, -1)
