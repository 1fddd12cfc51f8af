"""Training plots, written as PNG with matplotlib's Agg canvas (no pyplot, no global backend
switch: safe headless and inside other programs).

* ``losses.png``: every loss column of ``metrics.csv`` against the optimizer step.
* ``map.png``: the validation mAP columns against wall-clock minutes.
* ``pr_*.png``: precision-recall curves of the last validation (by ``scaledet.evaluation.plots``).
* ``labels.png``: the training labels: objects per class, and object sizes in original pixels
  and at the training resolution (``plot_labels``; also ``scaledet data check --plots DIR``).
* ``train_batch.jpg``: the first training batch as the model sees it (after augmentation),
  with its target boxes and class names, and crowd (ignore) regions in grey: the quickest
  check that labels, class names and augmentation are what you think.
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


def plot_train_batch(images: Any, targets: list[dict], class_names: list[str],
                     path: str | Path, max_images: int = 16) -> Path:
    """Write the first ``max_images`` of a training batch as one JPEG grid with boxes drawn.

    Args:
        images: ``(B, 3, S, S)`` float in ``[0, 1]`` or uint8 (any device).
        targets: per image ``boxes (N, 4)`` xyxy pixels of the image and ``labels (N,)``,
            optionally ``ignore (K, 4)`` regions (drawn grey, unlabelled).
        class_names: names indexed by label.
    """
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from scaledet.inference.predictor import draw_detections

    images = images[:max_images].detach().cpu()
    if images.dtype != torch.uint8:
        images = (images.float() * 255).round().clamp(0, 255).to(torch.uint8)
    n, _, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = Image.new("RGB", (cols * w, rows * h), (114, 114, 114))
    for i in range(n):
        t = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in targets[i].items()}
        hwc = np.ascontiguousarray(images[i].permute(1, 2, 0).numpy())
        tile = draw_detections(hwc, {"boxes": t["boxes"], "labels": t["labels"]}, class_names)
        draw = ImageDraw.Draw(tile)
        for box in t.get("ignore", torch.zeros(0, 4)).tolist():
            draw.rectangle(box, outline=(160, 160, 160), width=1)
        grid.paste(tile, ((i % cols) * w, (i // cols) * h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=90)
    return path


def label_stats(dataset: Any, imgsz: int | None = None) -> tuple[Any, Any, Any]:
    """``(objects per class (C,), sizes (N,), sizes at imgsz (N,) or None)`` of a dataset.

    Crowd regions are left out. Sizes are ``sqrt(w * h)`` in pixels of the boxes with positive
    area; the third entry is ``None`` when ``imgsz`` is not given or letterboxing to it
    changes no size."""
    import numpy as np

    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    sizes, scales = [], []
    for r in dataset.records:
        keep = ~r.iscrowd
        counts += np.bincount(r.labels[keep], minlength=len(counts))[:len(counts)]
        wh = (r.boxes[keep, 2:] - r.boxes[keep, :2]).clip(min=0)
        size = np.sqrt(wh[:, 0] * wh[:, 1])
        sizes.append(size[size > 0])
        side = max(r.width, r.height)
        scales.append(np.full(len(sizes[-1]), imgsz / side if imgsz and side > 0 else 1.0))
    size = np.concatenate(sizes) if sizes else np.zeros(0)
    scale = np.concatenate(scales) if scales else np.zeros(0)
    at_imgsz = size * scale if imgsz and not np.allclose(scale, 1.0) else None
    return counts, size, at_imgsz


def plot_labels(dataset: Any, path: str | Path, imgsz: int | None = None) -> Path:
    """Objects per class (left) and the histogram of object sizes ``sqrt(w * h)`` (right) of
    a :class:`~scaledet.data.records.DetectionDataset`, crowd regions left out.

    Sizes are in original pixels, with COCO's small / medium limits (32, 96) marked, and with
    ``imgsz`` also as the detector sees them after letterboxing to ``imgsz`` (longer side): the
    picture of how much a small input size shrinks the objects.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(dataset.class_names)
    counts, size, small = label_stats(dataset, imgsz)
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.bar(range(len(names)), counts, color="tab:blue")
    ax1.set_title(f"{int(counts.sum())} objects in {len(dataset.records)} images")
    ax1.set_ylabel("objects")
    if len(names) <= 40:
        ax1.set_xticks(range(len(names)), names, rotation=60 if len(names) > 8 else 0,
                       ha="right" if len(names) > 8 else "center", fontsize=8)
    else:
        ax1.set_xlabel("class index")
    if len(size):
        both = size if small is None else np.concatenate([size, small])
        lo, hi = max(float(both.min()), 0.5), float(both.max()) * 1.01
        bins = np.geomspace(lo, max(hi, lo * 1.01), 40)
        ax2.hist(size, bins=bins, alpha=0.6, label="original pixels")
        if small is not None:
            ax2.hist(small, bins=bins, alpha=0.6, label=f"at --imgsz {imgsz}")
        ax2.set_xscale("log")
        for limit, text in ((32, "small | medium"), (96, "medium | large")):
            ax2.axvline(limit, color="grey", ls="--", lw=1)
            ax2.text(limit, 0.98, f" {text}", transform=ax2.get_xaxis_transform(),
                     fontsize=7, va="top", color="grey")
        ax2.legend(fontsize=8)
    ax2.set_xlabel("object size sqrt(w * h), px")
    ax2.set_ylabel("objects")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
