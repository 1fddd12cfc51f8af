"""``labels.png``: what a dataset holds, objects per class and object sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaledet.plots.style import figure, save


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

    names = list(dataset.class_names)
    counts, size, small = label_stats(dataset, imgsz)
    fig, (ax1, ax2) = figure((11, 4), 1, 2)
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
            # above the frame, where no bar can hide it
            ax2.text(limit, 1.01, text, transform=ax2.get_xaxis_transform(), fontsize=7,
                     ha="center", va="bottom", color="grey")
        ax2.legend(fontsize=8)
    ax2.set_xlabel("object size sqrt(w * h), px")
    ax2.set_ylabel("objects")
    ax2.grid(alpha=0.3)
    return save(fig, path)
