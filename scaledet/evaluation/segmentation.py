"""Semantic segmentation metrics from a confusion matrix accumulated batch by batch.

``confusion[i, j]`` counts pixels of true class ``i`` predicted as ``j``. From it:
pixel accuracy ``PA = sum_i n_ii / sum_ij n_ij``; class accuracy ``n_ii / t_i`` (``t_i`` the
pixels of class i) and its mean ``MPA`` over classes present in the target; class IoU
``n_ii / (t_i + p_i - n_ii)`` (``p_i`` the pixels predicted as i) and its mean ``MIoU`` over
classes that appear in target or prediction; frequency-weighted IoU ``sum_i (t_i / N) IoU_i``.

:func:`evaluate_label_folders` scores a folder of predicted label PNGs against a folder of
ground-truth ones (``scaledet eval --seg``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


class SegmentationMetrics:
    """Accumulates a ``(C, C)`` int64 confusion matrix on the device of the predictions.

    Args:
        num_classes: ``C``; class ids are ``0..C-1``.
        ignore_index: target value to skip (``None`` to skip nothing).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion: torch.Tensor | None = None

    def reset(self) -> None:
        self.confusion = None

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            pred: ``(N, H, W)`` class ids, or ``(N, C, H, W)`` scores (argmax over C is taken).
            target: ``(N, H, W)`` class ids, ``ignore_index`` for unlabelled pixels.
        """
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        C = self.num_classes
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != C:
                raise ValueError(f"pred scores have {pred.shape[1]} channels, expected {C}")
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                             "must have the same shape (or pred one extra class dim)")
        pred, target = pred.reshape(-1).long(), target.to(pred.device).reshape(-1).long()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        for name, x in (("target", target), ("pred", pred)):
            if x.numel() and (x.min() < 0 or x.max() >= C):
                raise ValueError(f"{name} has class ids outside 0..{C - 1} "
                                 f"(min {int(x.min())}, max {int(x.max())})")
        counts = torch.bincount(target * C + pred, minlength=C * C).reshape(C, C)
        if self.confusion is None:
            self.confusion = counts
        else:
            self.confusion += counts.to(self.confusion.device)

    def compute(self) -> dict[str, float | torch.Tensor]:
        """``pixel_accuracy``, ``mean_pixel_accuracy``, ``mean_iou``, ``fw_iou`` (floats, NaN
        before any labelled pixel) and per-class ``iou``/``class_accuracy`` ``(C,)`` float64
        tensors (NaN for classes without pixels)."""
        C = self.num_classes
        cm = torch.zeros(C, C, dtype=torch.int64) if self.confusion is None else self.confusion
        return metrics_from_confusion(cm)


def metrics_from_confusion(
    confusion: torch.Tensor, missed: torch.Tensor | np.ndarray | None = None
) -> dict[str, float | torch.Tensor]:
    """The metrics of :class:`SegmentationMetrics` from a ``(C, C)`` confusion matrix.

    ``missed``: optional ``(C,)`` counts of labelled pixels of class ``i`` for which the
    prediction gave no class at all (a label image left unlabelled there). They are errors of
    class ``i`` (in PA, its accuracy and its IoU's union) and predictions of no class.
    """
    cm = torch.as_tensor(confusion).double().cpu()
    diag, true, predicted = cm.diagonal(), cm.sum(dim=1), cm.sum(dim=0)
    if missed is not None:
        true = true + torch.as_tensor(missed).double().cpu()
    total = true.sum()
    union = true + predicted - diag
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    class_acc = torch.where(true > 0, diag / true.clamp(min=1), nan)
    iou = torch.where(union > 0, diag / union.clamp(min=1), nan)
    if total == 0:
        return {"pixel_accuracy": float("nan"), "mean_pixel_accuracy": float("nan"),
                "mean_iou": float("nan"), "fw_iou": float("nan"), "iou": iou,
                "class_accuracy": class_acc}
    freq = true / total
    return {
        "pixel_accuracy": float(diag.sum() / total),
        "mean_pixel_accuracy": float(class_acc.nanmean()),
        "mean_iou": float(iou.nanmean()),
        "fw_iou": float((freq[union > 0] * iou[union > 0]).sum()),
        "iou": iou,
        "class_accuracy": class_acc,
    }


# ---------------------------------------------------------------------------------------------
# folders of label images

# PIL modes whose pixels are one integer each (``P``: the palette index is the class id).
_LABEL_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class LabelProblem:
    """A label image that could not be used: ``path`` is the file at fault."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class LabelFolderResult:
    """Predicted label images scored against ground-truth ones, see :func:`evaluate_label_folders`.

    ``metrics`` is :func:`metrics_from_confusion` over the scored images; ``gt_pixels[i]`` the
    labelled ground-truth pixels of class ``i`` in them. ``problems`` names every image left out
    (``num_no_prediction`` for a missing/unusable prediction, ``num_bad_gt`` for an unreadable
    ground truth); ``unmatched`` lists predictions without a ground truth, which are not scored.
    """

    metrics: dict[str, float | torch.Tensor]
    confusion: np.ndarray
    missed: np.ndarray
    num_classes: int
    ignore_index: int | None
    num_images: int
    num_scored: int
    num_no_prediction: int = 0
    num_bad_gt: int = 0
    problems: list[LabelProblem] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    @property
    def gt_pixels(self) -> np.ndarray:
        return self.confusion.sum(axis=1) + self.missed

    def problems_report(self) -> str:
        """Each problem on its own line, then how many images were left out (empty if none)."""
        lines = [f"  {p}" for p in self.problems]
        if lines:
            lines.insert(0, "problems (these images are left out of the metrics):")
        M = self.num_images
        if self.num_no_prediction:
            lines.append(f"{self.num_no_prediction} of {M} ground-truth images had no usable "
                         "prediction")
        if self.num_bad_gt:
            lines.append(f"{self.num_bad_gt} of {M} ground-truth images were unreadable")
        if self.unmatched:
            shown = ", ".join(self.unmatched[:5]) + (", ..." if len(self.unmatched) > 5 else "")
            lines.append(f"{len(self.unmatched)} predictions have no ground truth and were not "
                         f"scored: {shown}")
        return "\n".join(lines)

    def summary(self) -> str:
        """PA, MPA, MIoU and FWIoU, one per line, and what they were computed over."""
        m = self.metrics
        rows = (("PA", "pixel_accuracy", "pixel accuracy"),
                ("MPA", "mean_pixel_accuracy", "mean per-class accuracy"),
                ("MIoU", "mean_iou", "mean IoU over classes in ground truth or prediction"),
                ("FWIoU", "fw_iou", "IoU weighted by ground-truth pixel frequency"))
        lines = [f"{short:<7}{m[key]:.4f}   {what}" for short, key, what in rows]
        lines.append(f"over {self.num_scored} of {self.num_images} images, "
                     f"{int(self.gt_pixels.sum())} labelled pixels")
        return "\n".join(lines)

    def class_table(self) -> str:
        """Per class: IoU, accuracy and ground-truth pixels (``-`` where the class has none)."""
        iou, acc = self.metrics["iou"].tolist(), self.metrics["class_accuracy"].tolist()
        lines = [f"{'class':>5} {'IoU':>7} {'Acc':>7} {'GT pixels':>11}"]
        for c, n in enumerate(self.gt_pixels.tolist()):
            cells = [f"{'-':>7}" if v != v else f"{v:7.4f}" for v in (iou[c], acc[c])]
            lines.append(f"{c:>5} {cells[0]} {cells[1]} {n:>11}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The metrics, per-class rows and problems, json-serialisable (``None`` for NaN)."""

        def num(v: float) -> float | None:
            return None if v != v else float(v)

        m = self.metrics
        iou, acc = m["iou"].tolist(), m["class_accuracy"].tolist()
        return {
            "metrics": {k: num(m[k]) for k in
                        ("pixel_accuracy", "mean_pixel_accuracy", "mean_iou", "fw_iou")},
            "per_class": [{"class": c, "iou": num(iou[c]), "accuracy": num(acc[c]),
                           "gt_pixels": int(n)} for c, n in enumerate(self.gt_pixels.tolist())],
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "images": self.num_images,
            "images_scored": self.num_scored,
            "problems": [{"path": p.path, "problem": p.problem} for p in self.problems],
            "unmatched_predictions": list(self.unmatched),
        }


def _png_files(folder: str | Path, what: str) -> dict[str, Path]:
    """``{stem: path}`` of the PNGs directly in ``folder``; an error naming it if there are none."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{what} folder {folder} is not a folder")
    entries = sorted(folder.iterdir())
    files = {p.stem: p for p in entries if p.suffix.lower() == ".png" and p.is_file()}
    if not files:
        others = sorted({p.suffix.lower() for p in entries if p.is_file() and p.suffix})
        hint = f" (found {', '.join(others)}; label images must be PNG)" if others else ""
        raise ValueError(f"{what} folder {folder} has no .png label images{hint}")
    return files


def _read_label(path: Path) -> tuple[np.ndarray | None, str]:
    """The label image as an int64 ``(H, W)`` array, or ``None`` and why it cannot be used."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in _LABEL_MODES:
                return None, f"{im.mode} image, not a single-channel label image"
            return np.asarray(im).astype(np.int64), ""
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, f"unreadable ({e})"


def _check_values(labels: np.ndarray, path: Path, num_classes: int,
                  ignore_index: int | None) -> None:
    """Raise ``ValueError`` naming ``path`` and the value if a pixel is no class id nor ignored."""
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bad.any():
        y, x = (int(i[0]) for i in np.nonzero(bad))
        values = np.unique(labels[bad]).tolist()
        allowed = f"a class id 0..{num_classes - 1}"
        if ignore_index is not None:
            allowed += f" nor the ignore index {ignore_index}"
        raise ValueError(f"{path}: pixel value {labels[y, x]} at x={x}, y={y} is not {allowed} "
                         f"({int(bad.sum())} such pixels, values {values[:10]}); is "
                         "--num-classes right?")


def evaluate_label_folders(gt_dir: str | Path, pred_dir: str | Path, num_classes: int,
                           ignore_index: int | None = 255) -> LabelFolderResult:
    """Score the label PNGs in ``pred_dir`` against those in ``gt_dir``, matched by file stem.

    Pixel values are class ids ``0..num_classes-1``; ground-truth pixels equal to
    ``ignore_index`` are not counted. A prediction pixel equal to ``ignore_index`` (when that is
    no class id) means "no class": an error of its ground-truth class, no class's prediction.
    A prediction that is missing, unreadable, not single-channel or of another size than its
    ground truth (and an unreadable ground truth) is recorded in ``problems`` and its image left
    out, so one bad file does not stop a long evaluation.

    Raises:
        FileNotFoundError / NotADirectoryError: a folder does not exist / is a file.
        ValueError: a folder has no PNG, or a pixel value is neither a class id nor the ignore
            index (the message names the file and the value).
    """
    C = int(num_classes)
    if C < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    gts = _png_files(gt_dir, "ground-truth")
    preds = _png_files(pred_dir, "prediction")
    counts = np.zeros(C * (C + 1), dtype=np.int64)  # column C: predicted as no class
    problems: list[LabelProblem] = []
    scored = no_pred = bad_gt = 0
    for stem, gt_path in gts.items():
        gt, why = _read_label(gt_path)
        if gt is None:
            problems.append(LabelProblem(str(gt_path), f"ground truth {why}"))
            bad_gt += 1
            continue
        _check_values(gt, gt_path, C, ignore_index)
        pred_path = preds.get(stem)
        if pred_path is None:
            problems.append(LabelProblem(str(Path(pred_dir) / gt_path.name),
                                         f"missing (no prediction for {gt_path})"))
            no_pred += 1
            continue
        pred, why = _read_label(pred_path)
        if pred is not None and pred.shape != gt.shape:
            why = (f"{pred.shape[1]}x{pred.shape[0]} but ground truth {gt_path} is "
                   f"{gt.shape[1]}x{gt.shape[0]}")
            pred = None
        if pred is None:
            problems.append(LabelProblem(str(pred_path), why))
            no_pred += 1
            continue
        _check_values(pred, pred_path, C, ignore_index)
        t, p = gt.ravel(), pred.ravel()
        if ignore_index is not None:
            keep = t != ignore_index
            t, p = t[keep], p[keep]
        p = np.where((p >= 0) & (p < C), p, C)  # what is left out of range is ignore_index
        counts += np.bincount(t * (C + 1) + p, minlength=C * (C + 1))
        scored += 1
    table = counts.reshape(C, C + 1)
    confusion, missed = table[:, :C].copy(), table[:, C].copy()
    metrics = metrics_from_confusion(torch.from_numpy(confusion), torch.from_numpy(missed))
    unmatched = [str(path) for stem, path in preds.items() if stem not in gts]
    return LabelFolderResult(metrics=metrics, confusion=confusion, missed=missed,
                             num_classes=C, ignore_index=ignore_index, num_images=len(gts),
                             num_scored=scored, num_no_prediction=no_pred, num_bad_gt=bad_gt,
                             problems=problems, unmatched=unmatched)
