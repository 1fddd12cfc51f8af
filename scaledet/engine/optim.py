"""The optimizer of a training run (AdamW or SGD, no weight decay on biases and norms) and
gradient checkpointing of the backbone."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from scaledet.models.layers import checkpoint_call


def param_groups(model: nn.Module, weight_decay: float, lr: float) -> list[dict]:
    """Weights with decay; biases, norm parameters (ndim <= 1) and embeddings without. A module with an
    ``lr_scale`` attribute trains its parameters at ``lr * lr_scale`` (the innermost such
    module wins): attention layers train stably at a fraction of the learning rate a
    from-scratch convolutional network takes."""
    scale_of: dict[int, float] = {}
    for _, module in sorted(model.named_modules(), key=lambda item: item[0].count(".")
                            if item[0] else -1):
        scale = getattr(module, "lr_scale", None)
        if scale is not None:
            for p in module.parameters():
                scale_of[id(p)] = float(scale)
    # Embeddings (learned queries and boxes) are not shrunk towards zero either.
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding)
                  for p in m.parameters()}
    groups: dict[tuple[bool, float], list] = {}
    for p in model.parameters():
        if p.requires_grad:
            decay = p.ndim > 1 and id(p) not in embeddings
            groups.setdefault((decay, scale_of.get(id(p), 1.0)), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0,
             "lr": lr * scale}
            for (decay, scale), params in sorted(groups.items(), key=lambda kv: (-kv[0][0],
                                                                                -kv[0][1]))]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        wd = 5e-4 if cfg.weight_decay is None else cfg.weight_decay
        return torch.optim.SGD(param_groups(model, wd, cfg.lr), lr=cfg.lr,
                               momentum=cfg.momentum, nesterov=True)
    wd = 0.05 if cfg.weight_decay is None else cfg.weight_decay
    groups = param_groups(model, wd, cfg.lr)
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
