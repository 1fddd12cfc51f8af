"""ONNX export of a detector's dense inference path (``Detector.predict_raw``).

The exported graph maps ``images (B, 3, H, W)`` float32 in ``[0, 1]`` to ``boxes (B, P, 4)``
xyxy input pixels and ``scores (B, P, C)``; NMS is left to the runtime (its output size depends
on the data). The graph is traced for one input size.

It uses PyTorch's TorchScript-based exporter (``dynamo=False``): deprecated upstream but about
5x faster here than the ``torch.export`` one and free of the extra ``onnxscript`` dependency;
pass ``dynamo=True`` to use the new exporter (needs ``pip install onnxscript``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from scaledet.models.detector import Detector


class RawPredictor(nn.Module):
    """``forward(images) -> (boxes, scores)``: the detector's :meth:`Detector.predict_raw`."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.detector.predict_raw(images)


def export_onnx(model: Detector, path: str | Path, *, height: int = 320, width: int = 320,
                batch: int = 1, opset: int = 17, dynamo: bool = False) -> Path:
    """Write ``model``'s dense inference path for ``(batch, 3, height, width)`` inputs to
    ``path`` (inputs ``images``; outputs ``boxes``, ``scores``). Needs the ``onnx`` package."""
    path = Path(path)
    was_training = model.training
    wrapper = RawPredictor(model).eval()
    example = torch.rand(batch, 3, height, width, device=model.pixel_mean.device)
    try:
        with warnings.catch_warnings():
            # shape checks and padding become trace constants: expected for a fixed-size graph
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(wrapper, (example,), str(path), dynamo=dynamo, opset_version=opset,
                              input_names=["images"], output_names=["boxes", "scores"])
    finally:
        model.train(was_training)
    return path
