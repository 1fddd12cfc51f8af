"""``confusion_matrix.png``: which classes are taken for which, and for background."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaledet.evaluation.confusion import ConfusionMatrix
from scaledet.plots.style import figure, save


def plot_confusion(cm: ConfusionMatrix, path: str | Path,
                   class_names: list[str] | None = None) -> Path:
    """Write a :class:`~scaledet.evaluation.confusion.ConfusionMatrix` as a PNG heat map, each
    row normalised by its total (the fraction of that class's objects, or of the false alarms,
    in each column), counts printed when there are at most 30 classes."""
    c = cm.num_classes
    names = list(class_names or [str(i) for i in range(c)])[:c] + ["background"]
    totals = cm.matrix.sum(axis=1, keepdims=True)
    frac = np.divide(cm.matrix, totals, out=np.zeros(cm.matrix.shape), where=totals > 0)
    side = min(4 + 0.45 * (c + 1), 20)
    fig, ax = figure((side + 1.5, side))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the row")
    if c <= 30:
        ticks = range(c + 1)
        ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(ticks, names, fontsize=8)
        for (i, j), n in np.ndenumerate(cm.matrix):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (score >= {cm.conf:g}, IoU >= {cm.iou:g})")
    return save(fig, path)
