"""Training plots, written as PNG with matplotlib's Agg canvas (no pyplot, no global backend
switch: safe headless and inside other programs).

* ``losses.png``: every loss column of ``metrics.csv`` against the optimizer step.
* ``map.png``: the validation mAP columns against wall-clock minutes.
* ``pr_*.png``: precision-recall curves of the last validation (by ``scaledet.evaluation.plots``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

_NOT_LOSSES = {"epoch", "step", "elapsed_s", "lr", "images_per_s"}
_MAP_COLUMNS = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")


def read_metrics(csv_path: str | Path) -> dict[str, list[float]]:
    """``metrics.csv`` as columns of floats (nan where a cell is empty)."""
    with Path(csv_path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: [float(r[k]) if r.get(k) not in (None, "") else math.nan for r in rows]
            for k in rows[0]}


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, ax, path: Path) -> Path:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_metrics(csv_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``losses.png`` and (if any evaluation ran) ``map.png``; returns the paths written."""
    cols = read_metrics(csv_path)
    if not cols:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_plot_losses(cols, out_dir / "losses.png")]
    if any(not math.isnan(v) for v in cols.get("mAP", [])):
        written.append(_plot_map(cols, out_dir / "map.png"))
    return written


def _plot_losses(cols: dict[str, list[float]], path: Path) -> Path:
    losses = [k for k in cols if k not in _NOT_LOSSES and k not in _MAP_COLUMNS and k != "AR100"]
    fig, ax = _figure()
    for k in losses:
        ax.plot(cols["step"], cols[k], marker="o", ms=3, label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("mean loss over the epoch")
    return _save(fig, ax, path)


def _plot_map(cols: dict[str, list[float]], path: Path) -> Path:
    minutes = [t / 60.0 for t in cols["elapsed_s"]]
    fig, ax = _figure()
    for k in _MAP_COLUMNS:
        pts = [(m, v) for m, v in zip(minutes, cols.get(k, [])) if not math.isnan(v)]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=k)
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel("COCO AP (validation, EMA model)")
    return _save(fig, ax, path)


def plot_pr(result: Any, out_dir: str | Path) -> list[Path]:
    """Precision-recall curves (IoU 0.50 and 0.75, and all thresholds) of a COCO evaluation
    result, drawn by ``scaledet.evaluation.plots``; returns the files written."""
    from scaledet.evaluation.plots import plot_pr_curves

    return plot_pr_curves(result, out_dir, iou_thresholds=[0.5, 0.75])
