"""Learning-rate schedule: linear warm-up (in iterations) times cosine annealing (over progress).

The cosine part is a function of *progress* in ``[0, 1]``, not of the epoch: with ``--epochs`` the
trainer passes ``step / total_steps``, with ``--time`` it passes ``elapsed / budget``, so the
learning rate anneals to its floor exactly when the wall-clock budget runs out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    """``lr_factor(step, progress) = warmup(step) * cosine(progress)``, a multiplier of the base LR.

    Attributes:
        warmup_iters: iterations of linear warm-up from ``warmup_start`` to 1 (0 disables it).
        warmup_start: factor at step 0.
        min_ratio: the cosine floor, as a fraction of the base LR (reached at progress 1).
    """

    warmup_iters: int = 50
    warmup_start: float = 0.1
    min_ratio: float = 0.05

    def __post_init__(self) -> None:
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters}")
        if not 0.0 <= self.min_ratio <= 1.0 or not 0.0 <= self.warmup_start <= 1.0:
            raise ValueError("min_ratio and warmup_start must be in [0, 1]")

    def warmup(self, step: int) -> float:
        if step >= self.warmup_iters:
            return 1.0
        return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_iters

    def cosine(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))

    def lr_factor(self, step: int, progress: float) -> float:
        """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
        return self.warmup(step) * self.cosine(progress)
