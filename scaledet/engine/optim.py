"""The optimizer of a training run (AdamW or SGD, no weight decay on biases and norms) and
gradient checkpointing of the backbone."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from scaledet.models.layers import checkpoint_call


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay; biases and norm parameters (ndim <= 1) without."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        wd = 5e-4 if cfg.weight_decay is None else cfg.weight_decay
        return torch.optim.SGD(param_groups(model, wd), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=True)
    wd = 0.05 if cfg.weight_decay is None else cfg.weight_decay
    groups = param_groups(model, wd)
    try:  # the fused kernel: several times faster than the per-parameter loop on a CPU
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def enable_grad_checkpointing(model: nn.Module) -> int:
    """Recompute the backbone's activations in the backward pass instead of storing them.

    Uses the backbone's own ``set_grad_checkpointing(True)`` if it has one; otherwise wraps each
    direct child of ``model.backbone`` that has parameters in ``torch.utils.checkpoint``. Returns
    the number of checkpointed blocks. The recomputation runs with BatchNorm running-statistics
    updates frozen, so each batch updates them once, as without checkpointing.
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError("--grad-ckpt needs a model with a .backbone")
    if hasattr(backbone, "set_grad_checkpointing"):
        backbone.set_grad_checkpointing(True)
        return 1
    blocks = [m for m in backbone.children() if any(True for _ in m.parameters())]
    for block in blocks:
        block.forward = functools.partial(_checkpointed_call, type(block).forward.__get__(block),
                                          block)
    return len(blocks)


def _checkpointed_call(forward: Callable, module: nn.Module, *args, **kwargs):
    if not (module.training and torch.is_grad_enabled()):
        return forward(*args, **kwargs)
    return checkpoint_call(module, forward, *args, **kwargs)
