"""Run a trained detector on images: the ``Predictor`` behind ``scaledet.load`` and
``scaledet predict``.

    predictor = scaledet.load("runs/train/weights/best.safetensors", conf=0.25)
    results = predictor(["a.jpg", pil_image, hwc_array, chw_tensor])   # any sizes, mixed
    r = results[0]
    r.boxes, r.scores, r.labels, r.class_names      # (K, 4) xyxy original pixels, (K,), (K,)
    r.to_coco(image_id=1); r.to_dict(); r.plot("annotated.jpg")
    posed = scaledet.load("det.safetensors", pose_weights="pose.safetensors")
    posed("a.jpg")[0].keypoints                     # (K, J, 3) x, y original pixels, score
    results = predictor("shots/")                   # a folder's images, or "shots/*.jpg"
    for r in predictor.stream("huge_folder/"):      # lazily, a batch at a time
        ...

Pre-processing is the evaluation letterbox of ``scaledet.data`` (longer side -> ``imgsz``, pad
bottom/right to ``imgsz x imgsz``), so predictions match what ``scaledet val`` scores. Every image
of a batch is letterboxed to the same square on its own, so a result does not depend on the other
images of the batch. Scale tools: ``tta=TTA(...)`` (image pyramid + flip, merged by WBF or NMS,
see :mod:`scaledet.inference.tta`) and ``slicing=Slicing(...)`` (tiles over large images, see
:mod:`scaledet.inference.slicing`). With a pose model (``pose_weights``), the detected people are
then cropped from the original image and their joints added to each result
(:mod:`scaledet.inference.pose`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from scaledet.inference.inputs import InputImage, as_images, iter_images
from scaledet.inference.results import Result, to_coco_results
from scaledet.models.sizes import check_imgsz, model_stride
from scaledet.ops.boxes import to_original_pixels
from scaledet.ops.device import resolve_device
from scaledet.plots.draw import draw_detections, save_annotated  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from scaledet.inference.pose import PoseEstimator
    from scaledet.inference.slicing import Slicing
    from scaledet.inference.tta import TTA

Detections = dict[str, Tensor]

# Post-processing fields with a keyword (and predict option) of their own: not model_options.
_OWN_OPTIONS = {"postprocess.score_thresh": "conf (--conf)", "postprocess.nms": "nms (--nms)",
                "postprocess.nms_iou": "iou (--iou)", "postprocess.max_det": "max_det (--max-det)"}


class Predictor:
    """A detector loaded from a scaledet checkpoint, ready for inference.

    Args:
        weights: ``.safetensors`` checkpoint written by ``scaledet train``.
        device: "cpu", "cuda", "cuda:N".
        conf: minimum score of a returned detection, in ``[0, 1)``.
        imgsz: input side in pixels (default: the training image size); a positive multiple
            of the model's largest stride, other sizes are rounded up with a note on stderr
            (:func:`~scaledet.models.sizes.check_imgsz`).
        batch_size: images per forward pass.
        nms: NMS variant of the model's post-processing and of TTA / tile merging:
            ``"hard"``, ``"soft-linear"``, ``"soft-gaussian"`` or ``"diou"`` (default: the
            checkpoint's).
        iou: NMS IoU threshold (default: the checkpoint's).
        max_det: detections kept per image (default: the checkpoint's, 100).
        tta: :class:`~scaledet.inference.tta.TTA` test-time augmentation, or None.
        slicing: :class:`~scaledet.inference.slicing.Slicing` sliced inference, or None.
        pose_weights: a pose checkpoint (``task: "pose"``): every result also carries
            ``keypoints`` of the posed boxes (:mod:`scaledet.inference.pose`).
        pose_classes: the detector classes that get a pose (default: ``"person"`` when the
            detector has that class, else every box; a note on stderr says which).
        model_options: inference options of the model's config by dotted name, e.g.
            ``{"head.steps": 4, "head.num_boxes": 300, "head.seed": 1}`` for DiffusionDet
            (``scaledet predict --set``; :func:`~scaledet.models.options.set_inference_options`
            lists the valid names in its error); the post-processing fields that have their
            own keyword here (``conf``, ``nms``, ``iou``, ``max_det``) are set with those.

    Calling it (``predictor(images)``) returns a list of :class:`Result`, one per image, for
    any mix of images, files, folders and glob patterns; ``predictor.stream(images)`` takes
    the same and yields the results lazily, a batch at a time, for folders of any size.
    """

    def __init__(self, weights: str | os.PathLike, device: str = "cpu", conf: float = 0.25,
                 imgsz: int | None = None, batch_size: int = 8, *, nms: str | None = None,
                 iou: float | None = None, max_det: int | None = None, tta: TTA | None = None,
                 slicing: Slicing | None = None, pose_weights: str | os.PathLike | None = None,
                 pose_classes: Sequence[str] | None = None,
                 model_options: dict[str, Any] | None = None) -> None:
        from scaledet.models.checkpoint import model_from_weights, read_meta

        dev = resolve_device(device)
        if read_meta(weights).get("task") == "pose":
            raise ValueError(f"{weights}: a pose model's checkpoint, which runs on person crops; "
                             "give a detector's checkpoint as the weights and this one as "
                             "pose_weights (--pose-weights)")
        model, meta = model_from_weights(weights, dev)
        model.fuse()  # our own copy: fold BatchNorm into the convs
        n = int(meta.get("model_config", {}).get("num_classes", 0) or 0)
        names = list(meta.get("class_names") or [str(i) for i in range(n)])
        self._setup(model, meta, names, meta.get("category_ids"), dev, conf,
                    imgsz if imgsz is not None else int(meta.get("imgsz", 320)), batch_size,
                    nms, iou, max_det, tta, slicing, _load_pose(pose_weights, dev, batch_size),
                    pose_classes, model_options)

    @classmethod
    def from_model(cls, model: nn.Module, class_names: Sequence[str], *, imgsz: int = 320,
                   device: str = "cpu", conf: float = 0.25, batch_size: int = 8,
                   category_ids: Sequence[int] | None = None, nms: str | None = None,
                   iou: float | None = None, max_det: int | None = None,
                   tta: TTA | None = None, slicing: Slicing | None = None,
                   pose: PoseEstimator | None = None,
                   pose_weights: str | os.PathLike | None = None,
                   pose_classes: Sequence[str] | None = None,
                   model_options: dict[str, Any] | None = None) -> Predictor:
        """A predictor around an in-memory model (put in eval mode); options as above, and
        ``category_ids`` (COCO id of each class index, default ``1..C``); ``pose``: an
        in-memory :class:`~scaledet.inference.pose.PoseEstimator` (or ``pose_weights``)."""
        self = cls.__new__(cls)
        dev = torch.device(device)
        if pose is None:
            pose = _load_pose(pose_weights, dev, batch_size)
        elif pose_weights is not None:
            raise ValueError("pose and pose_weights: give one")
        self._setup(model.to(dev).eval(), {}, list(class_names), category_ids, dev, conf,
                    imgsz, batch_size, nms, iou, max_det, tta, slicing, pose, pose_classes,
                    model_options)
        return self

    def _setup(self, model: nn.Module, meta: dict, names: list[str], category_ids, device,
               conf: float, imgsz: int, batch_size: int, nms: str | None, iou: float | None,
               max_det: int | None, tta: TTA | None, slicing: Slicing | None,
               pose: PoseEstimator | None = None,
               pose_classes: Sequence[str] | None = None,
               model_options: dict[str, Any] | None = None) -> None:
        if not 0.0 <= conf < 1.0:
            raise ValueError(f"conf must be in [0, 1), got {conf}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        imgsz, note = check_imgsz(imgsz, model_stride(model))
        if note:
            print(note, file=sys.stderr)
        if tta is not None and slicing is not None:
            raise ValueError("tta and slicing cannot be combined; choose one")
        self.model, self.meta, self.device = model, meta, device
        self.class_names: list[str] = names
        self.category_ids: list[int] = list(category_ids or range(1, len(names) + 1))
        self.conf, self.imgsz, self.batch_size = conf, imgsz, batch_size
        self.tta, self.slicing = tta, slicing
        settings = {"score_thresh": conf, "nms": nms, "nms_iou": iou, "max_det": max_det}
        if model_options:
            from scaledet.models.options import set_inference_options

            for key in model_options:
                if key in _OWN_OPTIONS:
                    raise ValueError(f"model_options (--set) {key}: set it with the "
                                     f"predictor's own option {_OWN_OPTIONS[key]}")
            set_inference_options(model, model_options, "model_options (--set)")
        for name, value in settings.items():
            if value is not None and hasattr(model, name):
                setattr(model, name, value)
        if hasattr(model, "postprocess"):
            model.postprocess.validate()
        self.nms: str = getattr(model, "nms", nms or "hard")
        self.iou: float = float(getattr(model, "nms_iou", iou or 0.6))
        self.max_det: int = int(getattr(model, "max_det", max_det or 100))
        self.pose = pose
        self.pose_labels: list[int] | None = None  # detector classes posed; None: every box
        if pose is not None:
            from scaledet.inference.pose import pose_labels

            self.pose_labels, pose_note = pose_labels(names, pose_classes)
            print(pose_note, file=sys.stderr)
        elif pose_classes:
            raise ValueError("pose_classes (--pose-classes) needs a pose model (pose_weights)")

    # ---- the user-facing call ---------------------------------------------------------------

    def __call__(self, images) -> list[Result]:
        """Detect objects in one image or many (paths, folders, glob patterns such as
        ``"shots/*.jpg"``, PIL images, numpy HWC arrays, CHW tensors; see
        :mod:`scaledet.inference.inputs`). Returns one :class:`Result` per image, in input
        order (a folder's or pattern's files sorted), boxes in original-image pixels.

        Every result, with its decoded image, is held until the call returns: over a big
        folder use :meth:`stream`. An unreadable file raises ``ValueError`` naming it."""
        inputs = as_images(images)
        return self._results(inputs)

    def stream(self, images) -> Iterator[Result]:
        """:meth:`__call__` lazily: yields the results one by one while reading and running
        ``batch_size`` images at a time, so memory does not grow with the number of images.
        Takes what ``__call__`` takes, and any iterator of it. An unreadable file raises
        ``ValueError`` naming it when reached (``scaledet predict`` lists and skips them)."""
        batch: list[InputImage] = []
        for image in iter_images(images):
            batch.append(image)
            if len(batch) == self.batch_size:
                yield from self._results(batch)
                batch = []
        if batch:
            yield from self._results(batch)

    def _results(self, inputs: list[InputImage]) -> list[Result]:
        dets = self._infer([im.image for im in inputs])
        return [self.result(self._add_keypoints(d, im.image), im) for d, im in zip(dets, inputs)]

    def result(self, det: Detections, image: InputImage) -> Result:
        """Wrap one image's detections dict as a :class:`Result`."""
        pose = self.pose
        names = pose.keypoint_names if pose is not None else self.meta.get("keypoint_names")
        skeleton = pose.skeleton if pose is not None else self.meta.get("skeleton")
        return Result(det["boxes"], det["scores"], det["labels"], self.class_names, image.size,
                      image.path, self.category_ids, image.image, det.get("keypoints"),
                      names, skeleton)

    def _add_keypoints(self, det: Detections, image: Tensor) -> Detections:
        """With a pose model: ``det["keypoints"]`` ``(K, J, 3)`` (x, y original pixels, score)
        for the boxes of the posed classes, NaN rows for the others."""
        if self.pose is None:
            return det
        k = self.pose.num_keypoints
        posed = torch.ones(len(det["labels"]), dtype=torch.bool)
        if self.pose_labels is not None:
            posed = torch.isin(det["labels"], torch.tensor(self.pose_labels))
        keypoints = torch.full((len(posed), k, 3), float("nan"))
        if posed.any():
            keypoints[posed] = self.pose(image, det["boxes"][posed])
        return {**det, "keypoints": keypoints}

    def predict(self, images) -> list[Detections]:
        """Like ``__call__`` but returns plain dicts: ``"boxes"`` ``(K, 4)`` float32 xyxy
        original-image pixels, ``"scores"`` ``(K,)``, ``"labels"`` ``(K,)`` int64 class
        indices, sorted by score; with a pose model also ``"keypoints"`` ``(K, J, 3)`` (NaN
        rows for boxes not posed)."""
        inputs = [im.image for im in as_images(images)]
        return [self._add_keypoints(d, im) for d, im in zip(self._infer(inputs), inputs)]

    def predict_files(self, paths: Sequence[str | os.PathLike]) -> list[Detections]:
        """``predict`` on image files (EXIF orientation applied), one file at a time."""
        return [self.predict(Path(p))[0] for p in paths]

    def to_coco_results(self, det: Detections, image_id: int) -> list[dict[str, Any]]:
        """COCO results entries ``{image_id, category_id, bbox [x, y, w, h], score}``."""
        return to_coco_results(det, image_id, self.category_ids)

    # ---- inference --------------------------------------------------------------------------

    def _infer(self, images: list[Tensor]) -> list[Detections]:
        if self.slicing is not None:
            from scaledet.inference.slicing import sliced_detect

            return [sliced_detect(self, im, self.slicing) for im in images]
        if self.tta is not None:
            from scaledet.inference.tta import tta_detect

            return tta_detect(self, images, self.tta)
        return self.detect(images)

    def preprocess(self, image: np.ndarray | Tensor, size: int | None = None
                   ) -> tuple[Tensor, float]:
        """One image (``(H, W, 3)`` uint8 numpy or ``(3, H, W)`` uint8 tensor) ->
        ``((3, size, size)`` uint8 letterboxed, scale)``: input pixels = original * scale."""
        from scaledet.data.transforms import Sample, letterbox

        chw = image if isinstance(image, Tensor) else as_images(image)[0].image
        sample = Sample(chw, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
        out, scale = letterbox(sample, size or self.imgsz)
        return out.image, scale

    @torch.no_grad()
    def detect(self, images: Sequence[Tensor], size: int | None = None,
               flip: bool = False) -> list[Detections]:
        """One plain pass: ``(3, H, W)`` uint8 images letterboxed to ``size`` (default
        ``imgsz``), optionally mirrored left-right first; detections mapped back to the
        original (unmirrored) pixels, score >= ``conf``, sorted by score."""
        out: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [im.flip(-1) if flip else im for im in images[start:start + self.batch_size]]
            prepared = [self.preprocess(im, size) for im in chunk]
            batch = torch.stack([p[0] for p in prepared]).to(self.device).float().div_(255)
            for det, im, (_, scale) in zip(self.model(batch), chunk, prepared):
                d = self._postprocess(det, scale, (im.shape[-2], im.shape[-1]))
                out.append(_unflip(d, im.shape[-1]) if flip else d)
        return out

    def _postprocess(self, det: Detections, scale: float, size: tuple[int, int]) -> Detections:
        keep = det["scores"] >= self.conf
        scores = det["scores"][keep].float().cpu()
        order = scores.argsort(descending=True, stable=True)
        boxes = to_original_pixels(det["boxes"][keep].cpu(), scale, size)
        out = {"boxes": boxes[order], "scores": scores[order],
               "labels": det["labels"][keep].long().cpu()[order]}
        if "keypoints" in det:  # a detector with keypoints (face-n): (K, J, 3), x y / scale
            points = det["keypoints"][keep].float().cpu()[order]
            out["keypoints"] = torch.cat([points[..., :2] / scale, points[..., 2:]], dim=-1)
        return out


def _load_pose(weights: str | os.PathLike | None, device: torch.device,
               batch_size: int) -> PoseEstimator | None:
    if weights is None:
        return None
    from scaledet.inference.pose import PoseEstimator

    return PoseEstimator.from_weights(weights, device, batch_size=max(batch_size, 32))


def _unflip(det: Detections, width: int) -> Detections:
    """Boxes found on a left-right mirrored image -> boxes on the image: ``x -> W - x``."""
    b = det["boxes"]
    boxes = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
    # A detector's keypoints would need their left/right order swapped too, which the
    # predictor does not know: dropped (TTA and tile merging keep boxes only).
    return {**{k: v for k, v in det.items() if k != "keypoints"}, "boxes": boxes}
