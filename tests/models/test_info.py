"""`scaledet info`: FLOPs against an independent per-convolution count, level strides against the
heads', and the command's output and errors."""

import pytest
import torch

from scaledet.cli import main
from scaledet.models import PRESETS, build
from scaledet.models.info import count_flops, count_parameters, format_info, level_info


def _conv_flops_by_hooks(model, imgsz):
    """2 * multiply-adds of every Conv2d call, from forward hooks (batch 1)."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * out.numel() * (m.in_channels // m.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    model.eval()
    with torch.no_grad():
        model.predict_raw(torch.zeros(1, 3, imgsz, imgsz))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["fcos-n", "centernet-n", "yolo-n"])
def test_flops_equal_an_independent_convolution_count(name):
    model = build(name, num_classes=3)
    model.train()
    flops = count_flops(model, 64)
    assert model.training  # restored
    assert flops == _conv_flops_by_hooks(model, 64) > 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_level_strides_are_the_heads(name):
    model = build(name, num_classes=3)
    levels = level_info(model, 64)
    assert [lv.stride for lv in levels] == [(s, s) for s in model.head.strides]
    assert [lv.size for lv in levels] == [(64 // s, 64 // s) for s in model.head.strides]
    rfs = [lv.receptive_field[0] for lv in levels]
    assert rfs == sorted(rfs) and rfs[0] > 4 * model.head.strides[0]


def test_dilated_model_reports_stride_16_twice():
    model = build("yolo-n", num_classes=3, backbone={"dilated": True})
    assert [lv.stride[0] for lv in level_info(model, 64)] == [8, 16, 16]


def test_info_command_prints_one_model(capsys):
    assert main(["info", "--model", "centernet-n", "--imgsz", "64", "--num-classes", "3"]) == 0
    out = capsys.readouterr().out
    model = build("centernet-n", num_classes=3)
    assert f"parameters  {count_parameters(model) / 1e6:.3f} M" in out
    assert f"FLOPs       {count_flops(model, 64) / 1e9:.3f} G" in out
    level_rows = [line.split() for line in out.splitlines() if line.strip().startswith("0 ")]
    assert level_rows and level_rows[0][1] == "4" and level_rows[0][3] == "16x16"


def test_info_lists_every_preset_and_layers(capsys):
    assert "layer" in format_info(build("fcos-n", num_classes=2), 64, layers=True)
    assert main(["info", "--imgsz", "64", "--num-classes", "2"]) == 0
    detection, pose = capsys.readouterr().out.split("\n\n")
    assert [line.split()[0] for line in detection.splitlines()[1:]] == list(PRESETS)
    assert pose.startswith("pose preset")  # pose presets apart, at their crop size
    assert [line.split()[0] for line in pose.splitlines()[1:]] == ["pose-heatmap-n",
                                                                    "pose-rle-n"]


def test_info_command_errors(capsys):
    assert main(["info", "--model", "fcos-x"]) == 2
    assert "valid names: fcos-n" in capsys.readouterr().err
    assert main(["info", "--imgsz", "0"]) == 2
    assert "imgsz must be a positive multiple of the largest stride" in capsys.readouterr().err
