"""The face-verification ROC as a PNG: true accept rate against false accept rate (log scale,
where the low-FAR operating points of access control live), with the TAR@FAR points marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scaledet.faces.verification import TarAtFar
from scaledet.plots.style import figure, save


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
             points: Sequence[TarAtFar] = (), title: str = "verification ROC") -> Path:
    """Write the ROC of each ``name -> (fpr, tpr)`` curve to ``path``; a FAR of 0 is drawn at
    the axis' left end (half the smallest non-zero FAR of all curves, or 1e-5)."""
    fig, ax = figure((6, 4.5))
    positive = [f[f > 0].min() for f, _ in curves.values() if (f > 0).any()]
    floor = 0.5 * min(positive) if positive else 1e-5
    for name, (fpr, tpr) in curves.items():
        ax.step(np.maximum(fpr, floor), tpr, where="post", label=name)
    for p in points:
        ax.plot(max(p.achieved_far, floor), p.tar, "o",
                label=f"TAR {p.tar:.3f} @ FAR {p.far:g}"
                      + ("" if p.resolved else " (too few pairs: FAR 0)"))
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (different-person pairs accepted)")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save(fig, path)
