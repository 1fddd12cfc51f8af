"""Exponential moving average of model weights (Polyak averaging) with a ramped decay.

``ema = d * ema + (1 - d) * weights`` after every optimizer step, where the decay ramps up as
``d(t) = decay * (1 - exp(-t / tau))`` (t = number of updates so far): early on, when the weights
move fast, the average follows them closely; later it averages over ~``1 / (1 - decay)`` steps.
This is the form used by YOLOv5/YOLOX.

With ``window`` set instead (a fraction), the decay is ``d(t) = (1 - 1/t) ** (1 / window)``, the
power-function EMA of Karras et al. (EDM2, 2024): the average always spans the last ~``window * t``
updates, whatever the run's length, where the exponential ramp's span depends on how many steps a
time budget happens to allow.
``decay`` still caps it. Floating-point buffers (BatchNorm running statistics) are
averaged too; integer buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """Keeps ``self.module``, an averaged copy of a model, in eval mode and without gradients."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 200.0,
                 window: float = 0.0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if tau <= 0:
            raise ValueError(f"EMA tau must be > 0, got {tau}")
        if not 0.0 <= window < 1.0:
            raise ValueError(f"EMA window must be a fraction in [0, 1), got {window}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.window = window
        self.updates = 0

    def current_decay(self) -> float:
        """Decay that the *next* update uses."""
        if self.window:
            t = self.updates + 1
            return min(self.decay, (1.0 - 1.0 / t) ** (1.0 / self.window))
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        model_state = model.state_dict()
        averaged, current = [], []
        for name, ema_v in self.module.state_dict().items():
            v = model_state[name].detach()
            if ema_v.dtype.is_floating_point:
                averaged.append(ema_v)
                current.append(v.to(ema_v.dtype))
            else:
                ema_v.copy_(v)
        if averaged:  # ema += (1 - d) * (v - ema), as one multi-tensor op (a loop is slow on a CPU)
            torch._foreach_lerp_(averaged, current, 1.0 - d)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates,
                "decay": self.decay, "tau": self.tau, "window": self.window}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
        self.tau = float(state["tau"])
        self.window = float(state.get("window", 0.0))
