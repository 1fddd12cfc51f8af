"""Semantic segmentation metrics from a confusion matrix accumulated batch by batch.

``confusion[i, j]`` counts pixels of true class ``i`` predicted as ``j``. From it:
pixel accuracy ``PA = sum_i n_ii / sum_ij n_ij``; class accuracy ``n_ii / t_i`` (``t_i`` the
pixels of class i) and its mean ``MPA`` over classes present in the target; class IoU
``n_ii / (t_i + p_i - n_ii)`` (``p_i`` the pixels predicted as i) and its mean ``MIoU`` over
classes that appear in target or prediction; frequency-weighted IoU ``sum_i (t_i / N) IoU_i``.
"""

from __future__ import annotations

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


def metrics_from_confusion(confusion: torch.Tensor) -> dict[str, float | torch.Tensor]:
    """The metrics of :class:`SegmentationMetrics` from a ``(C, C)`` confusion matrix."""
    cm = torch.as_tensor(confusion).double().cpu()
    diag, true, predicted = cm.diagonal(), cm.sum(dim=1), cm.sum(dim=0)
    total = cm.sum()
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
