"""Multi-scale deformable attention (Zhu et al., Deformable DETR, ICLR 2021) in plain PyTorch.

Each query looks at ``num_points`` sampled locations per head and per level around its
reference box instead of at every key: the locations are the box centre plus learned offsets
scaled by the box size, the values there are read with bilinear ``grid_sample``, and a softmax
over the ``num_levels * num_points`` samples weighs them. The cost grows with the number of
queries, not with the size of the feature maps. Written with ``torch.nn.functional.grid_sample``
so it needs no compiled extension and exports to ONNX (opset 16+).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MSDeformableAttention(nn.Module):
    """Deformable cross-attention from queries to a multi-level feature memory.

    Args:
        dim: model width ``C``; ``num_heads`` divides it.
        num_levels: feature levels in the memory; ``num_points``: samples per head and level.
    """

    def __init__(self, dim: int, num_heads: int = 4, num_levels: int = 3,
                 num_points: int = 4) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring of directions, one per head, at increasing radii per point
        (Deformable DETR's initialisation), with uniform attention over the samples."""
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values  # (heads, 2) on the unit square
        grid = grid[:, None, None, :].repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: Tensor, ref_boxes: Tensor, memory: Tensor,
                shapes: Sequence[tuple[int, int]]) -> Tensor:
        """Args:
            query: ``(B, Q, C)``.
            ref_boxes: ``(B, Q, 4)`` normalised ``cxcywh`` reference boxes.
            memory: ``(B, S, C)``, the levels' maps flattened row-major and concatenated,
                ``S = sum(H_l * W_l)``.
            shapes: ``(H_l, W_l)`` of each level, in the order of ``memory``.

        Returns:
            ``(B, Q, C)``.
        """
        b, q, c = query.shape
        h, n_l, n_p = self.num_heads, self.num_levels, self.num_points
        if len(shapes) != n_l:
            raise ValueError(f"expected {n_l} levels, got {len(shapes)}")
        value = self.value_proj(memory).view(b, -1, h, c // h)  # (B, S, h, d)
        offsets = self.sampling_offsets(query).view(b, q, h, n_l, n_p, 2)
        weights = self.attention_weights(query).view(b, q, h, n_l * n_p).softmax(-1)
        weights = weights.view(b, q, h, n_l, n_p)
        # Offsets are in units of half the box size per point ring.
        centre, size = ref_boxes[:, :, None, None, None, :2], ref_boxes[:, :, None, None, None, 2:]
        locations = centre + offsets / n_p * size * 0.5  # (B, Q, h, L, P, 2) in [0, 1]
        grids = 2 * locations - 1  # grid_sample's [-1, 1]
        sampled, start = [], 0
        for level, (hl, wl) in enumerate(shapes):
            v = value[:, start:start + hl * wl]  # (B, H*W, h, d)
            start += hl * wl
            v = v.permute(0, 2, 3, 1).reshape(b * h, c // h, hl, wl)  # (B*h, d, H, W)
            g = grids[:, :, :, level].permute(0, 2, 1, 3, 4).reshape(b * h, q, n_p, 2)
            # float32 sampling: bf16 locations would be off by up to ~1/256 of the map
            work = torch.promote_types(v.dtype, torch.float32)
            sampled.append(F.grid_sample(v.to(work), g.to(work), mode="bilinear",
                                         padding_mode="zeros", align_corners=False))  # (B*h, d, Q, P)
        stacked = torch.stack(sampled, dim=3)  # (B*h, d, Q, L, P)
        w = weights.permute(0, 2, 1, 3, 4).reshape(b * h, 1, q, n_l, n_p).to(stacked.dtype)
        out = (stacked * w).sum((3, 4))  # (B*h, d, Q)
        out = out.view(b, h, c // h, q).permute(0, 3, 1, 2).reshape(b, q, c).to(query.dtype)
        return self.output_proj(out)
