"""The one input-size rule (:func:`scaledet.models.sizes.check_imgsz`), ``scaledet info`` at the
size it actually measures, and the file mode of written weights."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from scaledet.cli import main
from scaledet.models import build
from scaledet.models.checkpoint import atomic_write_bytes, save_weights
from scaledet.models.info import count_flops, format_info
from scaledet.models.sizes import check_imgsz, config_stride, model_stride


@pytest.mark.parametrize("imgsz, stride, expected", [
    (64, 32, 64), (320, 32, 320), (33, 32, 64), (31, 32, 32), (1, 32, 32), (65, 16, 80),
])
def test_check_imgsz_rounds_up_to_a_multiple(imgsz, stride, expected):
    size, note = check_imgsz(imgsz, stride)
    assert size == expected and isinstance(size, int)
    if imgsz == expected:
        assert note is None
    else:
        assert note == (f"note: imgsz {imgsz} rounded up to {expected}, a multiple of the "
                        f"largest stride {stride}")


@pytest.mark.parametrize("imgsz", [0, -1, -64, None, 32.5, "64", True])
def test_check_imgsz_rejects_non_positive_and_non_integers(imgsz):
    with pytest.raises(ValueError, match="imgsz"):
        check_imgsz(imgsz, 32)


@pytest.mark.parametrize("name, overrides", [
    ("fcos-n", {}), ("centernet-n", {}), ("yolo-n", {}),
    ("fcos-n", {"backbone": {"dilated": True}}),
])
def test_model_and_config_give_the_same_largest_stride(name, overrides):
    model = build(name, num_classes=2, **overrides)
    assert model_stride(model) == config_stride(model.config.strides) == 32


def test_info_reports_the_size_it_measures(capsys):
    """``info --imgsz 33`` runs the model at 64 px (its padding): it must say 64, with a note."""
    assert main(["info", "--model", "fcos-n", "--imgsz", "33", "--num-classes", "2"]) == 0
    captured = capsys.readouterr()
    model = build("fcos-n", num_classes=2)
    assert "64x64 input" in captured.out and "33x33" not in captured.out
    assert f"FLOPs       {count_flops(model, 64) / 1e9:.3f} G" in captured.out
    level_rows = [line.split() for line in captured.out.splitlines()
                  if line.strip().startswith("0 ")]
    assert level_rows[0][1] == "8" and level_rows[0][3] == "8x8"
    assert captured.err.strip() == ("note: imgsz 33 rounded up to 64, a multiple of the largest "
                                    "stride 32")
    assert format_info(model, 33) == format_info(model, 64)

    assert main(["info", "--imgsz", "40", "--num-classes", "2"]) == 0
    captured = capsys.readouterr()
    assert "at 64 px" in captured.out and captured.err.count("rounded up to 64") == 1


@pytest.mark.parametrize("imgsz", ["0", "-32"])
def test_info_rejects_non_positive_sizes(imgsz, capsys):
    assert main(["info", "--model", "fcos-n", "--imgsz", imgsz]) == 2
    assert "imgsz must be a positive multiple of the largest stride 32" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_written_weights_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_weights(tmp_path / "w.safetensors", {"x": torch.zeros(2)}, {"imgsz": 64})
        atomic_write_bytes(tmp_path / "other.bin", b"data")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "private.bin", b"data")
    finally:
        os.umask(old)
    for name, mode in ((path.name, 0o644), ("w.json", 0o644), ("other.bin", 0o644),
                       ("private.bin", 0o600)):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "other.bin", "private.bin", "w.json", "w.safetensors"]  # no temp files left
