"""Precision-recall plots."""

from __future__ import annotations

import numpy as np
import pytest

from scaledet.evaluation import evaluate_coco
from scaledet.plots.pr import mean_pr_curve, plot_pr_curves
from tests.evaluation.coco_cases import make_case


def test_plot_files_and_mean_curve(tmp_path):
    gt, dets = make_case(6)
    result = evaluate_coco(gt, dets)
    paths = plot_pr_curves(result, tmp_path / "pr", iou_thresholds=[0.5, 0.75], top_k=2)
    assert [p.name for p in paths] == ["pr_all_iou.png", "pr_iou0.50.png", "pr_iou0.75.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    # the curve's mean over recall points is AP at that threshold
    p = result.precision[0, :, :, 0, -1]
    assert mean_pr_curve(result, 0).mean() == pytest.approx(np.mean(p[:, (p > -1).all(0)]))
    with pytest.raises(ValueError, match="0.42 is not one of"):
        plot_pr_curves(result, tmp_path, iou_thresholds=[0.42])
