"""A real (tiny) training run: the model must learn to find drawn rectangles and ellipses."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from scaledet.models import build
from scaledet.ops import box_iou


def _shapes_dataset(n: int, size: int, seed: int):
    """Images with 1-2 non-overlapping bright shapes on a dark background; class 0 is a
    rectangle, class 1 an ellipse. Boxes are the shapes' pixel extents (xyxy)."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
        draw = ImageDraw.Draw(im)
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, 3))):
            for _attempt in range(50):
                w, h = rng.integers(size // 6, size // 2, 2)
                x, y = rng.integers(0, size - w), rng.integers(0, size - h)
                b = [int(x), int(y), int(x + w), int(y + h)]
                if all(b[2] <= o[0] or o[2] <= b[0] or b[3] <= o[1] or o[3] <= b[1] for o in boxes):
                    break
            else:
                continue
            label = int(rng.integers(0, 2))
            color = tuple(int(v) for v in rng.integers(150, 256, 3))
            (draw.rectangle if label == 0 else draw.ellipse)([b[0], b[1], b[2] - 1, b[3] - 1],
                                                              fill=color)
            boxes.append(b)
            labels.append(label)
        images.append(torch.tensor(np.array(im)).permute(2, 0, 1).float() / 255)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor(labels)})
    return torch.stack(images), targets


def _average_precision_50(dets, targets, num_classes: int) -> float:
    """VOC-style all-point AP at IoU 0.5, averaged over classes (greedy matching by score)."""
    aps = []
    for c in range(num_classes):
        hits, scores, n_gt = [], [], 0
        for d, t in zip(dets, targets):
            gt = t["boxes"][t["labels"] == c]
            n_gt += len(gt)
            keep = d["labels"] == c
            boxes, s = d["boxes"][keep], d["scores"][keep]
            taken = torch.zeros(len(gt), dtype=torch.bool)
            ious = box_iou(boxes, gt) if len(gt) else torch.zeros(len(boxes), 0)
            for i in s.argsort(descending=True).tolist():
                iou = ious[i].masked_fill(taken, -1)
                j = int(iou.argmax()) if len(gt) else -1
                hit = j >= 0 and iou[j] >= 0.5
                if hit:
                    taken[j] = True
                hits.append(hit)
                scores.append(float(s[i]))
        order = np.argsort(-np.array(scores), kind="stable")
        tp = np.cumsum(np.array(hits, dtype=float)[order])
        recall = np.concatenate([[0], tp / max(n_gt, 1)])
        precision = np.concatenate([[1], tp / np.arange(1, len(tp) + 1)])
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # interpolated envelope
        aps.append(float(np.sum(np.diff(recall) * precision[1:])))
    return float(np.mean(aps))


def test_average_precision_helper():
    t = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 0])}]
    perfect = [{"boxes": t[0]["boxes"], "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}]
    assert _average_precision_50(perfect, t, 1) == 1.0
    half = [{"boxes": torch.tensor([[50.0, 50, 60, 60], [0, 0, 10, 10]]),
             "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}]
    assert _average_precision_50(half, t, 1) == 0.25  # recall 0.5 reached at precision 0.5


def train_tiny(model, images, targets, steps: int = 250, batch: int = 8,
               lr: float = 4e-3) -> list[float]:
    """The tiny-training tests' own recipe (AdamW, random batches from a seeded generator),
    independent of the presets' tuned defaults; returns the loss of every step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randperm(len(images), generator=g)[:batch].tolist()
        loss = model(images[idx], [targets[i] for i in idx])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("head", [{}, {"reg_max": 8}, {"reg_max": 8, "assigner": "tal"}],
                         ids=["fcos", "dfl", "dfl+tal"])
def test_tiny_model_learns_to_detect_shapes(head):
    """250 AdamW steps (batch 8, 96 px) of a narrow fcos-n on 64 images: about 12 s on one
    core. Measured: loss 1.86 -> 0.85, AP50 0.99 on the training images and 0.89 on 16
    held-out images (``reg_max=8``, GFL distributions: loss 2.33 -> 0.88, AP50 1.00 / 1.00;
    with task-aligned assignment too: 1.79 -> 0.51, 1.00 / 0.93);
    the thresholds leave margin for other seeds and platforms."""
    torch.manual_seed(0)
    images, targets = _shapes_dataset(64, 96, seed=0)
    val_images, val_targets = _shapes_dataset(16, 96, seed=1)
    # The test's own recipe (lr 4e-3, box weight 2.0), independent of the preset's tuned defaults.
    model = build("fcos-n", num_classes=2, backbone={"widths": (8, 16, 24, 48, 64)},
                  neck={"channels": 32}, head={"box_loss_weight": 2.0, **head})
    losses = train_tiny(model, images, targets)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.6 * first, (first, last)
    model.eval()
    with torch.no_grad():
        train_ap50 = _average_precision_50(model(images), targets, 2)
        val_ap50 = _average_precision_50(model(val_images), val_targets, 2)
    assert train_ap50 > 0.9 and val_ap50 > 0.6, (train_ap50, val_ap50)
