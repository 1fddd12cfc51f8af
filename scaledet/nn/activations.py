"""Activations and position-wise feed-forward blocks of transformers.

- squared ReLU, ``relu(x)^2`` (So et al. 2021, "Primer"), also the attention kernel of GAU;
- ``FeedForward``: ``W_2 act(W_1 x)`` with GELU, ReLU, SiLU or squared ReLU;
- ``GLUFeedForward``: gated linear units (Shazeer 2020, "GLU Variants Improve Transformer"),
  ``W_o (act(x W_g) * (x W_v))`` with SiLU (SwiGLU) or GELU (GEGLU);
- ``feed_forward(kind, ...)``: one factory over all of them, used to pick a block by name.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

FFN_ACTS = ("gelu", "relu", "silu", "relu2")
GLU_KINDS = ("swiglu", "geglu")
FFN_KINDS = FFN_ACTS + GLU_KINDS


def squared_relu(x: Tensor) -> Tensor:
    """``relu(x)^2``: zero for x <= 0, smooth first derivative at 0."""
    return F.relu(x).square()


class SquaredReLU(nn.Module):
    """Module form of :func:`squared_relu`."""

    def forward(self, x: Tensor) -> Tensor:
        return squared_relu(x)


def _activation(act: str) -> nn.Module:
    if act == "gelu":
        return nn.GELU()
    if act == "relu":
        return nn.ReLU()
    if act == "silu":
        return nn.SiLU()
    if act == "relu2":
        return SquaredReLU()
    raise ValueError(f"act must be one of {FFN_ACTS}, got {act!r}")


class FeedForward(nn.Module):
    """``(..., dim) -> (..., dim)``: ``fc2(dropout(act(fc1(x))))`` then dropout.

    Args:
        dim: input and output width.
        hidden: inner width.
        act: ``"gelu"``, ``"relu"``, ``"silu"`` or ``"relu2"`` (squared ReLU).
        dropout: after the activation and after ``fc2``, active only in training.
    """

    def __init__(self, dim: int, hidden: int, *, act: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        self.act = _activation(act)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class GLUFeedForward(nn.Module):
    """``(..., dim) -> (..., dim)``: ``w_out(act(w_gate(x)) * w_value(x))``, no biases.

    Args:
        dim: input and output width.
        hidden: width of the gate and value branches (often ``2/3`` of a plain FFN's hidden
            width, which keeps the parameter count of the plain FFN).
        kind: ``"swiglu"`` (SiLU gate) or ``"geglu"`` (GELU gate).
        dropout: on the gated product and on the output, active only in training.
    """

    def __init__(self, dim: int, hidden: int, *, kind: str = "swiglu",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in GLU_KINDS:
            raise ValueError(f"kind must be one of {GLU_KINDS}, got {kind!r}")
        self.kind = kind
        self.act = nn.SiLU() if kind == "swiglu" else nn.GELU()
        self.w_gate = nn.Linear(dim, hidden, bias=False)
        self.w_value = nn.Linear(dim, hidden, bias=False)
        self.w_out = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.act(self.w_gate(x)) * self.w_value(x)  # (..., hidden)
        return self.dropout(self.w_out(self.dropout(hidden)))


def feed_forward(kind: str, dim: int, hidden: int, **kw) -> nn.Module:
    """A feed-forward block by name: ``"gelu"``, ``"relu"``, ``"silu"``, ``"relu2"`` give a
    :class:`FeedForward`, ``"swiglu"``, ``"geglu"`` a :class:`GLUFeedForward`; ``kw`` go to
    the constructor (e.g. ``dropout``)."""
    if kind in GLU_KINDS:
        return GLUFeedForward(dim, hidden, kind=kind, **kw)
    if kind in FFN_ACTS:
        return FeedForward(dim, hidden, act=kind, **kw)
    raise ValueError(f"unknown feed-forward kind {kind!r}; valid kinds: {', '.join(FFN_KINDS)}")
