"""ONNX export of every preset's dense inference path (``scaledet.inference.export``), checked
against PyTorch with onnxruntime on a non-square input, BatchNorm folded as ``scaledet export``
does."""

import onnx
import onnxruntime as ort
import pytest
import torch

from scaledet.inference.export import export_onnx
from scaledet.models import PRESETS, build


@pytest.mark.parametrize("name", list(PRESETS) + ["fcos-n+dfl"])
def test_onnx_export_matches_pytorch(name, tmp_path):
    torch.manual_seed(0)
    if name == "fcos-n+dfl":  # GFL distribution regression: softmax + expectation
        model = build("fcos-n", num_classes=3, head={"reg_max": 8}).eval()
    else:
        model = build(name, num_classes=3).eval()
    with torch.no_grad():  # non-trivial BN statistics so normalisation is really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        proposals = getattr(model.head, "proposal_head", None)
        if proposals is not None:  # spread the scores: query selection must not hinge on ties
            proposals.cls_pred.weight.normal_(0.0, 1.0)
    images = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        ref_boxes, ref_scores = model.predict_raw(images)
        model.predict_raw(torch.rand(1, 3, 96, 96))  # location grids cached at the trace size
    model.fuse()
    path = export_onnx(model, tmp_path / f"{name}.onnx", imgsz=96, dynamic=True)
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(["boxes", "scores"], {"images": images.numpy()})
    locations = sum((96 // s) * (128 // s) for s in model.head.strides)
    locations = getattr(model.head, "num_queries", locations)  # set heads: one per query
    assert boxes.shape == (1, locations, 4) and scores.shape == (1, locations, 3)
    torch.testing.assert_close(torch.from_numpy(boxes), ref_boxes, rtol=1e-4, atol=2e-4)
    torch.testing.assert_close(torch.from_numpy(scores), ref_scores, rtol=1e-4, atol=1e-4)
