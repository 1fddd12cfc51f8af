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
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_OPSET = 17


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
    import onnx

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


def report_parity(model: nn.Module, path: Path, imgsz: int, batch: int) -> None:
    """Print the largest difference to PyTorch on a random input, when onnxruntime is here."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed: output not checked (pip install onnxruntime)")
        return
    x = torch.rand(batch, 3, imgsz, imgsz)
    with torch.no_grad():
        ref = RawOutputs(model).eval()(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"images": x.numpy()})
    box_diff, score_diff = (float((torch.from_numpy(o) - r).abs().max()) for o, r in zip(outs, ref))
    print(f"onnxruntime vs PyTorch on a random input: max abs difference boxes {box_diff:.1e} px, "
          f"scores {score_diff:.1e}")
