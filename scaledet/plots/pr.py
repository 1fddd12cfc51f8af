"""Precision-recall curve PNGs from a :class:`~scaledet.evaluation.COCOEvalResult`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scaledet.evaluation.coco import COCOEvalResult


def mean_pr_curve(result: COCOEvalResult, t: int) -> np.ndarray:
    """``(R,)`` precision at the 101 recall thresholds, averaged over the categories that have
    ground truth, at IoU threshold index ``t`` (area all, 100 detections); -1 if none."""
    p = result.precision[t, :, :, 0, -1]  # (R, K)
    has_gt = (p > -1).all(axis=0)
    return p[:, has_gt].mean(axis=1) if has_gt.any() else -np.ones(len(p))


def plot_pr_curves(result: COCOEvalResult, out_dir: str | Path,
                   iou_thresholds: Sequence[float] | None = None, top_k: int = 5) -> list[Path]:
    """Write ``pr_all_iou.png`` (the whole set at every IoU threshold) and, per IoU threshold,
    ``pr_iou0.50.png`` ... (the whole set plus the ``top_k`` categories by AP at that
    threshold). ``iou_thresholds`` defaults to all ten. Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ious = list(result.iou_thresholds)
    wanted = ious if iou_thresholds is None else list(iou_thresholds)
    paths = [_plot_all_ious(result, out / "pr_all_iou.png")]
    for thr in wanted:
        matches = [i for i, v in enumerate(ious) if abs(v - thr) < 1e-9]
        if not matches:
            raise ValueError(f"iou_thresholds: {thr} is not one of {[round(v, 2) for v in ious]}")
        paths.append(_plot_one_iou(result, matches[0], top_k, out / f"pr_iou{thr:.2f}.png"))
    return paths


def _new_axes(title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig, ax, path: Path) -> Path:
    if ax.lines:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _plot_all_ious(result: COCOEvalResult, path: Path) -> Path:
    fig, ax = _new_axes("precision-recall, all categories")
    for t, iou in enumerate(result.iou_thresholds):
        p = mean_pr_curve(result, t)
        if (p > -1).all():
            ax.plot(result.recall_thresholds, p, label=f"IoU={iou:.2f} AP={p.mean():.3f}")
    return _save(fig, ax, path)


def _plot_one_iou(result: COCOEvalResult, t: int, top_k: int, path: Path) -> Path:
    iou = result.iou_thresholds[t]
    fig, ax = _new_axes(f"precision-recall at IoU={iou:.2f}")
    rec = result.recall_thresholds
    p = mean_pr_curve(result, t)
    if (p > -1).all():
        ax.plot(rec, p, color="black", linewidth=2.5, label=f"all categories AP={p.mean():.3f}")
    per_cat = result.precision[t, :, :, 0, -1]  # (R, K)
    ap = np.where((per_cat > -1).all(axis=0), per_cat.mean(axis=0), -1.0)
    for k in np.argsort(-ap, kind="stable")[:top_k]:
        if ap[k] > -1:
            ax.plot(rec, per_cat[:, k], linewidth=1,
                    label=f"{result.category_names[k]} AP={ap[k]:.3f}")
    return _save(fig, ax, path)


def plot_pr(result: COCOEvalResult, out_dir: str | Path) -> list[Path]:
    """The precision-recall curves a training run and ``scaledet val --plots`` write (IoU 0.50,
    0.75 and all thresholds); returns the files written."""
    return plot_pr_curves(result, out_dir, iou_thresholds=[0.5, 0.75])
