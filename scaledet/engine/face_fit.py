"""Face recognition training and verification on image folders: the glue between the synthetic
(or any identity-per-folder) data, :class:`scaledet.faces.recognizer.FaceRecognizer`, the
generic :class:`scaledet.engine.trainer.Trainer` and the LFW protocol.

Data layout (what ``scaledet data synth OUT --task face-identities`` writes, LFW's naming)::

    ROOT/train/<identity>/<identity>_0001.png   aligned crops, one folder per training identity
    ROOT/verify/<identity>/...                   crops of other identities
    ROOT/pairs.txt                               LFW pairs over ROOT/verify

The crops are already aligned (five-point template); they are resized to the network's input
size. Training augments with a horizontal flip (an aligned face stays aligned) and brightness /
contrast jitter. Validation scores every pair of ``pairs.txt`` by the cosine similarity of the
two embeddings and reports the protocol accuracy under ``"mAP"`` (the key the trainer keeps the
best checkpoint by) and under ``"verification_accuracy"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from scaledet.data.images import read_image
from scaledet.engine.trainer import TrainConfig, Trainer
from scaledet.faces.embedding import EmbeddingConfig, FaceEmbedder
from scaledet.faces.recognizer import FaceRecognizer, MarginRecipe
from scaledet.faces.verification import (
    FaceVerification,
    cosine_scores,
    read_pairs,
    verification_report,
)

__all__ = ["FaceFolder", "FaceLoader", "FaceTrainSettings", "embedding_scorer",
           "evaluate_pairs", "fit_face", "load_crops"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


def load_crops(paths: list[Path], size: int) -> torch.Tensor:
    """``(N, 3, size, size)`` uint8 crops read from ``paths`` (resized when another size)."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(paths):
        image = read_image(p)
        if image.shape[:2] != (size, size):
            image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        out[i] = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a writable copy
    return out


@dataclass
class FaceFolder:
    """An identity-per-folder set held in memory: ``images`` ``(N, 3, S, S)`` uint8,
    ``labels`` ``(N,)`` int64 into ``names`` (sorted folder names)."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]

    @classmethod
    def read(cls, root: str | os.PathLike, size: int) -> FaceFolder:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder (expected one sub-folder of "
                                    "aligned crops per identity)")
        names = sorted(d.name for d in root.iterdir() if d.is_dir())
        paths, labels = [], []
        for k, name in enumerate(names):
            files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_EXTS)
            paths += files
            labels += [k] * len(files)
        if len(names) < 2 or not paths:
            raise ValueError(f"{root}: needs at least 2 identity folders with images, found "
                             f"{len(names)} folders and {len(paths)} images")
        return cls(load_crops(paths, size), torch.tensor(labels, dtype=torch.int64), names)


class FaceLoader:
    """Shuffled batches of ``(images (B, 3, S, S) uint8, targets)`` from a :class:`FaceFolder`
    for the trainer; ``targets[i]`` holds ``labels`` (the identity, one element) and an empty
    ``boxes`` (so batch plots work). Deterministic per ``seed`` and epoch; drops the last
    partial batch."""

    def __init__(self, data: FaceFolder, batch: int, seed: int = 0,
                 augment: bool = True) -> None:
        if batch < 2 or batch > len(data.labels):
            raise ValueError(f"batch must be in [2, {len(data.labels)}] (the images), got "
                             f"{batch}")
        self.data, self.batch, self.seed, self.augment = data, batch, seed, augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data.labels) // self.batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(len(self.data.labels), generator=g)
        for b in range(len(self)):
            idx = order[b * self.batch:(b + 1) * self.batch]
            images = self.data.images[idx]
            if self.augment:
                images = self._augment(images, g)
            labels = self.data.labels[idx]
            yield images, [{"labels": labels[i:i + 1], "boxes": torch.zeros(0, 4)}
                           for i in range(len(idx))]

    @staticmethod
    def _augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = len(images)
        flip = torch.rand(n, generator=g) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
        gain = 1 + 0.4 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
        bias = 30 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
        mean = images.float().mean((1, 2, 3), keepdim=True)
        out = (images.float() - mean) * gain + mean + bias
        return out.round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def evaluate_pairs(embedder: nn.Module, pairs: str | os.PathLike, root: str | os.PathLike,
                   size: int, device: str | torch.device = "cpu", batch: int = 64,
                   folds: int | None = None) -> tuple[FaceVerification, np.ndarray, np.ndarray]:
    """Score every pair of an LFW ``pairs`` file on the aligned crops under ``root`` by cosine
    similarity of ``embedder``'s embeddings (``embedder(images)``: uint8-range ``(B, 3, S, S)``
    in, ``(B, D)`` out); return the report, the ``(N,)`` scores and the ``(N,)`` same flags.
    ``folds``: the file's folds (None), or another count."""
    pf = read_pairs(pairs)
    paths = pf.image_paths(root)
    unique = sorted({p for pair in paths for p in pair})
    index = {p: i for i, p in enumerate(unique)}
    crops = load_crops(unique, size)
    was = embedder.training
    embedder.eval()
    device = torch.device(device)
    emb = torch.cat([embedder(crops[i:i + batch].to(device)).float().cpu()
                     for i in range(0, len(crops), batch)]).numpy()
    embedder.train(was)
    a = emb[[index[p] for p, _ in paths]]
    b = emb[[index[q] for _, q in paths]]
    scores = cosine_scores(a, b)
    same = pf.same
    n_folds = folds if folds is not None else (pf.folds if pf.folds >= 2 else 10)
    return verification_report(scores, same, folds=min(n_folds, len(scores))), scores, same


class _Normalised(nn.Module):
    """uint8-range images -> embeddings, for scoring a bare :class:`FaceEmbedder`."""

    def __init__(self, embedder: FaceEmbedder) -> None:
        super().__init__()
        self.embedder = embedder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedder(FaceEmbedder.normalize(images))


def embedding_scorer(embedder: FaceEmbedder) -> nn.Module:
    """Wrap a bare embedder to take uint8-range images, as :func:`evaluate_pairs` gives."""
    return _Normalised(embedder)


@dataclass
class FaceTrainSettings:
    """A recognition run: data, architecture, margin recipe and trainer settings.

    ``data``: the folder with ``train/`` (and, for validation, ``verify/`` + ``pairs.txt``; or
    set ``pairs`` and ``verify_root``). ``input_size``: the network's crop side (a multiple of
    16; crops on disk are resized to it).
    """

    data: str
    out: str = "runs/face"
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    recipe: MarginRecipe = field(default_factory=MarginRecipe)
    epochs: int | None = None
    time_minutes: float | None = None
    batch: int = 64
    lr: float = 2e-3
    warmup_iters: int = 20
    seed: int = 0
    device: str = "cpu"
    pairs: str | None = None
    verify_root: str | None = None
    progress: bool = True
    plots: bool = True
    eval_interval: int = 1


def fit_face(s: FaceTrainSettings) -> dict[str, Any]:
    """Train the recognizer on ``s.data/train`` and validate on the pairs; returns the trainer's
    summary plus ``"identities"``, ``"weights"`` (best checkpoint) and the last ``"history"``
    of losses."""
    root = Path(s.data)
    size = s.embedding.input_size
    data = FaceFolder.read(root / "train", size)
    pairs = Path(s.pairs) if s.pairs else root / "pairs.txt"
    verify_root = Path(s.verify_root) if s.verify_root else root / "verify"
    evaluate = None
    if pairs.is_file():
        def evaluate(model: nn.Module) -> dict[str, float]:
            report, _, _ = evaluate_pairs(model, pairs, verify_root, size, s.device)
            d = report.as_dict()
            return {"mAP": d["accuracy"], "verification_accuracy": d["accuracy"],
                    **{k: v for k, v in d.items() if k != "accuracy"}}
    model = FaceRecognizer(len(data.names), s.embedding, s.recipe)
    cfg = TrainConfig(epochs=s.epochs, time_minutes=s.time_minutes, lr=s.lr,
                      warmup_iters=s.warmup_iters, seed=s.seed, device=s.device,
                      progress=s.progress, plots=s.plots, eval_interval=s.eval_interval,
                      close_mosaic=0.0, amp="off", ema_tau=200.0)
    loader = FaceLoader(data, min(s.batch, len(data.labels)), seed=s.seed)
    meta = {**model.meta(), "class_names": list(data.names)}
    names = ("verification_accuracy", "accuracy_std", "auc", "tar@far=0.001", "tar@far=0.0001")
    trainer = Trainer(model, loader, cfg, s.out, evaluate=evaluate, meta=meta,
                      metric_names=names)
    model.progress = trainer.progress  # the margin schedule follows the run
    summary = trainer.fit()
    summary.update(identities=len(data.names), history=list(trainer.history),
                   weights=str(trainer.weights_dir / "best.safetensors"))
    return summary
