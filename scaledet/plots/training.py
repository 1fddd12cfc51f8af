"""``losses.png`` and ``map.png`` of a training run, from its ``metrics.csv``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from scaledet.evaluation.coco import METRIC_NAMES
from scaledet.plots.style import figure, save


def read_metrics(csv_path: str | Path) -> dict[str, list[float]]:
    """``metrics.csv`` as columns of floats (nan where a cell is empty)."""
    with Path(csv_path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: [float(r[k]) if r.get(k) not in (None, "") else math.nan for r in rows]
            for k in rows[0]}


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


def loss_columns(cols: dict[str, list[float]]) -> list[str]:
    """The loss columns of ``metrics.csv``, the total ``loss`` first, then its terms
    ``loss_*`` in file order; throughput (``images_per_s``, ``val_images_per_s``), ``lr`` and
    the COCO metrics are no losses."""
    return [k for k in cols if k == "loss"] + [k for k in cols if k.startswith("loss_")]


def losses_figure(cols: dict[str, list[float]]):
    """The figure of ``losses.png``: one panel per :func:`loss_columns` entry (the terms'
    ranges differ by orders of magnitude, so they get no shared axis), titled by its column,
    against the optimizer step; a log y axis where a term (all positive) spans more than two
    decades."""
    losses = loss_columns(cols)
    fig, axes = figure((3.2 * max(len(losses), 1), 3.2), 1, max(len(losses), 1))
    axes = axes if isinstance(axes, list) else [axes]
    for ax, k in zip(axes, losses):
        ax.plot(cols["step"], cols[k], marker="o", ms=3)
        ax.set_title(k, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        finite = [v for v in cols[k] if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) > 100 * min(finite):
            ax.set_yscale("log")
    axes[0].set_ylabel("mean over the epoch")
    return fig


def _plot_losses(cols: dict[str, list[float]], path: Path) -> Path:
    return save(losses_figure(cols), path)


def _plot_map(cols: dict[str, list[float]], path: Path) -> Path:
    return save(map_figure(cols), path)


def map_figure(cols: dict[str, list[float]]):
    """The figure of ``map.png``: the six COCO AP metrics against wall-clock minutes, from the
    validated epochs only; COCO's -1 (no ground truth of that size) is left out, not drawn as
    a value. The legend sits right of the axes, where it covers no curve."""
    minutes = [t / 60.0 for t in cols["elapsed_s"]]
    fig, ax = figure((8.5, 4))
    for k in METRIC_NAMES[:6]:
        pts = [(m, v) for m, v in zip(minutes, cols.get(k, [])) if v >= 0]  # False for nan
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=k)
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel("COCO AP (validation, EMA model)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    return fig
