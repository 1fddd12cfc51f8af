"""A tiny detector-shaped model and loader for engine tests (no dependency on scaledet.models)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TinyModel(nn.Module):
    """``model(images, targets)`` -> losses in train mode; ``model(images)`` -> detections in eval.

    The "detection" is a regression of each image's first box from pooled features: enough to give
    a loss that falls. Dropout makes the torch RNG matter; ``nan_calls`` makes chosen calls NaN.
    """

    def __init__(self, num_classes: int = 2, nan_calls: set[int] | None = None) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()),
        )
        self.drop = nn.Dropout(0.1)
        self.box = nn.Linear(8, 4)
        self.cls = nn.Linear(8, num_classes)
        self.nan_calls = nan_calls or set()
        self.calls = 0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.drop(self.backbone(images).mean(dim=(2, 3)))

    def forward(self, images, targets=None):
        f = self.features(images)
        box, logits = self.box(f) * 32.0, self.cls(f)
        if not self.training:
            return [{"boxes": b[None].abs().sort(dim=1).values, "scores": lg.softmax(0)[:1],
                     "labels": lg.argmax()[None]} for b, lg in zip(box, logits)]
        self.calls += 1
        gt_box = torch.stack([t["boxes"][0] for t in targets])
        gt_lab = torch.stack([t["labels"][0] for t in targets])
        loss_box = nn.functional.smooth_l1_loss(box, gt_box) / 32.0
        loss_cls = nn.functional.cross_entropy(logits, gt_lab)
        if self.calls in self.nan_calls:
            loss_box = loss_box * float("nan")
        return {"loss": loss_box + loss_cls, "loss_box": loss_box, "loss_cls": loss_cls}


class TinyLoader:
    """Fixed random images; the order is shuffled per epoch with the *global* NumPy RNG and
    noise is added with the *global* torch RNG, so a resume is exact only if both are restored."""

    def __init__(self, n: int = 24, batch: int = 4, size: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g)
        xy = torch.rand(n, 2, generator=g) * size / 2
        self.boxes = torch.cat([xy, xy + size / 4], dim=1)
        self.labels = (self.images.mean(dim=(1, 2, 3)) > 0.5).long()
        self.batch = batch
        self.epoch_seen: list[int] = []
        self.mosaic_set: list[tuple[int, float]] = []
        self.imgsz_set: list[tuple[int, int | None]] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch_seen.append(epoch)

    def set_mosaic(self, probability: float) -> None:
        self.mosaic_set.append((self.epoch_seen[-1], probability))

    def set_imgsz(self, size: int | None) -> None:
        self.imgsz_set.append((self.epoch_seen[-1], size))

    def __len__(self) -> int:
        return len(self.images) // self.batch

    def __iter__(self):
        order = np.random.permutation(len(self.images))  # noqa: NPY002 - global RNG on purpose
        for i in range(len(self)):
            idx = torch.from_numpy(order[i * self.batch:(i + 1) * self.batch])
            images = self.images[idx] + 0.01 * torch.randn(len(idx), 3, *self.images.shape[2:])
            targets = [{"boxes": self.boxes[j][None], "labels": self.labels[j][None],
                        "image_id": int(j)} for j in idx]
            yield images, targets


def tiny_eval(model: nn.Module) -> dict:
    """A stand-in validation: a deterministic score from the weights (higher = smaller box head)."""
    w = model.box.weight.detach()
    return {"mAP": float(1.0 / (1.0 + w.abs().mean())), "mAP50": 0.5}
