"""Tiny stand-in checkpoints for the face pipeline tests: an untrained embedder and ``face-n``
detectors rigged to a known output (no training, so the tests are fast and exact)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from scaledet.data.wider_face import FACE_LANDMARK_NAMES, FACE_SKELETON
from scaledet.faces import ARCFACE_TEMPLATE_112, EmbeddingConfig
from scaledet.faces.recognizer import FaceRecognizer
from scaledet.models.checkpoint import save_weights
from scaledet.models.factory import build_from_config, face_n, fcos_n

TINY = dict(input_size=32, width=1.0, stem_channels=32, head_channels=128,
            stages=((2, 32, 1, 2), (2, 64, 1, 2), (2, 64, 1, 1), (2, 64, 1, 2), (2, 64, 1, 1)))
LAYOUT = (ARCFACE_TEMPLATE_112 - [56.0, 72.0]) / 28.0
"""The template's landmarks around its face centre in units of 28 px (strides in the rig)."""


def tiny_embedder(path: Path, seed: int = 0) -> Path:
    """An untrained recognizer checkpoint of the ``TINY`` embedding network (32 px crops)."""
    torch.manual_seed(seed)
    model = FaceRecognizer(4, EmbeddingConfig(**TINY)).eval()
    return save_weights(path, model.state_dict(), model.meta())


def rigged_face_detector(path: Path, logit: float, imgsz: int = 128) -> Path:
    """A ``face-n`` checkpoint whose every location scores ``sigmoid(logit)`` and puts the five
    landmarks at ``LAYOUT`` strides around itself (a face-like, alignable layout): with a large
    ``logit`` every photo has faces, with a very negative one none has."""
    torch.manual_seed(0)
    cfg = face_n(1)
    model = build_from_config(cfg).eval()
    head = model.head
    with torch.no_grad():
        head.cls_pred.weight.zero_()
        head.cls_pred.bias.fill_(logit)
        head.kpt_pred.weight.zero_()
        head.kpt_pred.bias.zero_()
        head.kpt_pred.bias[:10] = torch.tensor(LAYOUT.reshape(-1))
    return save_weights(path, model.state_dict(), {
        "model": "face-n", "model_config": asdict(cfg), "class_names": ["face"],
        "imgsz": imgsz, "keypoint_names": list(FACE_LANDMARK_NAMES),
        "skeleton": [list(p) for p in FACE_SKELETON]})


def plain_detector(path: Path) -> Path:
    """An untrained ``fcos-n`` checkpoint: boxes without landmarks."""
    cfg = fcos_n(1)
    model = build_from_config(cfg).eval()
    return save_weights(path, model.state_dict(), {
        "model": "fcos-n", "model_config": asdict(cfg), "class_names": ["face"], "imgsz": 128})
