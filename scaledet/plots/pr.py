"""Precision-recall curve PNGs from a :class:`~scaledet.evaluation.COCOEvalResult`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scaledet.evaluation.coco import COCOEvalResult
from scaledet.plots.style import figure, save


def mean_pr_curve(result: COCOEvalResult, t: int) -> np.ndarray:
    """``(R,)`` precision at the 101 recall thresholds, averaged over the categories that have
    ground truth, at IoU threshold index ``t`` (area all, 100 detections); -1 if none."""
    p = result.precision[t, :, :, 0, -1]  # (R, K)
    has_gt = (p > -1).all(axis=0)
    return p[:, has_gt].mean(axis=1) if has_gt.any() else -np.ones(len(p))


def plot_pr_curves(result: COCOEvalResult, out_dir: str | Path,
                   iou_thresholds: Sequence[float] | None = None, max_classes: int = 20,
                   top_k: int = 5) -> list[Path]:
    """Write ``pr_all_iou.png`` (the whole set at every IoU threshold) and, per IoU threshold,
    ``pr_iou0.50.png`` ... (the whole set plus every category with ground truth, by AP at that
    threshold; above ``max_classes`` categories only the best and the worst ``top_k``, which
    the legend says). Legends sit right of the axes, where they cover no curve.
    ``iou_thresholds`` defaults to all ten. Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ious = list(result.iou_thresholds)
    wanted = ious if iou_thresholds is None else list(iou_thresholds)
    paths = [_plot_all_ious(result, out / "pr_all_iou.png")]
    for thr in wanted:
        matches = [i for i, v in enumerate(ious) if abs(v - thr) < 1e-9]
        if not matches:
            raise ValueError(f"iou_thresholds: {thr} is not one of {[round(v, 2) for v in ious]}")
        fig = pr_iou_figure(result, matches[0], max_classes, top_k)
        paths.append(save(fig, out / f"pr_iou{thr:.2f}.png"))
    return paths


def _new_axes(title: str):
    """A figure wide enough for a 5 x 5 inch plot and a legend to its right."""
    fig, ax = figure((8.5, 5))
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    return fig, ax


def _legend(ax, title: str | None = None) -> None:
    """The legend right of the axes (``save``'s tight layout makes room for it)."""
    if ax.lines:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8,
                  title=title, title_fontsize=8)


def _plot_all_ious(result: COCOEvalResult, path: Path) -> Path:
    fig, ax = _new_axes("precision-recall, all categories")
    for t, iou in enumerate(result.iou_thresholds):
        p = mean_pr_curve(result, t)
        if (p > -1).all():
            ax.plot(result.recall_thresholds, p, label=f"IoU={iou:.2f} AP={p.mean():.3f}")
    _legend(ax)
    return save(fig, path)


def shown_categories(ap: np.ndarray, max_classes: int = 20, top_k: int = 5) -> list[int]:
    """The category indices a per-IoU plot draws, best AP first: all with ground truth
    (``ap > -1``), or the best and the worst ``top_k`` of them when there are more than
    ``max_classes``."""
    order = [int(k) for k in np.argsort(-ap, kind="stable") if ap[k] > -1]
    if len(order) > max_classes:
        order = order[:top_k] + order[-top_k:]
    return order


def pr_iou_figure(result: COCOEvalResult, t: int, max_classes: int = 20, top_k: int = 5):
    """The figure of ``pr_iou*.png`` at IoU threshold index ``t`` (see :func:`plot_pr_curves`),
    not yet laid out or saved."""
    iou = result.iou_thresholds[t]
    fig, ax = _new_axes(f"precision-recall at IoU={iou:.2f}")
    rec = result.recall_thresholds
    p = mean_pr_curve(result, t)
    if (p > -1).all():
        ax.plot(rec, p, color="black", linewidth=2.5, label=f"all categories AP={p.mean():.3f}")
    per_cat = result.precision[t, :, :, 0, -1]  # (R, K)
    ap = np.where((per_cat > -1).all(axis=0), per_cat.mean(axis=0), -1.0)
    shown = shown_categories(ap, max_classes, top_k)
    colours = _category_colours(len(shown))
    for k, colour in zip(shown, colours):
        ax.plot(rec, per_cat[:, k], linewidth=1, color=colour,
                label=f"{result.category_names[k]} AP={ap[k]:.3f}")
    with_gt = int((ap > -1).sum())
    _legend(ax, None if len(shown) == with_gt
            else f"best and worst {top_k} of {with_gt} categories")
    return fig


def _category_colours(n: int) -> list:
    """Distinct colours for ``n`` category curves: matplotlib's 10-colour cycle, or tab20 for
    more (the cycle repeats after ten, which would give two curves one colour)."""
    from matplotlib import colormaps

    name = "tab10" if n <= 10 else "tab20"
    return [colormaps[name](i % 20) for i in range(n)]


def plot_pr(result: COCOEvalResult, out_dir: str | Path) -> list[Path]:
    """The precision-recall curves a training run and ``scaledet val --plots`` write (IoU 0.50,
    0.75 and all thresholds); returns the files written."""
    return plot_pr_curves(result, out_dir, iou_thresholds=[0.5, 0.75])
