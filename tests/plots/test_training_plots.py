"""``losses.png`` and ``map.png`` from a ``metrics.csv`` written the way the trainer writes it."""

from __future__ import annotations

import numpy as np

from scaledet.engine.metrics_log import MetricsLog
from scaledet.evaluation.coco import METRIC_NAMES
from scaledet.plots.training import (
    loss_columns,
    losses_figure,
    map_figure,
    plot_metrics,
    read_metrics,
)

LOSS_KEYS = ["loss_cls", "loss_box", "loss_dfl", "loss"]


def _write_metrics(path, epochs: int = 4, box: tuple[float, ...] = (0.9, 0.7, 0.6, 0.5)):
    log = MetricsLog(path)
    for e in range(epochs):
        row = {"epoch": e + 1, "step": 10 * (e + 1), "elapsed_s": 30.0 * (e + 1), "lr": 0.01,
               "loss_cls": 1.2 - 0.2 * e, "loss_box": box[e], "loss_dfl": 0.8 - 0.05 * e,
               "images_per_s": 150.0 + e, "val_images_per_s": 150.0 + 2 * e}
        row["loss"] = row["loss_cls"] + row["loss_box"] + row["loss_dfl"]
        if e % 2 == 1:  # validated every other epoch: the other rows leave the metrics empty
            row.update({k: 0.1 * e for k in METRIC_NAMES}, mAP_large=-1.0)  # no large objects
        log.append(row, LOSS_KEYS)


def test_losses_png_plots_only_loss_terms_one_panel_each(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    _write_metrics(csv_path)
    cols = read_metrics(csv_path)
    assert {"images_per_s", "val_images_per_s", "mAP", "lr"} <= set(cols)
    assert loss_columns(cols) == ["loss", "loss_cls", "loss_box", "loss_dfl"]  # total first

    fig = losses_figure(cols)
    assert [ax.get_title() for ax in fig.axes] == loss_columns(cols)
    for ax in fig.axes:
        (line,) = ax.lines  # one curve per panel
        assert np.all(np.asarray(line.get_ydata()) < 5)  # no throughput (150 img/s) anywhere
        assert ax.get_yscale() == "linear"
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [1.2, 1.0, 0.8, 0.6])

    paths = plot_metrics(csv_path, tmp_path / "plots")
    assert [p.name for p in paths] == ["losses.png", "map.png"]


def test_a_term_spanning_more_than_two_decades_gets_a_log_axis(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    _write_metrics(csv_path, box=(5.0, 0.5, 0.05, 0.004))
    fig = losses_figure(read_metrics(csv_path))
    scales = {ax.get_title(): ax.get_yscale() for ax in fig.axes}
    assert scales == {"loss": "linear", "loss_cls": "linear", "loss_box": "log",
                      "loss_dfl": "linear"}


def test_no_map_png_without_evaluation(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    _write_metrics(csv_path, epochs=1)
    assert [p.name for p in plot_metrics(csv_path, tmp_path / "plots")] == ["losses.png"]


def test_map_png_leaves_out_unvalidated_epochs_and_cocos_minus_one(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    _write_metrics(csv_path)
    (ax,) = map_figure(read_metrics(csv_path)).axes
    curves = {line.get_label(): line.get_ydata() for line in ax.lines}
    assert list(curves) == ["mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium"]  # no -1 curve
    np.testing.assert_allclose(curves["mAP"], [0.1, 0.3])  # epochs 2 and 4
    assert ax.get_ylim()[0] == 0
