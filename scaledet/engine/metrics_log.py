"""``metrics.csv``: one row per epoch of a training run, appended as the run goes and cut back
to the checkpoint's epoch when a run resumes."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scaledet.evaluation.coco import METRIC_NAMES

ROW_KEYS = ("epoch", "step", "elapsed_s", "lr", "images_per_s")


class MetricsLog:
    """Columns: epoch, step, elapsed_s, lr, the loss terms, images_per_s, the validation
    metrics ``metric_names`` (by default the 12 COCO box metrics,
    :data:`~scaledet.evaluation.coco.METRIC_NAMES`; a pose or face run passes its own), empty
    where the epoch was not validated, val_images_per_s. The first row fixes the columns; a
    resumed run appends to the same file."""

    def __init__(self, path: str | Path, metric_names: Sequence[str] = METRIC_NAMES) -> None:
        self.path = Path(path)
        self.metric_names = tuple(metric_names)

    def append(self, row: dict[str, Any], loss_keys: list[str]) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.stat().st_size > 0:
            with path.open(newline="") as f:
                fields = next(csv.reader(f))
            mode = "a"
        else:
            fields = [*ROW_KEYS[:4], *loss_keys, "images_per_s", *self.metric_names,
                      "val_images_per_s"]
            mode = "w"
        with path.open(mode, newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", restval="")
            if mode == "w":
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def truncate(self, epoch: int) -> None:
        """Drop the rows written after ``epoch`` (those of a run's lost tail, on resume)."""
        if not self.path.is_file():
            return
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= epoch]
        with self.path.open("w", newline="") as f:
            csv.writer(f).writerows(keep)
