"""Distribution focal loss (Li et al., Generalized Focal Loss, NeurIPS 2020).

A box side is predicted as a discrete distribution over ``n + 1`` bins ``0, 1, ..., n`` (in
strides) and decoded as its expectation. DFL pushes the probability mass onto the two bins
that bracket the continuous target ``t``: with ``l = floor(t)`` and ``r = l + 1``,

    DFL(S, t) = -((r - t) log S_l + (t - l) log S_r)

whose minimum over distributions is at ``S_l = r - t``, ``S_r = t - l`` (expectation ``t``).
Written here because torchvision has no such loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def distribution_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """DFL of bin logits against continuous targets, per element (no reduction).

    Args:
        logits: ``(..., n + 1)`` unnormalised log-probabilities over bins ``0..n``.
        target: ``(...)`` targets in bin units; clamped to ``[0, n - 0.01]`` (so that the right
            bin ``floor(t) + 1`` exists; a target beyond the last bin learns ``n - 0.01``).

    Returns:
        ``(...)`` float32 losses (``>= 0``; the minimum is the entropy of the two-bin split,
        0 when ``t`` is an integer).
    """
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits (..., n + 1) and target (...) must agree, got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")
    n = logits.shape[-1] - 1
    if n < 1:
        raise ValueError(f"need at least 2 bins, got {logits.shape[-1]}")
    t = target.float().clamp(0, n - 0.01)
    left = t.floor().long()
    w_left = (left + 1).float() - t
    log_p = F.log_softmax(logits.float(), dim=-1)
    lp_left = log_p.gather(-1, left.unsqueeze(-1)).squeeze(-1)
    lp_right = log_p.gather(-1, (left + 1).unsqueeze(-1)).squeeze(-1)
    return -(w_left * lp_left + (1 - w_left) * lp_right)


def distribution_expectation(logits: Tensor) -> Tensor:
    """``(..., n + 1)`` bin logits -> ``(...)`` expected bin value ``sum_i i * softmax_i``
    (float32; a softmax and a matmul, both ONNX-exportable)."""
    n = logits.shape[-1] - 1
    project = torch.arange(n + 1, dtype=torch.float32, device=logits.device)
    return logits.float().softmax(-1) @ project
