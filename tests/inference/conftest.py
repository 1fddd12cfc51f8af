"""Shared fixtures: a tiny randomly initialised detector (saved as a checkpoint) and a stub
detector whose answers are known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

CLASS_NAMES = ["circle", "square", "star"]


def tiny_model() -> nn.Module:
    """fcos-n for 3 classes, random weights; the classification bias spread out so that
    scores vary (a fresh head scores every location at the prior, about 0.01)."""
    from scaledet.models import build

    torch.manual_seed(0)
    # GroupNorm towers: per-image normalisation keeps the perturbed scores spread out; the
    # default per-level BatchNorm towers would normalise with untrained running statistics.
    model = build("fcos-n", num_classes=3, head={"norm": "gn"})
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.head.cls_pred.weight.mul_(4)
        model.head.cls_pred.bias.fill_(-3.0)
    return model.eval()


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> str:
    """A checkpoint of :func:`tiny_model` (imgsz 96), written like ``scaledet train`` does."""
    from dataclasses import asdict

    from scaledet.models.checkpoint import save_weights

    model = tiny_model()
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    meta = {"model": "fcos-n", "model_config": asdict(model.config), "class_names": CLASS_NAMES,
            "category_ids": [1, 2, 3], "imgsz": 96}
    save_weights(path, model.state_dict(), meta)
    return str(path)


# Colour of each class for ColourBoxDetector, RGB in [0, 1].
COLOURS = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


class ColourBoxDetector(nn.Module):
    """A stand-in detector with exactly known answers: for each class colour present in an
    input image (pixels within 0.4 of it in every channel), one box enclosing those pixels,
    xyxy input pixels, score ``0.9 - 0.1 * class``. Draw objects in ``COLOURS`` on black."""

    def forward(self, images: Tensor) -> list[dict[str, Tensor]]:
        out = []
        for im in images:
            boxes, scores, labels = [], [], []
            for c, colour in enumerate(COLOURS):
                mask = ((im - colour[:, None, None]).abs() < 0.4).all(dim=0)
                if not mask.any():
                    continue
                ys, xs = mask.nonzero(as_tuple=True)
                boxes.append(torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))
                scores.append(0.9 - 0.1 * c)
                labels.append(c)
            out.append({"boxes": torch.stack(boxes).float() if boxes else torch.zeros(0, 4),
                        "scores": torch.tensor(scores, dtype=torch.float32),
                        "labels": torch.tensor(labels, dtype=torch.int64)})
        return out


def draw(height: int, width: int, objects: list[tuple[int, tuple[int, int, int, int]]]
         ) -> Tensor:
    """A black ``(3, H, W)`` uint8 image with class-coloured rectangles ``(class, (x0, y0, x1,
    y1))`` (integer pixels, x1/y1 exclusive)."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    for c, (x0, y0, x1, y1) in objects:
        image[:, y0:y1, x0:x1] = (COLOURS[c] * 255).to(torch.uint8)[:, None, None]
    return image


def person_detector() -> nn.Module:
    """:func:`tiny_model`'s recipe for one class ("person"): random boxes with spread scores."""
    from scaledet.models import build

    torch.manual_seed(0)
    model = build("fcos-n", num_classes=1, head={"norm": "gn"})
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.head.cls_pred.weight.mul_(4)
        model.head.cls_pred.bias.fill_(-3.0)
    return model.eval()


def save_detector(path, model: nn.Module, class_names: list[str], imgsz: int = 96) -> str:
    """A detector checkpoint as ``scaledet train`` writes it."""
    from dataclasses import asdict

    from scaledet.models.checkpoint import save_weights

    meta = {"model": model.config.name, "model_config": asdict(model.config),
            "class_names": class_names, "category_ids": list(range(1, len(class_names) + 1)),
            "imgsz": imgsz}
    save_weights(path, model.state_dict(), meta)
    return str(path)


def save_pose(path, name: str = "pose-heatmap-n", seed: int = 0) -> str:
    """A pose checkpoint with the metadata the training engine writes (COCO's 17 joints,
    skeleton and left/right table), random weights."""
    from dataclasses import asdict

    from scaledet.data.synth_keypoints import KEYPOINT_NAMES, SKELETON
    from scaledet.models import build
    from scaledet.models.checkpoint import save_weights

    torch.manual_seed(seed)
    model = build(name)
    names = list(KEYPOINT_NAMES)
    flip = [names.index(n.replace("left", "@").replace("right", "left").replace("@", "right"))
            for n in names]
    meta = {"task": "pose", "model": name, "model_config": asdict(model.config),
            "class_names": ["person"], "category_ids": [1], "keypoint_names": names,
            "skeleton": [list(p) for p in SKELETON], "flip_index": flip,
            "imgsz": model.input_size[0]}
    save_weights(path, model.state_dict(), meta)
    return str(path)


class FixedPose(nn.Module):
    """A stand-in pose model: the same ``coords`` (K, 2) crop pixels for every crop, scores
    ``0.9``; counts the crops it saw in ``seen``."""

    def __init__(self, coords: Tensor, input_size: tuple[int, int] = (128, 96)) -> None:
        super().__init__()
        self.coords = coords.float()
        self.input_size = input_size
        self.num_keypoints = len(coords)
        self.seen: list[Tensor] = []

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        assert crops.shape[1:] == (3, *self.input_size) and crops.is_floating_point()
        self.seen.append(crops)
        b = crops.shape[0]
        return self.coords.expand(b, -1, -1).clone(), torch.full((b, self.num_keypoints), 0.9)


class BrightestPixelPose(nn.Module):
    """A stand-in pose model with one joint: the crop pixel of the largest mean colour (the
    intensity-weighted centroid of the pixels within 10% of it), so its answer is where a bright
    spot of the image lands in the crop."""

    def __init__(self, input_size: tuple[int, int] = (128, 96)) -> None:
        super().__init__()
        self.input_size = input_size
        self.num_keypoints = 1

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        grey = crops.mean(1)  # (B, H, W)
        out = []
        for g in grey:
            w = g * (g >= 0.9 * g.max())
            ys, xs = torch.meshgrid(torch.arange(g.shape[0]), torch.arange(g.shape[1]),
                                    indexing="ij")
            out.append(torch.stack([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()]))
        return torch.stack(out)[:, None], torch.ones(len(crops), 1)
