"""Margin-softmax heads for face recognition: SphereFace, CosFace, ArcFace and their combined
form, as logits for ``torch.nn.functional.cross_entropy``.

A recognition network is trained as a classifier over the training identities, but used as an
embedding: two faces are the same person when their embeddings are close in angle. Plain
softmax only asks the true class to win; it leaves identities separated by thin boundaries, so
unseen faces of one person scatter across them. The margin methods work on the sphere
(embeddings ``x`` and class weights ``W_j`` L2-normalised, so the logit is ``cos θ_j``, the
cosine of the angle between them), multiply every logit by a scale ``s`` (without it the
softmax of values in [-1, 1] cannot get confident), and make the *target* class harder to win:

- SphereFace (Liu et al., CVPR 2017): ``cos(m1·θ)``, a multiplicative angular margin;
- ArcFace (Deng et al., CVPR 2019): ``cos(θ + m2)``, an additive angular margin;
- CosFace / AM-Softmax (Wang et al., CVPR 2018): ``cos θ − m3``, an additive cosine margin;
- the combined margin of the ArcFace paper: ``cos(m1·θ + m2) − m3`` on the target class,
  plain ``cos θ`` on every other class, all times ``s``.

So the target must win by an angle (or a cosine) of at least the margin, which packs each
identity into a tighter cone and leaves gaps between them.

Numerical care: ``θ = acos(cos θ)`` with ``cos θ`` clamped to ``[-1 + eps, 1 - eps]`` (acos has
an infinite slope at ±1: unclamped, a perfectly aligned embedding would give a NaN gradient);
the margin is computed in at least float32 (autocast-safe); and where ``m1·θ + m2`` passes π,
``cos(m1·θ + m2)`` would start to *increase* again (a wrong-way gradient that rewards moving
away from the class), so it is replaced by a fallback, ``fallback=`` one of

- ``"monotonic"``: SphereFace's extension ``ψ(θ) = (−1)^k cos(m1·θ + m2) − 2k`` with
  ``k = floor((m1·θ + m2) / π)``: continuous, decreasing in θ over all of [0, π], and equal to
  ``cos(m1·θ + m2)`` wherever ``m1·θ + m2 <= π``. Defined for every margin.
- ``"threshold"``: ArcFace's fallback as InsightFace implements it (``easy_margin=False``):
  beyond ``θ > π − m2``, ``cos θ − m2·sin m2`` (the additive margin linearised at the threshold,
  a CosFace-like penalty). ``m1 = 1`` only.
- ``"easy"``: ArcFace's "easy margin": the angular margin only where ``cos θ > 0``, plain
  ``cos θ`` elsewhere (easier early in training, weaker). ``m1 = 1`` only.

The default (``None``) is ``"threshold"`` when ``m1 = 1`` (ArcFace as published and trained by
InsightFace) and ``"monotonic"`` otherwise (SphereFace's own choice; the others are not
defined for a multiplicative margin). ``m3`` is subtracted after the fallback in every case.

With ``m1 = 1`` and ``m2 = 0`` no angle is computed at all, so ``m1 = 1, m2 = m3 = 0`` gives
exactly ``s·cos θ`` (normalised softmax) and CosFace is exact. Here SphereFace works on
normalised embeddings with a fixed scale, as in the ArcFace paper's comparison (the original
multiplies by the embedding norm and needs the annealing ``(λ cos θ + ψ(θ)) / (1 + λ)`` to
converge with ``m1 = 4``; that blending is not done here).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FALLBACKS", "MarginSoftmax", "arcface", "cosface", "margin_logits", "sphereface"]

FALLBACKS = ("monotonic", "threshold", "easy")

EPS = 1e-7  # cos θ is clamped to [-1 + EPS, 1 - EPS] before acos (representable in float32)


def _check_margins(scale: float, m1: float, m2: float, m3: float,
                   fallback: str | None) -> str:
    """Validate the margin settings; return the fallback to use (``None`` resolved)."""
    for name, value in (("scale", scale), ("m1", m1), ("m2", m2), ("m3", m3)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if m1 <= 0:
        raise ValueError(f"m1 (multiplicative angular margin) must be positive, got {m1}")
    if m2 < 0:
        raise ValueError(f"m2 (additive angular margin, radians) must be >= 0, got {m2}")
    if fallback is None:
        return "threshold" if m1 == 1 else "monotonic"
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS} or None, got {fallback!r}")
    if fallback != "monotonic" and m1 != 1:
        raise ValueError(f"fallback={fallback!r} is ArcFace's and needs m1 = 1, got m1={m1}; "
                         "use 'monotonic' with a multiplicative margin")
    return fallback


def _target_margin(cos: Tensor, m1: float, m2: float, m3: float, fallback: str) -> Tensor:
    """``ψ(θ) − m3`` for the target cosines ``cos`` (any shape, float32 or float64)."""
    if m1 == 1 and m2 == 0:  # no angular margin: exact, and no acos to lose precision
        return cos - m3
    theta = torch.acos(cos.clamp(-1 + EPS, 1 - EPS))
    phi = m1 * theta + m2
    if fallback == "monotonic":
        k = torch.floor(phi.detach() / math.pi)
        psi = (1 - 2 * torch.remainder(k, 2)) * torch.cos(phi) - 2 * k
    elif fallback == "threshold":
        psi = torch.where(phi <= math.pi, torch.cos(phi), cos - m2 * math.sin(m2))
    else:  # easy
        psi = torch.where(cos > 0, torch.cos(phi), cos)
    return psi - m3


def margin_logits(cosine: Tensor, labels: Tensor, *, scale: float = 64.0, m1: float = 1.0,
                  m2: float = 0.5, m3: float = 0.0, fallback: str | None = None) -> Tensor:
    """Combined-margin logits ``s·(cos(m1·θ + m2) − m3)`` on the target class, ``s·cos θ``
    elsewhere (see the module docstring for the margins and the fallback beyond π).

    Args:
        cosine: ``(N, C)`` cosines between L2-normalised embeddings and class weights, in
            [-1, 1] (values slightly outside, from rounding, are clamped for the angle).
        labels: ``(N,)`` int64 target class of each row, in ``[0, C)``.
        scale: ``s``, the logit scale (64 in the ArcFace and CosFace papers).
        m1: SphereFace's multiplicative angular margin (1 = none).
        m2: ArcFace's additive angular margin in radians (0 = none).
        m3: CosFace's additive cosine margin (0 = none).
        fallback: ``"monotonic"``, ``"threshold"``, ``"easy"`` or ``None`` (auto).

    Returns:
        ``(N, C)`` logits for ``F.cross_entropy(logits, labels)``, in
        ``promote_types(cosine.dtype, float32)``.
    """
    fallback = _check_margins(scale, m1, m2, m3, fallback)
    if not isinstance(cosine, Tensor) or cosine.ndim != 2:
        raise ValueError(f"cosine must be an (N, C) tensor, got "
                         f"{tuple(getattr(cosine, 'shape', ())) or type(cosine).__name__}")
    if not isinstance(labels, Tensor) or labels.shape != cosine.shape[:1] \
            or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be an integer ({cosine.shape[0]},) tensor, got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= cosine.shape[1]):
        raise ValueError(f"labels must be in [0, {cosine.shape[1]}), got values from "
                         f"{int(labels.min())} to {int(labels.max())}")
    cos = cosine.to(torch.promote_types(cosine.dtype, torch.float32))
    index = labels.long()[:, None]
    target = _target_margin(cos.gather(1, index), m1, m2, m3, fallback)
    return scale * cos.scatter(1, index, target)


class MarginSoftmax(nn.Module):
    """Class weights and the combined margin: embeddings to margin logits.

    ``forward(embeddings, labels)`` normalises both the ``(N, D)`` embeddings and the
    ``(num_classes, D)`` weights, takes their cosines and applies ``margin_logits``; train with
    ``F.cross_entropy(head(x, y), y)``. The weights are the training identities' centres on the
    sphere and are thrown away after training (only the embedding network is kept).

    Args:
        embedding_dim: ``D``.
        num_classes: number of training identities.
        s: logit scale.
        m1, m2, m3: the margins (see ``margin_logits``); the defaults are ArcFace's.
        fallback: beyond-π fallback (see the module docstring); ``None`` = auto.
    """

    def __init__(self, embedding_dim: int, num_classes: int, *, s: float = 64.0,
                 m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 fallback: str | None = None) -> None:
        super().__init__()
        if embedding_dim <= 0 or num_classes <= 0:
            raise ValueError(f"embedding_dim and num_classes must be positive, got "
                             f"{embedding_dim} and {num_classes}")
        self.fallback = _check_margins(s, m1, m2, m3, fallback)
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # only directions matter (the weights are normalised); normal is uniform on the sphere
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: Tensor) -> Tensor:
        """``(N, D)`` embeddings to ``(N, num_classes)`` cosines with the class weights
        (computed in at least float32)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.weight.shape[1]:
            raise ValueError(f"embeddings must be (N, {self.weight.shape[1]}), got "
                             f"{tuple(embeddings.shape)}")
        work = torch.promote_types(torch.promote_types(embeddings.dtype, self.weight.dtype),
                                   torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):  # autocast would take bf16
            return F.linear(F.normalize(embeddings.to(work), dim=1),
                            F.normalize(self.weight.to(work), dim=1))

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """``(N, D)`` embeddings and ``(N,)`` int64 labels to ``(N, num_classes)`` logits;
        without labels the plain ``s·cos θ`` (no class is the target: for evaluation)."""
        cosine = self.cosine(embeddings)
        if labels is None:
            return self.s * cosine
        return margin_logits(cosine, labels, scale=self.s, m1=self.m1, m2=self.m2, m3=self.m3,
                             fallback=self.fallback)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.weight.shape[1]}, num_classes={self.weight.shape[0]}, "
                f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}, "
                f"fallback={self.fallback!r}")


def arcface(embedding_dim: int, num_classes: int, *, s: float = 64.0, m: float = 0.5,
            fallback: str | None = "threshold") -> MarginSoftmax:
    """ArcFace: additive angular margin ``cos(θ + m)`` (Deng et al. 2019; s = 64, m = 0.5),
    with InsightFace's threshold fallback beyond ``θ > π − m``."""
    return MarginSoftmax(embedding_dim, num_classes, s=s, m1=1.0, m2=m, m3=0.0,
                         fallback=fallback)


def cosface(embedding_dim: int, num_classes: int, *, s: float = 64.0,
            m: float = 0.35) -> MarginSoftmax:
    """CosFace / AM-Softmax: additive cosine margin ``cos θ − m`` (Wang et al. 2018; s = 64,
    m = 0.35). No angle is computed, so no fallback is needed."""
    return MarginSoftmax(embedding_dim, num_classes, s=s, m1=1.0, m2=0.0, m3=m)


def sphereface(embedding_dim: int, num_classes: int, *, s: float = 64.0,
               m: float = 1.35) -> MarginSoftmax:
    """SphereFace: multiplicative angular margin ``cos(m·θ)`` with its monotonic extension
    ``ψ(θ)`` (Liu et al. 2017), on normalised embeddings with scale ``s``. ``m = 1.35`` is the
    ArcFace paper's setting for this normalised form (trainable without annealing); the
    original paper's ``m = 4`` needs its softmax annealing, not done here."""
    return MarginSoftmax(embedding_dim, num_classes, s=s, m1=m, m2=0.0, m3=0.0,
                         fallback="monotonic")
