"""Precision-recall plots."""

from __future__ import annotations

import numpy as np
import pytest

from scaledet.evaluation import evaluate_coco
from scaledet.evaluation.coco import COCOEvalResult
from scaledet.plots.pr import mean_pr_curve, plot_pr_curves, pr_iou_figure, shown_categories
from scaledet.plots.style import save
from tests.evaluation.coco_cases import make_case


def test_plot_files_and_mean_curve(tmp_path):
    gt, dets = make_case(6)
    result = evaluate_coco(gt, dets)
    paths = plot_pr_curves(result, tmp_path / "pr", iou_thresholds=[0.5, 0.75])
    assert [p.name for p in paths] == ["pr_all_iou.png", "pr_iou0.50.png", "pr_iou0.75.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    # the curve's mean over recall points is AP at that threshold
    p = result.precision[0, :, :, 0, -1]
    assert mean_pr_curve(result, 0).mean() == pytest.approx(np.mean(p[:, (p > -1).all(0)]))
    with pytest.raises(ValueError, match="0.42 is not one of"):
        plot_pr_curves(result, tmp_path, iou_thresholds=[0.42])


def _result(n_cats: int) -> COCOEvalResult:
    """A result whose category ``k`` has precision falling linearly to ``1 - (k + 1) / n``."""
    rec = np.linspace(0, 1, 101)
    per_cat = np.stack([1 - rec * (k + 1) / n_cats for k in range(n_cats)], axis=1)  # (R, K)
    precision = np.broadcast_to(per_cat[None, :, :, None, None], (10, 101, n_cats, 4, 3))
    return COCOEvalResult(stats=np.zeros(12), precision=precision.copy(),
                          recall=np.zeros((10, n_cats, 4, 3)),
                          category_ids=list(range(1, n_cats + 1)),
                          category_names=[f"class{k}" for k in range(n_cats)])


def _legend_outside_axes(fig, tmp_path) -> list[str]:
    """The legend's labels, after checking that it sits right of the axes, inside the figure."""
    save(fig, tmp_path / "f.png")
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    legend = ax.get_legend()
    box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not box.overlaps(area) and box.x0 > area.x1
    assert box.x1 <= fig.bbox.x1 and box.y0 >= fig.bbox.y0  # not cut off
    return [t.get_text() for t in legend.get_texts()]


def test_every_category_in_a_legend_beside_the_plot(tmp_path):
    labels = _legend_outside_axes(pr_iou_figure(_result(8), 0), tmp_path)
    assert len(labels) == 1 + 8  # the whole set, then every category, best first
    assert labels[0].startswith("all categories")
    assert [s.split()[0] for s in labels[1:]] == [f"class{k}" for k in range(8)]
    assert len(_legend_outside_axes(
        pr_iou_figure(_result(8), 0, max_classes=7, top_k=2), tmp_path)) == 1 + 4
    paths = plot_pr_curves(_result(8), tmp_path / "pr", iou_thresholds=[0.5])
    assert [p.name for p in paths] == ["pr_all_iou.png", "pr_iou0.50.png"]


def test_many_categories_show_the_best_and_worst_with_a_note(tmp_path):
    fig = pr_iou_figure(_result(30), 0)
    labels = _legend_outside_axes(fig, tmp_path)
    assert [s.split()[0] for s in labels[1:]] == [f"class{k}" for k in [0, 1, 2, 3, 4,
                                                                        25, 26, 27, 28, 29]]
    assert fig.axes[0].get_legend().get_title().get_text() == "best and worst 5 of 30 categories"
    ap = np.array([0.5, -1.0, 0.9, 0.1])  # category 1 has no ground truth
    assert shown_categories(ap) == [2, 0, 3]
    assert shown_categories(ap, max_classes=2, top_k=1) == [2, 3]
