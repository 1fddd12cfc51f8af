"""ONNX export of the dense inference path, checked against onnxruntime."""

import pytest
import torch

from scaledet.models import build
from scaledet.models.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_onnx_export_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = build("fcos-n", num_classes=3).eval()
    with torch.no_grad():  # non-trivial BN statistics so normalisation is really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = export_onnx(model, tmp_path / "fcos-n.onnx", height=96, width=128)
    onnx.checker.check_model(str(path))
    assert not model.training
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.rand(1, 3, 96, 128)
    boxes, scores = session.run(["boxes", "scores"], {"images": images.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = model.predict_raw(images)
    assert boxes.shape == (1, 12 * 16 + 6 * 8 + 3 * 4, 4) and scores.shape[-1] == 3
    torch.testing.assert_close(torch.from_numpy(boxes), ref_boxes, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(scores), ref_scores, rtol=1e-4, atol=1e-4)
