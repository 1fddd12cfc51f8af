"""Sparse mixture-of-experts feed-forward (Shazeer et al. 2017; GShard, Lepikhin et al. 2020;
Switch Transformer, Fedus et al. 2021).

A router scores each token against ``num_experts`` feed-forward experts; the token is sent to
its top-``k`` experts only, and their outputs are summed with the ``k`` router probabilities
renormalised to sum 1. Every token reaches exactly its top-k experts (no capacity limit, no
dropped tokens), and each expert runs only on the tokens routed to it.

The load-balancing loss of Switch Transformer, generalised to top-k, is stored in
``aux_loss`` after each forward:

    aux = E * sum_e f_e * P_e

with ``f_e`` the fraction of the ``k * T`` (token, slot) assignments that went to expert ``e``
and ``P_e`` the mean router probability of ``e`` over the ``T`` tokens. It is 1 when routing
and probabilities are uniform, and larger when both concentrate on the same experts; only
``P_e`` carries gradient. Add it, scaled by a small coefficient, to the training loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.nn.activations import feed_forward


class MoEFeedForward(nn.Module):
    """Top-k routed mixture of feed-forward experts, ``(..., dim) -> (..., dim)``.

    Args:
        dim: input and output width.
        hidden: inner width of every expert.
        num_experts: E.
        k: experts per token, ``1 <= k <= num_experts``.
        expert: the experts' :func:`feed_forward` kind (``"gelu"``, ``"swiglu"``, ...).

    Routing runs in at least float32. After a forward, ``aux_loss`` holds the
    load-balancing loss (scalar) and
    ``last_routing`` the ``(T, k)`` expert indices of the ``T`` flattened tokens.
    """

    def __init__(self, dim: int, hidden: int, *, num_experts: int = 4, k: int = 2,
                 expert: str = "gelu") -> None:
        super().__init__()
        if num_experts < 1 or not 1 <= k <= num_experts:
            raise ValueError(f"need 1 <= k <= num_experts, got k={k}, num_experts={num_experts}")
        self.dim = dim
        self.num_experts = num_experts
        self.k = k
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.experts = nn.ModuleList(feed_forward(expert, dim, hidden) for _ in range(num_experts))
        self.aux_loss: Tensor = torch.zeros(())
        self.last_routing: Tensor = torch.zeros(0, k, dtype=torch.long)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        tokens = x.reshape(-1, self.dim)  # (T, C)
        t = tokens.shape[0]
        work = torch.promote_types(tokens.dtype, torch.float32)
        with torch.autocast(tokens.device.type, enabled=False):  # routing in >= float32
            logits = F.linear(tokens.to(work), self.router.weight.to(work))  # (T, E)
        probs = logits.softmax(dim=-1)
        top_p, top_i = probs.topk(self.k, dim=-1)  # (T, k)
        gates = (top_p / top_p.sum(-1, keepdim=True)).to(x.dtype)  # (T, k), rows sum to 1
        self.last_routing = top_i.detach()

        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token_idx, slot = (top_i == e).nonzero(as_tuple=True)  # each token at most once
            # An expert with no tokens still runs (on zero rows): every parameter stays in the
            # graph, as DistributedDataParallel requires.
            y = expert(tokens.index_select(0, token_idx))  # (T_e, C)
            out = out.index_add(0, token_idx, y * gates[token_idx, slot, None])

        if t == 0:
            self.aux_loss = probs.sum() * 0.0
        else:
            counts = torch.bincount(top_i.reshape(-1), minlength=self.num_experts)  # (E,)
            f = counts.to(probs.dtype) / (self.k * t)
            p = probs.mean(dim=0)  # (E,)
            self.aux_loss = self.num_experts * (f * p).sum()
        return out.reshape(shape)
