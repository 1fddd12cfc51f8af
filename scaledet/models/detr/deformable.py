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
        d = c // h
        # The value in channel-first layout (B, C, S): every level is then a view
        # (B*h, d, H, W), the layout grid_sample reads, without a copy per level.
        value = self.value_proj(memory).transpose(1, 2).contiguous()  # (B, C, S)
        offsets = self.sampling_offsets(query).view(b, q, h, n_l, n_p, 2)
        logits = self.attention_weights(query)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> float32
        weights = _softmax(logits.view(b, q, h, n_l * n_p))
        weights = weights.view(b, q, h, n_l, n_p).permute(0, 2, 3, 4, 1)  # (B, h, L, P, Q)
        # Offsets are in units of half the box size per point ring.
        centre, size = ref_boxes[:, :, None, None, None, :2], ref_boxes[:, :, None, None, None, 2:]
        locations = centre + offsets / n_p * size * 0.5  # (B, Q, h, L, P, 2) in [0, 1]
        grids = (2 * locations - 1).permute(0, 2, 3, 4, 1, 5)  # (B, h, L, P, Q, 2) in [-1, 1]
        # float32 sampling: bf16 locations would be off by up to ~1/256 of the map
        work = torch.promote_types(value.dtype, torch.float32)
        out, start = 0, 0
        for level, (hl, wl) in enumerate(shapes):
            v = value[:, :, start:start + hl * wl].reshape(b * h, d, hl, wl)  # (B*h, d, H, W)
            start += hl * wl
            g = grids[:, :, level].reshape(b * h, n_p, q, 2)
            sampled = F.grid_sample(v.to(work), g.to(work), mode="bilinear",
                                    padding_mode="zeros", align_corners=False)  # (B*h, d, P, Q)
            # the points axis before the queries: the weighted sum runs over contiguous rows
            w = weights[:, :, level].reshape(b * h, 1, n_p, q)
            out = out + (sampled * w).sum(2)  # (B*h, d, Q)
        out = out.view(b, c, q).transpose(1, 2).to(query.dtype)  # (B, Q, C)
        return self.output_proj(out)


def _softmax(x: Tensor) -> Tensor:
    """Softmax over the last axis, written out: ``Tensor.softmax`` over a short last axis (the
    12-48 samples of a head) takes a slow path on CPU, about 3x the time of these four ops."""
    e = (x - x.detach().amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)
