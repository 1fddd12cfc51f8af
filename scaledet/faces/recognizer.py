"""Face recognition training model: the embedding network plus a margin-softmax classifier over
the training identities, with the small-data recipe (softmax warm-up, then a margin ramp).

A margin makes the training task harder on purpose; from random weights on little data the full
margin (ArcFace's 0.5 rad, CosFace's 0.35) can keep every target logit below the others and the
loss on a plateau. The usual advice is to start without it: ``warmup`` (fraction of the run)
trains with the normalised softmax (``s·cos θ``, no margin), then the margins grow linearly to
their full values over the next ``ramp`` fraction (SphereFace's ``m1`` from 1, ``m2`` and
``m3`` from 0). The run's progress comes from ``progress``, a callable the trainer supplies
(``Trainer.progress``); without one the full margin applies from the start.

``LOSSES`` names the four heads compared in the issue: ``softmax`` (normalised softmax with
scale ``s``: no margin), ``sphereface`` (multiplicative ``m1 = 1.35``, the normalised form of the
ArcFace paper's comparison), ``cosface`` (``m3 = 0.35``), ``arcface`` (``m2 = 0.5``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.faces.embedding import EmbeddingConfig, FaceEmbedder
from scaledet.losses.margin import MarginSoftmax, margin_logits

__all__ = ["LOSSES", "FaceRecognizer", "MarginRecipe", "load_face_embedder"]

LOSSES: dict[str, tuple[float, float, float]] = {
    "softmax": (1.0, 0.0, 0.0),
    "sphereface": (1.35, 0.0, 0.0),
    "cosface": (1.0, 0.0, 0.35),
    "arcface": (1.0, 0.5, 0.0),
}
"""Loss name -> the full margins ``(m1, m2, m3)`` of ``margin_logits``."""


@dataclass
class MarginRecipe:
    """The margin head and its schedule.

    Attributes:
        loss: one of ``LOSSES``.
        scale: the logit scale ``s`` (32 suits a few hundred identities; the papers use 64 with
            tens of thousands).
        margin: overrides the loss's margin (``m1`` for sphereface, ``m2`` radians for arcface,
            ``m3`` for cosface); None: the paper's.
        warmup: fraction of the run trained with no margin (plain normalised softmax).
        ramp: fraction of the run over which the margins then grow to their full values.
    """

    loss: str = "arcface"
    scale: float = 32.0
    margin: float | None = None
    warmup: float = 0.1
    ramp: float = 0.2

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if not (0 <= self.warmup <= 1 and 0 <= self.ramp <= 1):
            raise ValueError(f"warmup and ramp are fractions of the run in [0, 1], got "
                             f"{self.warmup} and {self.ramp}")
        if self.margin is not None and self.loss == "softmax":
            raise ValueError("the softmax loss has no margin to set")

    def margins(self) -> tuple[float, float, float]:
        """The full ``(m1, m2, m3)``."""
        m1, m2, m3 = LOSSES[self.loss]
        if self.margin is not None:
            if self.loss == "sphereface":
                m1 = self.margin
            elif self.loss == "arcface":
                m2 = self.margin
            else:
                m3 = self.margin
        return m1, m2, m3

    def factor(self, progress: float) -> float:
        """How much of the margin applies at ``progress`` (fraction of the run), in [0, 1]."""
        if progress < self.warmup:
            return 0.0
        if self.ramp <= 0:
            return 1.0
        return min(1.0, (progress - self.warmup) / self.ramp)


class FaceRecognizer(nn.Module):
    """Embedding network + margin head, trained as a classifier over ``num_identities``.

    Train mode, ``forward(images, targets)``: ``images`` ``(B, 3, S, S)`` uint8-range RGB,
    ``targets`` a list of dicts with ``"labels"`` (a one-element int64 tensor: the identity);
    returns ``{"loss": cross-entropy, "accuracy": top-1 on the margin logits' argmax, "margin":
    the schedule factor}``. Eval mode, ``forward(images)``: ``(B, D)`` L2-normalised
    embeddings. Only ``embedder`` is needed after training.
    """

    def __init__(self, num_identities: int, embedding: EmbeddingConfig | None = None,
                 recipe: MarginRecipe | None = None) -> None:
        super().__init__()
        self.embedder = FaceEmbedder(embedding)
        self.recipe = recipe or MarginRecipe()
        m1, m2, m3 = self.recipe.margins()
        self.head = MarginSoftmax(self.embedder.cfg.embedding_dim, num_identities,
                                  s=self.recipe.scale, m1=m1, m2=m2, m3=m3)
        self.progress: Callable[[], float] | None = None

    def margin_factor(self) -> float:
        return 1.0 if self.progress is None else self.recipe.factor(float(self.progress()))

    def forward(self, images: Tensor, targets: list[dict] | None = None):
        x = FaceEmbedder.normalize(images)
        if not self.training:
            return self.embedder(x)
        if targets is None:
            raise ValueError("FaceRecognizer needs targets (identity labels) in train mode")
        labels = torch.cat([t["labels"].reshape(-1)[:1] for t in targets]).long()
        cosine = self.head.cosine(self.embedder.features(x))
        k = self.margin_factor()
        m1, m2, m3 = self.recipe.margins()
        logits = margin_logits(cosine, labels, scale=self.recipe.scale, m1=1 + k * (m1 - 1),
                               m2=k * m2, m3=k * m3, fallback=self.head.fallback)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean().detach()
        return {"loss": loss, "accuracy": accuracy, "margin": torch.tensor(k)}

    def meta(self) -> dict:
        """JSON-safe description for checkpoints (rebuild with :func:`load_face_embedder`)."""
        return {"task": "face-recognition", "embedding": self.embedder.cfg.to_dict(),
                "recipe": asdict(self.recipe), "num_identities": self.head.weight.shape[0]}


def load_face_embedder(path: str | os.PathLike) -> FaceEmbedder:
    """The embedding network of a ``face-recognition`` checkpoint (``scaledet face train``), in
    eval mode; an error names the file when it is another kind of checkpoint."""
    from scaledet.models.checkpoint import load_weights

    state, meta = load_weights(path)
    if meta.get("task") != "face-recognition" or "embedding" not in meta:
        raise ValueError(f"{path}: not a face-recognition checkpoint (its metadata has task "
                         f"{meta.get('task')!r}); train one with `scaledet face train`")
    model = FaceEmbedder(EmbeddingConfig.from_dict(meta["embedding"]))
    prefix = "embedder."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: the weights do not fit the embedding network in its "
                         f"metadata (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
