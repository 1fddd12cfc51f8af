"""``scaledet export``: a clear error without onnx, where the file went, and a comparison with
PyTorch for every variant (dense outputs, dynamic shapes, NMS detections)."""

import re
import shutil
import sys

import pytest
import torch

from scaledet.cli import main
from scaledet.inference.export import check_parity, export_onnx
from tests.inference.conftest import tiny_model


@pytest.fixture
def local_weights(weights, tmp_path):
    """The tiny checkpoint in a folder of its own (export writes beside it by default)."""
    path = tmp_path / "tiny.safetensors"
    shutil.copy(weights, path)
    return path


def test_without_onnx_says_what_to_install(local_weights, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", "--weights", str(local_weights)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "pip install 'scaledet[export]'" in line
    assert not local_weights.with_suffix(".onnx").exists()


@pytest.mark.parametrize("flags, shapes", [
    ([], ["2x3x96x96"]),
    (["--dynamic"], ["2x3x96x96", "3x3x77x96"]),
    (["--nms"], ["2x3x96x96"]),
    (["--dynamic", "--nms", "--conf", "0.3"], ["2x3x96x96", "3x3x77x96"]),
])
def test_every_variant_is_compared_with_pytorch(local_weights, capsys, flags, shapes):
    assert main(["export", "--weights", str(local_weights), "--batch", "2", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    onnx_path = local_weights.with_suffix(".onnx").resolve()
    assert lines[0].startswith(f"wrote {onnx_path} (beside the weights; --out to choose): ")
    assert onnx_path.is_file()
    assert len(lines) == 1 + len(shapes)
    for line, shape in zip(lines[1:], shapes):
        assert f"onnxruntime vs PyTorch{' with NMS' if '--nms' in flags else ''}" in line
        assert f" on {shape}: " in line and "MISMATCH" not in line
        if "--nms" in flags:
            found, ref, matched = map(int, re.search(r"(\d+) vs (\d+) detections, (\d+) matched",
                                                     line).groups())
            assert found == ref == matched > 0


def test_nms_check_lowers_the_threshold_when_nothing_passes(local_weights, tmp_path, capsys):
    out = tmp_path / "sub" / "nms.onnx"
    assert main(["export", "--weights", str(local_weights), "--nms", "--conf", "0.99",
                 "--out", str(out)]) == 0
    wrote, none, lowered = capsys.readouterr().out.splitlines()
    assert wrote.startswith(f"wrote {out.resolve()}: ")
    assert "0 vs 0 detections, 0 matched (no detection above conf" in none
    assert "conf lowered to" in lowered
    found, ref, matched = map(int, re.search(r"(\d+) vs (\d+) detections, (\d+) matched",
                                             lowered).groups())
    assert found == ref == matched > 0


@pytest.mark.parametrize("nms", [False, True])
def test_a_different_model_is_a_mismatch(tmp_path, nms):
    model = tiny_model()
    model.score_thresh = 0.3
    path = export_onnx(model, tmp_path / "m.onnx", imgsz=96, nms=nms, conf=0.3)
    kw = {"imgsz": 96, "batch": 1, "nms": nms, "conf": 0.3}
    assert all(c.ok for c in check_parity(model, path, **kw))
    with torch.no_grad():
        model.head.cls_pred.bias.add_(0.5)  # other scores (and with NMS, more detections)
    (check,) = check_parity(model, path, **kw)
    assert not check.ok and check.text.endswith("(MISMATCH)")
