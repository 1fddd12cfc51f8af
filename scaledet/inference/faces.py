"""Faces in unaligned photos: detect, align, embed, and verify LFW pairs end to end.

    pipe = FacePipeline("face_det.safetensors", "embedder.safetensors")
    found = pipe.embed("photo.jpg")          # None when no usable face is found
    if found is not None:
        embedding, landmarks, box = found    # (D,) unit norm, (5, 2) and (4,) xyxy image pixels
    pipe.timings.medians()                   # {"detect": ms, "align": ms, "embed": ms} per face

Stages, one face at a time (batch 1, the latency a camera or a login sees):

1. **detect**: the face detector (a ``face-n`` checkpoint of ``scaledet train``, or any
   detector whose predictions carry five landmarks per box) through
   :class:`~scaledet.inference.predictor.Predictor`; boxes below ``conf`` are dropped.
2. **pick** one face: ``pick="score"`` the most confident detection (the default: on a photo
   of one person the detector's best guess), ``pick="largest"`` the largest box (LFW's
   convention of the central, dominant face when bystanders are sharper).
3. **align**: :func:`scaledet.faces.align` onto the five-point template at ``align_size``
   (112, the template's own side), then resized bilinearly to the embedder's input side, as
   ``scaledet face train`` resizes the aligned crops it reads (``engine.face_fit.load_crops``).
4. **embed**: the :class:`~scaledet.faces.embedding.FaceEmbedder` of a ``scaledet face train``
   checkpoint, L2-normalised.

A photo fails when nothing scores ``>= conf`` or when the picked face's landmarks cannot be
aligned (coincident or mirrored points); :meth:`FacePipeline.embed` then returns None and
:attr:`FacePipeline.last_failure` says why. :func:`verify_pairs` scores an LFW ``pairs.txt``
on such photos and gives every pair with a failed image the lowest cosine similarity,
``MIN_SCORE = -1``: a matched pair is then always rejected (counted wrong, LFW's rule for a
failed detection), a mismatched pair rejected like any other "no match".

Layer: ``inference`` (5). The pipeline needs the predictor (this layer) besides alignment and
the embedding network (``faces``, layer 2), so it cannot live in ``scaledet.faces``; it imports
``faces``, ``data`` (image reading), ``models`` and ``inference``, never ``engine``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scaledet.data.images import read_image
from scaledet.faces.align import align
from scaledet.faces.embedding import FaceEmbedder
from scaledet.faces.verification import FaceVerification, read_pairs, verification_report

__all__ = ["MIN_SCORE", "PICKS", "FaceEmbedding", "FacePipeline", "FaceTimings",
           "PipelineVerification", "verify_pairs"]

PICKS = ("score", "largest")
"""How :class:`FacePipeline` picks the face of a photo: highest score or largest box."""
MIN_SCORE = -1.0
"""The score of a pair with an image where no face was found: the lowest cosine similarity."""
NUM_LANDMARKS = 5

Detector = Callable[[np.ndarray], dict[str, Tensor]]
"""``(H, W, 3)`` uint8 RGB -> ``{"boxes" (K, 4) xyxy px, "scores" (K,), "keypoints" (K, 5, 3+)}``
(x, y image pixels first in each keypoint row)."""


class FaceEmbedding(NamedTuple):
    """One photo's face: ``embedding`` ``(D,)`` float32 unit norm, ``landmarks`` ``(5, 2)``
    float64 and ``box`` ``(4,)`` float64 xyxy, both in pixels of the photo (pixel centres at
    integers)."""

    embedding: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray


@dataclass
class FaceTimings:
    """Wall-clock milliseconds of every call to each stage (``detect`` per photo, ``align`` and
    ``embed`` per face that reached them)."""

    detect: list[float] = field(default_factory=list)
    align: list[float] = field(default_factory=list)
    embed: list[float] = field(default_factory=list)

    def medians(self) -> dict[str, float | None]:
        """``{"detect", "align", "embed", "total"}`` median ms (``total``: the sum of the three
        medians); None for a stage that never ran."""
        out: dict[str, float | None] = {k: statistics.median(v) if v else None
                                        for k, v in (("detect", self.detect),
                                                     ("align", self.align),
                                                     ("embed", self.embed))}
        parts = [v for v in out.values() if v is not None]
        out["total"] = sum(parts) if len(parts) == 3 else None
        return out

    def clear(self) -> None:
        self.detect.clear()
        self.align.clear()
        self.embed.clear()


class FacePipeline:
    """Detector + alignment + embedder (see the module docstring).

    Args:
        detector_weights: a face detector checkpoint with five landmarks per box (``face-n``).
        embedder_weights: a ``scaledet face train`` checkpoint.
        device: "cpu", "cuda", "cuda:N" (both networks).
        conf: minimum detection score of a face, in ``[0, 1)``.
        pick: ``"score"`` (highest score) or ``"largest"`` (largest box area).
        align_size: side of the aligned crop before it is resized to the embedder's input.
        imgsz: detector input side (default: the checkpoint's training size).
    """

    def __init__(self, detector_weights: str | os.PathLike, embedder_weights: str | os.PathLike,
                 *, device: str = "cpu", conf: float = 0.3, pick: str = "score",
                 align_size: int = 112, imgsz: int | None = None) -> None:
        from scaledet.faces.recognizer import load_face_embedder
        from scaledet.inference.predictor import Predictor

        predictor = Predictor(detector_weights, device=device, conf=conf, imgsz=imgsz,
                              batch_size=1)
        names = predictor.meta.get("keypoint_names") or []
        if len(names) != NUM_LANDMARKS:
            what = predictor.meta.get("model") or "unknown model"
            raise ValueError(f"{detector_weights}: a detector without five face landmarks per "
                             f"box ({what}, keypoints {names or 'none'}); give a face-n "
                             "checkpoint (scaledet train --model face-n on face data)")
        embedder = load_face_embedder(embedder_weights).to(predictor.device)
        self._setup(_predictor_detector(predictor), embedder, pick, align_size)
        self.predictor = predictor

    @classmethod
    def from_models(cls, detector: Detector, embedder: FaceEmbedder, *, pick: str = "score",
                    align_size: int = 112) -> FacePipeline:
        """Around in-memory parts: ``detector`` is a callable (see ``Detector``) or a
        :class:`~scaledet.inference.predictor.Predictor` of a detector with landmarks."""
        from scaledet.inference.predictor import Predictor

        self = cls.__new__(cls)
        if isinstance(detector, Predictor):
            self.predictor = detector
            detector = _predictor_detector(detector)
        self._setup(detector, embedder.eval(), pick, align_size)
        return self

    def _setup(self, detector: Detector, embedder: FaceEmbedder, pick: str,
               align_size: int) -> None:
        if pick not in PICKS:
            raise ValueError(f"pick must be one of {', '.join(PICKS)}, got {pick!r}")
        if align_size < 16:
            raise ValueError(f"align_size must be at least 16 px, got {align_size}")
        self.detector, self.embedder = detector, embedder
        self.pick, self.align_size = pick, int(align_size)
        self.timings = FaceTimings()
        self.last_failure: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.embedder.parameters()).device

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The picked face of ``image`` (``(H, W, 3)`` uint8 RGB): ``(box (4,) xyxy,
        landmarks (5, 2))`` image pixels, or None (and ``last_failure``) when no face scores
        ``>= conf``. Timed as ``detect``."""
        start = time.perf_counter()
        det = self.detector(image)
        self.timings.detect.append(1000 * (time.perf_counter() - start))
        if "keypoints" not in det:
            raise ValueError("the detector gives no landmarks (no 'keypoints' in its "
                             "predictions); use a face-n checkpoint")
        boxes = det["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
        if not len(boxes):
            self.last_failure = "no face detected"
            return None
        if self.pick == "largest":
            area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
            i = int(np.argmax(area))
        else:
            i = int(torch.argmax(det["scores"].detach().cpu()))
        landmarks = det["keypoints"][i, :, :2].detach().cpu().double().numpy()
        return boxes[i], landmarks

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
        """The aligned crop ``(S, S, 3)`` uint8 at the embedder's input side ``S``, or None
        (and ``last_failure``) when the landmarks cannot be aligned. Timed as ``align``."""
        start = time.perf_counter()
        try:
            crop, _ = align(image, landmarks, size=self.align_size)
        except ValueError as e:
            self.last_failure = f"landmarks not alignable: {e}"
            return None
        size = self.embedder.cfg.input_size
        if crop.shape[0] != size:
            crop = np.array(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
        self.timings.align.append(1000 * (time.perf_counter() - start))
        return crop

    @torch.no_grad()
    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """``(B, S, S, 3)`` uint8 aligned crops -> ``(B, D)`` float32 unit-norm embeddings."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).to(self.device)
        return self.embedder(FaceEmbedder.normalize(x)).float().cpu().numpy()

    def embed(self, image: np.ndarray | str | os.PathLike) -> FaceEmbedding | None:
        """Detect, align and embed the picked face of one photo (a path or ``(H, W, 3)`` uint8
        RGB); None when it fails (``last_failure`` says why)."""
        self.last_failure = None
        if not isinstance(image, np.ndarray):
            image = read_image(image)
        found = self.detect(image)
        if found is None:
            return None
        box, landmarks = found
        crop = self.align(image, landmarks)
        if crop is None:
            return None
        start = time.perf_counter()
        embedding = self.embed_crops(crop[None])[0]
        self.timings.embed.append(1000 * (time.perf_counter() - start))
        return FaceEmbedding(embedding, landmarks, box)


def _predictor_detector(predictor: Any) -> Detector:
    """A Predictor as a ``Detector``: one image in, its detections dict out."""

    def detect(image: np.ndarray) -> dict[str, Tensor]:
        return predictor.predict(image)[0]

    return detect


@dataclass
class PipelineVerification:
    """:func:`verify_pairs`'s result.

    Attributes:
        report: the protocol's numbers on every pair (failed ones scored ``MIN_SCORE``).
        scores: ``(N,)`` cosine similarity per pair, in file order.
        same: ``(N,)`` bool, matched pairs.
        failures: image file -> why no face came out of it (sorted by file).
        failed_pairs: pairs with at least one failed image.
        latency_ms: :meth:`FaceTimings.medians` over the unique images.
        images: unique images of the pairs.
    """

    report: FaceVerification
    scores: np.ndarray
    same: np.ndarray
    failures: dict[str, str]
    failed_pairs: int
    latency_ms: dict[str, float | None]
    images: int


def verify_pairs(pipeline: FacePipeline, pairs: str | os.PathLike, root: str | os.PathLike,
                 folds: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> PipelineVerification:
    """Score every pair of an LFW ``pairs`` file on the (unaligned) photos under ``root``
    (``ROOT/NAME/NAME_NNNN.{jpg,png,jpeg}``) through ``pipeline``, each unique photo once.

    A pair with a photo where no face was found scores ``MIN_SCORE``; such photos are listed in
    ``failures``, never raised. ``folds``: the file's folds (None), or another count.
    ``progress(done, total)`` is called after every photo."""
    pf = read_pairs(pairs)
    paths = pf.image_paths(root)
    unique = sorted({p for pair in paths for p in pair})
    pipeline.timings.clear()
    embeddings: dict[Path, np.ndarray] = {}
    failures: dict[str, str] = {}
    for k, path in enumerate(unique):
        found = pipeline.embed(path)
        if found is None:
            failures[str(path)] = pipeline.last_failure or "no face"
        else:
            embeddings[path] = found.embedding
        if progress is not None:
            progress(k + 1, len(unique))
    scores = np.full(len(paths), MIN_SCORE)
    for i, (a, b) in enumerate(paths):
        if a in embeddings and b in embeddings:
            scores[i] = float(np.clip(np.dot(embeddings[a], embeddings[b]), -1.0, 1.0))
    failed_pairs = sum(1 for a, b in paths if a not in embeddings or b not in embeddings)
    same = pf.same
    n_folds = folds if folds is not None else (pf.folds if pf.folds >= 2 else 10)
    report = verification_report(scores, same, folds=min(n_folds, len(scores)))
    return PipelineVerification(report, scores, same, failures, failed_pairs,
                                pipeline.timings.medians(), len(unique))
