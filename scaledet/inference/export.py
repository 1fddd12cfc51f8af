"""``scaledet export``: a checkpoint as an ONNX model (opset 17+), checked with onnxruntime.

The graph takes ``images`` ``(B, 3, H, W)`` float32 RGB in ``[0, 1]``, letterboxed as the
:class:`~scaledet.inference.predictor.Predictor` does (longer side -> ``imgsz``, grey padding at
the bottom/right), and returns, without ``nms``:

* ``boxes`` ``(B, P, 4)`` xyxy pixels of the input, clipped to it;
* ``scores`` ``(B, P, C)`` per-class probabilities;

(the model's dense predictions before NMS, :meth:`Detector.predict_raw`), or with ``nms``:

* ``detections`` ``(K, 7)`` rows ``[image_index, x1, y1, x2, y2, score, class]``, the output of
  ONNX ``NonMaxSuppression`` (class-aware hard NMS, score ``> conf``, IoU ``> iou`` suppressed,
  at most ``max_det`` per class and image), grouped by image and class. PyTorch additionally keeps
  at most ``topk_per_level`` candidates per pyramid level before NMS and ``max_det`` per image
  after it; sort an image's rows by score and cut at ``max_det`` for the same result.

``dynamic`` makes batch, height and width free; any ``H, W`` works (the graph pads to a multiple
of 32 with the normalisation mean, exactly as the PyTorch model does). Class names, ``imgsz`` and
the pre-processing are written into the ONNX metadata. We use the TorchScript-based exporter
(``dynamo=False``): it needs no extra package and traces this model exactly.

DiffusionDet heads (``diffusiondet-n``, ``flowdet-n``) export their whole sampler, unrolled: the
graph holds the checkpoint's (or ``--set``'s) number of steps and boxes, the seeded noise as
constants shared by every image of a batch, box renewal and the ensemble over steps; other
settings need another export. With a free batch or image size it matches PyTorch at any shape
(the RoI pooling reads the boxes as one batched tensor and the input size from the traced shape).

:func:`check_parity` runs the written file with onnxruntime against the PyTorch model, for every
variant: the dense outputs, on the example shape and (``dynamic``) on another batch and a
non-square size; with ``nms``, the detections, matched box to box. ``onnx`` and ``onnxruntime``
are optional (``pip install 'scaledet[export]'``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_OPSET = 17
# Largest differences to PyTorch that count as the same model (float32 rounding in another
# runtime): boxes in input pixels, scores in [0, 1]; detections matched at IoU >= MATCH_IOU.
BOX_TOLERANCE = 0.05
SCORE_TOLERANCE = 1e-3
MATCH_IOU = 0.9
INSTALL_HINT = "pip install 'scaledet[export]'"


def import_onnx():
    """The ``onnx`` module, or a ``ValueError`` naming the extra to install."""
    try:
        import onnx
    except ImportError:
        raise ValueError(f"export needs the onnx package: {INSTALL_HINT}") from None
    return onnx


class RawOutputs(nn.Module):
    """``images (B, 3, H, W)`` in ``[0, 1]`` -> ``(boxes (B, P, 4), scores (B, P, C))``, any
    ``H, W``: padding to the model's ``size_divisor`` is written with shape arithmetic so that
    it stays dynamic in the traced graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        h, w = images.shape[-2], images.shape[-1]
        d = self.model.size_divisor
        mean = self.model.pixel_mean
        # Pad with the mean colour: 0 after normalisation, as Detector.preprocess pads.
        x = F.pad(images - mean, (0, (d - w % d) % d, 0, (d - h % d) % d)) + mean
        boxes, scores = self.model.predict_raw(x)
        boxes = torch.stack([boxes[..., 0].clamp(max=w), boxes[..., 1].clamp(max=h),
                             boxes[..., 2].clamp(max=w), boxes[..., 3].clamp(max=h)], dim=-1)
        return boxes, scores


def export_onnx(model: nn.Module, out: str | os.PathLike, *, imgsz: int = 320, batch: int = 1,
                dynamic: bool = False, nms: bool = False, opset: int = MIN_OPSET,
                conf: float = 0.25, iou: float = 0.6, max_det: int = 100,
                metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a :class:`~scaledet.models.Detector`) as ONNX to ``out``.

    Args:
        imgsz, batch: the example input ``(batch, 3, imgsz, imgsz)`` (the fixed shape unless
            ``dynamic``).
        nms: append ONNX ``NonMaxSuppression`` with ``conf``, ``iou``, ``max_det`` (see the
            module docstring for the output).
        opset: ONNX opset, >= 17.
        metadata: extra ``key -> value`` strings (JSON for non-strings) stored in the model.
    """
    onnx = import_onnx()
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if imgsz < 32 or batch < 1:
        raise ValueError(f"imgsz must be >= 32 and batch >= 1, got {imgsz}, {batch}")
    proto = onnx.load_from_string(_trace(model, imgsz, batch, dynamic, opset))
    if nms:
        _append_nms(proto, conf, iou, max_det)
    info = {"producer": "scaledet", "imgsz": imgsz,
            "input": "images (B, 3, H, W) float32 RGB in [0, 1], letterboxed: longer side -> "
                     "imgsz, grey (114) padding at the bottom/right",
            "outputs": "detections (K, 7) [image, x1, y1, x2, y2, score, class]" if nms else
                       "boxes (B, P, 4) xyxy input pixels, scores (B, P, C)",
            **(metadata or {})}
    return _save(proto, info, out)


def _save(proto, info: dict, out: str | os.PathLike) -> Path:
    """Write ``info`` into the model's metadata (JSON for non-strings), check it, save it."""
    onnx = import_onnx()

    for key, value in info.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, out)
    return out


def _trace(model: nn.Module, imgsz: int, batch: int, dynamic: bool, opset: int) -> bytes:
    wrapper = RawOutputs(model).eval()  # the exporter restores this mode, recursively
    example = torch.rand(batch, 3, imgsz, imgsz, device=model.pixel_mean.device)
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"},
                "boxes": {0: "batch", 1: "points"}, "scores": {0: "batch", 1: "points"}}
    buf = io.BytesIO()
    with warnings.catch_warnings():  # tracer notes on shape arithmetic, which is intended
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), buf, opset_version=opset, dynamo=False,
                          input_names=["images"], output_names=["boxes", "scores"],
                          dynamic_axes=axes, do_constant_folding=True)
    return buf.getvalue()


def _append_nms(proto, conf: float, iou: float, max_det: int) -> None:
    """Replace the outputs ``boxes``/``scores`` by ``detections`` (see the module docstring)."""
    from onnx import TensorProto, helper

    g = proto.graph
    g.initializer.extend([
        helper.make_tensor("nms_max", TensorProto.INT64, [1], [max_det]),
        helper.make_tensor("nms_iou", TensorProto.FLOAT, [1], [iou]),
        helper.make_tensor("nms_conf", TensorProto.FLOAT, [1], [conf]),
        *(helper.make_tensor(f"col{i}", TensorProto.INT64, [1], [i]) for i in range(3)),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
    ])
    node = helper.make_node
    g.node.extend([
        node("Transpose", ["scores"], ["scores_cp"], perm=[0, 2, 1]),  # (B, C, P)
        # IoU is the same for xyxy and the spec's yxyx corners.
        node("NonMaxSuppression", ["boxes", "scores_cp", "nms_max", "nms_iou", "nms_conf"],
             ["selected"]),  # (K, 3): image, class, point
        *(node("Gather", ["selected", f"col{i}"], [f"sel{i}"], axis=1) for i in range(3)),
        node("Concat", ["sel0", "sel2"], ["image_point"], axis=1),
        node("GatherND", ["boxes", "image_point"], ["det_boxes"]),      # (K, 4)
        node("GatherND", ["scores_cp", "selected"], ["det_scores"]),    # (K,)
        node("Unsqueeze", ["det_scores", "axis1"], ["det_scores1"]),
        node("Cast", ["sel0"], ["det_image"], to=TensorProto.FLOAT),
        node("Cast", ["sel1"], ["det_class"], to=TensorProto.FLOAT),
        node("Concat", ["det_image", "det_boxes", "det_scores1", "det_class"], ["detections"],
             axis=1),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["K", 7]))


@dataclass
class Parity:
    """One comparison of the ONNX file with PyTorch.

    Attributes:
        ok: the outputs agree within ``BOX_TOLERANCE`` / ``SCORE_TOLERANCE`` (and, with NMS,
            every detection of either has its match in the other).
        text: one line saying what was compared and how far apart the outputs are.
    """

    ok: bool
    text: str


def check_parity(model: nn.Module, path: str | os.PathLike, *, imgsz: int, batch: int,
                 dynamic: bool = False, nms: bool = False, conf: float = 0.25, iou: float = 0.6,
                 max_det: int = 100) -> list[Parity]:
    """Run the ONNX file ``path`` (written by :func:`export_onnx` with these settings) with
    onnxruntime and compare it with ``model`` on test images of the built-in dataset's kind.

    Without NMS, the dense boxes and scores, on the example shape ``(batch, 3, imgsz, imgsz)``
    and, when ``dynamic``, also on ``(batch + 1, 3, h, imgsz)`` with ``h`` not a multiple of the
    stride. With NMS, the detections against the model's own post-processing set to the graph's
    (hard NMS, ``conf``, ``iou``, ``max_det``): matched by class and IoU, their number, boxes
    and scores. When no detection passes ``conf`` on the test images, the graph is also
    checked at a lower threshold (a copy of it, in memory), so that some detections are compared.

    Returns:
        One :class:`Parity` per comparison; none (with a note) when onnxruntime is missing.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return [Parity(True, f"onnxruntime is not installed: output not checked ({INSTALL_HINT})")]
    shapes = [(batch, imgsz, imgsz)]
    if dynamic:
        shapes.append((batch + 1, max(32, imgsz * 3 // 4 + 5), imgsz))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for b, h, w in shapes:
        x = check_images(b, h, w)
        shape = f"{b}x3x{h}x{w}"
        if not nms:
            out.append(_raw_parity(model, sess, x, shape))
            continue
        parity, count = _nms_parity(model, sess, x, shape, conf, iou, max_det)
        out.append(parity)
        if count == 0:  # nothing compared: the same graph at a threshold that passes some
            low = _threshold_with_candidates(model, x)
            lowered = _with_nms_threshold(path, low)
            sess_low = ort.InferenceSession(lowered, providers=["CPUExecutionProvider"])
            out.append(_nms_parity(model, sess_low, x, f"{shape}, conf lowered to {low:.4g}",
                                   low, iou, max_det)[0])
    return out


def check_images(batch: int, height: int, width: int) -> Tensor:
    """``(batch, 3, height, width)`` float images in ``[0, 1]`` from the built-in dataset's
    generator (objects on clutter; deterministic)."""
    from scaledet.data.synth import synth_image

    rng = np.random.default_rng(0)
    side = max(64, height, width)
    images = [synth_image(rng, side)[0][:height, :width] for _ in range(batch)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255).contiguous()


def _raw_parity(model: nn.Module, sess, x: Tensor, shape: str) -> Parity:
    with torch.no_grad():
        ref = RawOutputs(model).eval()(x)
    outs = sess.run(None, {"images": x.numpy()})
    box_diff, score_diff = (float((torch.from_numpy(o) - r).abs().max()) for o, r in zip(outs, ref))
    ok = box_diff <= BOX_TOLERANCE and score_diff <= SCORE_TOLERANCE
    return Parity(ok, f"onnxruntime vs PyTorch on {shape}: max abs difference boxes "
                      f"{box_diff:.1e} px, scores {score_diff:.1e}{'' if ok else ' (MISMATCH)'}")


def _nms_parity(model: nn.Module, sess, x: Tensor, shape: str, conf: float, iou: float,
                max_det: int) -> tuple[Parity, int]:
    """Compare detections; returns the verdict and how many PyTorch detections there were."""
    saved = model.postprocess
    model.postprocess = dataclasses.replace(saved, score_thresh=conf, nms="hard", nms_iou=iou,
                                            max_det=max_det)
    try:
        with torch.no_grad():
            ref = model(x)
    finally:
        model.postprocess = saved
    (det,) = sess.run(None, {"images": x.numpy()})
    n_ref = n_onnx = matched = 0
    box_diff = score_diff = 0.0
    for i, r in enumerate(ref):
        mine = det[det[:, 0] == i]
        mine = mine[np.argsort(-mine[:, 5], kind="stable")][:max_det]  # as the graph's doc says
        pairs = match_detections(r["boxes"].numpy(), r["labels"].numpy(), mine[:, 1:5],
                                 mine[:, 6].astype(np.int64))
        n_ref, n_onnx, matched = n_ref + len(r["scores"]), n_onnx + len(mine), matched + len(pairs)
        for a, b in pairs:
            box_diff = max(box_diff, float(np.abs(r["boxes"][a].numpy() - mine[b, 1:5]).max()))
            score_diff = max(score_diff, abs(float(r["scores"][a]) - float(mine[b, 5])))
    ok = (n_ref == n_onnx == matched and box_diff <= BOX_TOLERANCE
          and score_diff <= SCORE_TOLERANCE)
    text = (f"onnxruntime vs PyTorch with NMS (conf {conf:g}, iou {iou:g}) on {shape}: "
            f"{n_onnx} vs {n_ref} detections, {matched} matched")
    if matched:
        text += f"; max abs difference boxes {box_diff:.1e} px, scores {score_diff:.1e}"
    if n_ref == 0:
        text += " (no detection above conf on the test images)"
    return Parity(ok, text + ("" if ok else " (MISMATCH)")), n_ref


def match_detections(boxes_a: np.ndarray, labels_a: np.ndarray, boxes_b: np.ndarray,
                     labels_b: np.ndarray, min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``: each box of ``a`` in order with the unmatched box of ``b`` of the same
    label that overlaps it most, if their IoU is at least ``min_iou``."""
    from scaledet.ops.iou import box_iou

    if not len(boxes_a) or not len(boxes_b):
        return []
    ious = box_iou(torch.as_tensor(boxes_a, dtype=torch.float32),
                   torch.as_tensor(boxes_b, dtype=torch.float32)).numpy()
    ious[np.asarray(labels_a)[:, None] != np.asarray(labels_b)[None, :]] = -1
    pairs = []
    for i in range(len(boxes_a)):
        j = int(np.argmax(ious[i]))
        if ious[i, j] >= min_iou:
            pairs.append((i, j))
            ious[:, j] = -1
    return pairs


def _threshold_with_candidates(model: nn.Module, x: Tensor, low: int = 20,
                               high: int = 60) -> float:
    """A score threshold that about ``low``..``high`` (location, class) pairs of ``x`` pass,
    in the widest gap between two scores there (no score near it to flip in float rounding)."""
    with torch.no_grad():
        _, scores = model.predict_raw(x)
    top = scores.flatten().sort(descending=True).values[: high + 1].double()
    if len(top) < 2:
        return 0.0
    lo = min(low, len(top) - 2)
    gaps = top[lo:-1] - top[lo + 1:]
    k = lo + int(gaps.argmax())
    return float((top[k] + top[k + 1]) / 2)


def _with_nms_threshold(path: str | os.PathLike, conf: float) -> bytes:
    """The ONNX model at ``path`` with its NMS score threshold set to ``conf``, serialised."""
    onnx = import_onnx()
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    for k, init in enumerate(proto.graph.initializer):
        if init.name == "nms_conf":
            proto.graph.initializer[k].CopyFrom(
                numpy_helper.from_array(np.array([conf], np.float32), "nms_conf"))
    return proto.SerializeToString()


# ---- pose models ---------------------------------------------------------------------------

POSE_COORD_TOLERANCE = 1e-3
"""Largest joint difference (crop pixels) that counts as the same pose model; the graphs agree
to about 1e-5 px (RLE, arg-max) and 1e-4 px (DARK, whose Newton step divides by the heatmap's
curvature), so this leaves room for other runtimes' float rounding."""


def adaptive_pool_matrix(size: tuple[int, int], pool: tuple[int, int]) -> Tensor:
    """``(ph * pw, h * w)`` weights that average a flattened ``(h, w)`` map over
    ``adaptive_avg_pool2d``'s bins (``floor(i h / ph)`` to ``ceil((i + 1) h / ph)``)."""
    (h, w), (ph, pw) = size, pool

    def bins(n: int, p: int) -> Tensor:
        m = torch.zeros(p, n)
        for i in range(p):
            lo, hi = (i * n) // p, -((-(i + 1) * n) // p)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m

    return torch.einsum("ik,jl->ijkl", bins(h, ph), bins(w, pw)).reshape(ph * pw, h * w)


class FixedPoolRLEHead(nn.Module):
    """An :class:`~scaledet.models.keypoints.heads.RLEHead` for export: its adaptive average
    pooling done as a product with :func:`adaptive_pool_matrix` for the one feature size the
    crops give (the TorchScript exporter cannot size ``adaptive_avg_pool2d`` behind the neck's
    resizes), handed to the head's :meth:`~scaledet.models.keypoints.heads.RLEHead.outputs`
    with the map itself (an ``"integral"`` readout reads the full map). The flow is never
    called, so it is not in the graph."""

    def __init__(self, head: nn.Module, feature_size: tuple[int, int]) -> None:
        super().__init__()
        self.head = head
        self.num_keypoints = head.num_keypoints
        self.level = head.level
        self.register_buffer("weights", adaptive_pool_matrix(feature_size, head.pool), False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c = x.shape[0], x.shape[1]
        pooled = torch.matmul(x.flatten(2), self.weights.t())  # (B, C, ph * pw)
        return self.head.outputs(x, pooled.reshape(b, c, *self.head.pool))


class PoseOutputs(nn.Module):
    """``crops (B, 3, H, W)`` in ``[0, 1]`` -> ``(keypoints (B, K, 2) crop pixels, scores
    (B, K))``: the :class:`~scaledet.models.keypoints.pose.PoseModel`'s eval forward (its
    decoding and flip test included), with an RLE head's pooling written for export
    (:class:`FixedPoolRLEHead`). ``pose`` is a copy-free view: the model's modules are shared,
    its ``head`` is not changed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from scaledet.models.keypoints.heads import RLEHead

        self.model = model
        self.head = model.head
        if isinstance(model.head, RLEHead):
            s = model.strides[model.head.level]
            h, w = model.input_size
            self.head = FixedPoolRLEHead(model.head, (-(-h // s), -(-w // s)))

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        original = self.model.head
        self.model.head = self.head  # only for this call (tracing)
        try:
            return self.model(crops)
        finally:
            self.model.head = original


def export_pose_onnx(model: nn.Module, out: str | os.PathLike, *, batch: int = 1,
                     opset: int = MIN_OPSET, metadata: dict[str, Any] | None = None) -> Path:
    """Write a pose model as ONNX: input ``crops`` ``(B, 3, H, W)`` float32 RGB in ``[0, 1]``
    (``H, W`` the model's ``input_size``, fixed; ``B`` free), outputs ``keypoints``
    ``(B, K, 2)`` crop pixels (pixel centres at integers) and ``scores`` ``(B, K)``.

    The heatmap head's decoding (DARK or arg-max + quarter offset, as configured) is in the
    graph; an RLE head's flow is not (inference never runs it). ``batch``: the example's
    batch. ``metadata``: extra ``key -> value`` entries (JSON for non-strings)."""
    onnx = import_onnx()
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    wrapper = PoseOutputs(model.eval()).eval()
    h, w = model.input_size
    device = model.pixel_mean.device
    example = torch.rand(batch, 3, h, w, device=device)
    axes = {"crops": {0: "batch"}, "keypoints": {0: "batch"}, "scores": {0: "batch"}}
    buf = io.BytesIO()
    with warnings.catch_warnings():  # tracer notes on shape arithmetic, which is intended
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), buf, opset_version=opset, dynamo=False,
                          input_names=["crops"], output_names=["keypoints", "scores"],
                          dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    config = getattr(model, "config", None)
    info = {"producer": "scaledet", "task": "pose", "input_size": [h, w],
            "input": f"crops (B, 3, {h}, {w}) float32 RGB in [0, 1]: a person box widened to "
                     f"the aspect {w}/{h}, scaled by box_padding and warped to the crop",
            "outputs": "keypoints (B, K, 2) crop pixels (pixel centres at integers), "
                       "scores (B, K)",
            "box_padding": getattr(config, "box_padding", 1.25),
            **(metadata or {})}
    return _save(proto, info, out)


def check_pose_parity(model: nn.Module, path: str | os.PathLike, *,
                      batches: tuple[int, ...] = (1, 3)) -> list[Parity]:
    """Run the pose ONNX file ``path`` with onnxruntime against ``model`` on person-like
    crops (the built-in dataset's images, warped to the crop size) for each batch size in
    ``batches``: joints within :data:`POSE_COORD_TOLERANCE` crop pixels, scores within
    ``SCORE_TOLERANCE``. None (a note) when onnxruntime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return [Parity(True, f"onnxruntime is not installed: output not checked ({INSTALL_HINT})")]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h, w = model.input_size
    out = []
    for b in batches:
        x = check_images(b, h, w)
        with torch.no_grad():
            ref = model.eval()(x)
        outs = sess.run(None, {"crops": x.numpy()})
        coord_diff, score_diff = (float((torch.from_numpy(o) - r.float()).abs().max())
                                  for o, r in zip(outs, ref))
        ok = coord_diff <= POSE_COORD_TOLERANCE and score_diff <= SCORE_TOLERANCE
        out.append(Parity(ok, f"onnxruntime vs PyTorch on {b}x3x{h}x{w} crops: max abs "
                              f"difference keypoints {coord_diff:.1e} px, scores "
                              f"{score_diff:.1e}{'' if ok else ' (MISMATCH)'}"))
    return out
