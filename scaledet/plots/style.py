"""The figure and save helpers every chart of :mod:`scaledet.plots` shares."""

from __future__ import annotations

from pathlib import Path


def figure(figsize: tuple[float, float] = (7, 4), rows: int = 1, cols: int = 1):
    """A matplotlib ``Figure`` on its own Agg canvas and its axes (one, or a flat list)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    if rows * cols == 1:
        return fig, fig.add_subplot()
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]


def save(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lay out ``fig`` and write it to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
