import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from scaledet.cli import main
from scaledet.inference import Predictor
from scaledet.inference.export import export_onnx
from tests.inference.conftest import CLASS_NAMES, tiny_model


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _test_images(imgsz: int) -> torch.Tensor:
    """Letterboxed inputs as the Predictor makes them, from images of different shapes."""
    predictor = Predictor.from_model(tiny_model(), CLASS_NAMES, imgsz=imgsz)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(96, 96), (40, 90)]]
    return torch.stack([predictor.preprocess(im)[0] for im in images]).float() / 255


def test_cli_export_matches_pytorch(weights, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", weights, "--format", "onnx", "--out", str(out),
                 "--batch", "2"]) == 0
    assert "max abs difference" in capsys.readouterr().out
    proto = onnx.load(out)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == CLASS_NAMES and meta["imgsz"] == "96"
    x = _test_images(96)
    boxes, scores = _session(out).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = tiny_model().predict_raw(x)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4, rtol=0)


def test_dynamic_shapes_match_pytorch(tmp_path):
    model = tiny_model()
    path = export_onnx(model, tmp_path / "dyn.onnx", imgsz=64, dynamic=True)
    sess = _session(path)
    for shape in [(1, 3, 64, 64), (3, 3, 96, 128), (1, 3, 70, 50)]:  # 70 x 50: padded inside
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        boxes, scores = sess.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref_boxes, ref_scores = model.predict_raw(x)
        np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4, rtol=0)


def test_nms_graph_matches_pytorch_postprocessing(tmp_path):
    model = tiny_model()
    x = _test_images(96)
    with torch.no_grad():
        _, raw_scores = model.predict_raw(x)
    # A threshold halfway between two scores (no ties at it) that leaves ~100 candidates, so
    # that PyTorch's per-level top-k and per-image max_det do not bind.
    top = raw_scores.flatten().sort(descending=True).values
    conf = float(top[199:201].mean())
    model.score_thresh, model.max_det = conf, 300
    path = export_onnx(model, tmp_path / "nms.onnx", imgsz=96, batch=2, nms=True, conf=conf,
                       iou=model.nms_iou, max_det=300)
    (det,) = _session(path).run(None, {"images": x.numpy()})
    assert det.shape[1] == 7
    with torch.no_grad():
        ref = model(x)
    for i, r in enumerate(ref):
        mine = det[det[:, 0] == i]
        mine = mine[np.argsort(-mine[:, 5], kind="stable")]
        assert len(mine) == len(r["scores"]) > 0
        np.testing.assert_allclose(mine[:, 1:5], r["boxes"].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(mine[:, 5], r["scores"].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_array_equal(mine[:, 6], r["labels"].numpy())


def test_export_rejects_bad_arguments(tmp_path, weights):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_model(), tmp_path / "x.onnx", opset=13)
    assert main(["export", "--weights", str(tmp_path / "missing.safetensors")]) == 2
