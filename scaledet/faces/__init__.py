"""scaledet.faces: faces as a task of the toolbox; so far alignment and margin-softmax heads.

- ``similarity_transform(src, dst)``: the least-squares similarity between point sets
  (Umeyama), a ``(2, 3)`` matrix; ``align(image, landmarks, size=112)`` warps a face onto the
  five-point template ``ARCFACE_TEMPLATE_112`` and returns ``(crop, matrix)``
  (:mod:`scaledet.faces.align`).
- ``MarginSoftmax`` and the presets ``arcface``, ``cosface``, ``sphereface``; the functional
  ``margin_logits`` (:mod:`scaledet.faces.losses`).

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
from scaledet.faces.losses import (
    FALLBACKS,
    MarginSoftmax,
    arcface,
    cosface,
    margin_logits,
    sphereface,
)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "FALLBACKS",
    "MarginSoftmax",
    "align",
    "arcface",
    "cosface",
    "margin_logits",
    "similarity_transform",
    "sphereface",
    "warp_affine",
]
