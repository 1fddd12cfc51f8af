"""RT-DETR's hybrid encoder: attention within the deepest level only (AIFI, "attention-based
intra-scale feature interaction"), then CNN fusion across levels (our PAFPN).

Self-attention over the deepest map is cheap (``(H/32) * (W/32)`` tokens: 100 at 320 px) and
is where global context pays: its tokens are objects and large parts, while lower levels add
little from attention at many times the cost. The attention is selectable: softmax (SDPA with
2-D RoPE), linear attention (elu + 1 feature map, with a 2-D sine position embedding) or FLASH's
gated attention unit (same embedding); the feed-forward block may be a mixture of experts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from scaledet.nn.activations import feed_forward
from scaledet.nn.attention import MultiheadAttention
from scaledet.nn.gau import GAU
from scaledet.nn.linear_attention import LinearAttention
from scaledet.nn.moe import MoEFeedForward
from scaledet.nn.rope import RotaryEmbedding2D

ENCODER_KINDS = ("none", "softmax", "linear", "gau")


def sine_embedding_2d(height: int, width: int, dim: int, temperature: float = 10000.0,
                      device: torch.device | None = None) -> Tensor:
    """Fixed 2-D sine-cosine position embedding ``(H * W, dim)`` of a row-major map: a quarter
    of the channels each for sin(x), cos(x), sin(y), cos(y) at geometric frequencies."""
    if dim % 4:
        raise ValueError(f"the 2-D sine embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, device=device, dtype=torch.float32)
                                  / quarter)
    y, x = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                          torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    ox, oy = x.reshape(-1, 1) * omega, y.reshape(-1, 1) * omega  # (N, dim/4)
    return torch.cat([ox.sin(), ox.cos(), oy.sin(), oy.cos()], dim=1)


class AIFILayer(nn.Module):
    """One pre-norm transformer layer over the tokens of a map.

    Args:
        dim: channels of the map.
        kind: ``"softmax"``, ``"linear"`` or ``"gau"`` (GAU replaces attention and
            feed-forward, as in FLASH).
        num_heads: heads of softmax / linear attention.
        ffn: :func:`~scaledet.nn.activations.feed_forward` kind of the feed-forward block.
        ffn_dim: its inner width; ``num_experts > 1`` makes it a top-2 mixture of experts.
    """

    def __init__(self, dim: int, kind: str = "softmax", *, num_heads: int = 4, ffn: str = "gelu",
                 ffn_dim: int | None = None, num_experts: int = 0) -> None:
        super().__init__()
        if kind not in ENCODER_KINDS[1:]:
            raise ValueError(f"encoder attention must be one of {ENCODER_KINDS[1:]}, got {kind!r}")
        self.kind, self.dim = kind, dim
        ffn_dim = ffn_dim or 2 * dim
        self.norm1 = nn.LayerNorm(dim)
        self.rope = None
        if kind == "softmax":
            self.attn = MultiheadAttention(dim, num_heads)
            self.rope = RotaryEmbedding2D(dim // num_heads)
        elif kind == "linear":
            self.attn = LinearAttention(dim, num_heads)
        else:
            self.attn = GAU(dim, expansion=2, qk_dim=min(128, dim))
        self.ffn = None
        if kind != "gau":
            self.norm2 = nn.LayerNorm(dim)
            self.ffn = (MoEFeedForward(dim, ffn_dim, num_experts=num_experts, k=2, expert=ffn)
                        if num_experts > 1 else feed_forward(ffn, dim, ffn_dim))

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """``x`` ``(B, H * W, C)`` row-major tokens -> same shape."""
        h = self.norm1(x)
        if self.kind == "softmax":
            cos, sin = self.rope(height, width, device=x.device)
            x = x + self.attn(h, rope_q=(cos, sin), rope_k=(cos, sin))
        else:
            x = x + self.attn(h + sine_embedding_2d(height, width, self.dim, device=x.device))
        if self.ffn is not None:
            x = x + self.ffn(self.norm2(x))
        return x


class AIFI(nn.Module):
    """``num_layers`` :class:`AIFILayer` applied to a ``(B, C, H, W)`` map; ``lr_scale`` is
    the learning-rate multiplier the optimizer gives it (attention trains stably at a fraction
    of the rate of the convolutions around it).

    Linear attention and GAU get the sine embedding added to their input (so it reaches the
    values too, unlike RT-DETR's AIFI, which adds it to queries and keys only): they have no
    separate query/key inputs to add it to."""

    def __init__(self, dim: int, kind: str = "softmax", *, num_layers: int = 1,
                 lr_scale: float = 0.05, **kw) -> None:
        super().__init__()
        self.lr_scale = lr_scale
        self.layers = nn.ModuleList(AIFILayer(dim, kind, **kw) for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        for layer in self.layers:
            tokens = layer(tokens, h, w)
        return tokens.transpose(1, 2).reshape(b, c, h, w)

    def aux_losses(self) -> list[Tensor]:
        """The load-balancing losses of the mixture-of-experts blocks of the last forward,
        taken: the blocks keep a detached zero instead, so no autograd graph outlives the step
        (a module holding one cannot be deep-copied, as EMA does)."""
        out = []
        for m in self.modules():
            if isinstance(m, MoEFeedForward):
                out.append(m.aux_loss)
                m.aux_loss = torch.zeros((), device=m.aux_loss.device)
        return out


class HybridEncoder(nn.Module):
    """AIFI on the deepest backbone level, then the cross-scale fusion neck ``fpn``."""

    def __init__(self, aifi: AIFI, fpn: nn.Module) -> None:
        super().__init__()
        self.aifi, self.fpn = aifi, fpn

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        feats = list(feats)
        return self.fpn([*feats[:-1], self.aifi(feats[-1])])

    def aux_losses(self) -> list[Tensor]:
        """See :meth:`AIFI.aux_losses`."""
        return self.aifi.aux_losses()
