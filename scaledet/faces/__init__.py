"""scaledet.faces: faces as a task of the toolbox: alignment, the embedding network, margin-softmax
heads and the verification protocol.

- ``similarity_transform(src, dst)``: the least-squares similarity between point sets
  (Umeyama), a ``(2, 3)`` matrix; ``align(image, landmarks, size=112)`` warps a face onto the
  five-point template ``ARCFACE_TEMPLATE_112`` and returns ``(crop, matrix)``
  (:mod:`scaledet.faces.align`).
- ``MarginSoftmax`` and the presets ``arcface``, ``cosface``, ``sphereface``; the functional
  ``margin_logits`` (re-exported from :mod:`scaledet.losses.margin`, their home).
- ``FaceEmbedder`` / ``EmbeddingConfig``: the MobileFaceNet-style embedding network for aligned
  crops (:mod:`scaledet.faces.embedding`).
- ``verification_accuracy(scores, same, folds=10)`` (the LFW protocol), ``roc_curve``,
  ``tar_at_far``, ``verification_report`` and the LFW ``pairs.txt`` reader ``read_pairs``
  (:mod:`scaledet.faces.verification`, numpy only).

Layer: ``faces`` sits with ``models`` (layer 3 in ``scaledet``'s list, ``"faces": 2`` in
``tests/test_layers.py``). It may import ``ops``, ``nn``, ``losses`` and ``models`` (its
recognition network and face detector will be built from their parts) and is imported by
``data`` (synthetic faces, landmark formats), ``evaluation`` (verification), ``engine``
(training) and ``inference`` (detect, align, embed), which all need alignment and the heads.
It does not import ``data``: images come in as the ``(H, W, 3)`` uint8 RGB arrays that
``scaledet.data.read_image`` returns.
"""

from __future__ import annotations

from scaledet.faces.align import ARCFACE_TEMPLATE_112, align, similarity_transform, warp_affine
from scaledet.faces.embedding import EmbeddingConfig, FaceEmbedder
from scaledet.faces.losses import (
    FALLBACKS,
    MarginSoftmax,
    arcface,
    cosface,
    margin_logits,
    sphereface,
)
from scaledet.faces.verification import (
    FaceVerification,
    Pair,
    PairsFile,
    TarAtFar,
    VerificationResult,
    cosine_scores,
    read_pairs,
    roc_curve,
    tar_at_far,
    verification_accuracy,
    verification_report,
)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "FALLBACKS",
    "EmbeddingConfig",
    "FaceEmbedder",
    "FaceVerification",
    "MarginSoftmax",
    "Pair",
    "PairsFile",
    "TarAtFar",
    "VerificationResult",
    "align",
    "arcface",
    "cosface",
    "cosine_scores",
    "margin_logits",
    "read_pairs",
    "roc_curve",
    "similarity_transform",
    "sphereface",
    "tar_at_far",
    "verification_accuracy",
    "verification_report",
    "warp_affine",
]
