"""``--imgsz`` follows one rule in ``predict``, ``val`` and ``train``: a positive multiple of the
model's largest stride; other positive sizes are rounded up with one note, 0 and below fail."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch

from scaledet.cli import main
from scaledet.data import load_dataset, make_synthetic_dataset
from scaledet.engine.fit import TrainSettings, resolve
from scaledet.evaluation.validator import validate_weights
from scaledet.inference.predictor import Predictor
from scaledet.models import build
from scaledet.models.checkpoint import save_weights

NOTE_33 = "note: imgsz 33 rounded up to 64, a multiple of the largest stride 32"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("imgsz") / "synth", n_train=2,
                                  n_val=2, seed=0, imgsz=64)


@pytest.fixture(scope="module")
def weights(data):
    """An untrained fcos-n checkpoint for the dataset's classes, trained size 96."""
    names = list(load_dataset(data, "val").class_names)
    torch.manual_seed(0)
    model = build("fcos-n", num_classes=len(names))
    path = data.parent / "w.safetensors"
    save_weights(path, model.state_dict(), {"model": "fcos-n", "imgsz": 96, "class_names": names,
                                            "model_config": asdict(model.config)})
    return str(path)


def test_predictor_rounds_up_with_one_note(weights, capsys):
    assert Predictor(weights).imgsz == 96  # the training size, already a multiple
    assert capsys.readouterr().err == ""
    predictor = Predictor(weights, imgsz=33)
    assert predictor.imgsz == 64
    assert capsys.readouterr().err.strip() == NOTE_33
    assert Predictor(weights, imgsz=31).imgsz == 32  # was an error below 32
    assert Predictor.from_model(build("fcos-n", num_classes=2), ["a", "b"], imgsz=33).imgsz == 64


@pytest.mark.parametrize("imgsz", [0, -64])
def test_predictor_rejects_non_positive_sizes(weights, imgsz):
    with pytest.raises(ValueError, match="imgsz must be a positive multiple"):
        Predictor(weights, imgsz=imgsz)  # 0 used to fall back to the training size


def test_predict_command_rejects_zero(weights, data, tmp_path, capsys):
    image = next((data / "images" / "val").iterdir())
    argv = ["predict", "--weights", weights, str(image), "--out", str(tmp_path), "--no-images"]
    assert main([*argv, "--imgsz", "0"]) == 2
    assert "imgsz must be a positive multiple of the largest stride 32" in capsys.readouterr().err
    assert main([*argv, "--imgsz", "33"]) == 0
    assert capsys.readouterr().err.count(NOTE_33) == 1


def test_validate_weights_uses_the_rounded_size(weights, data, capsys):
    _, validator = validate_weights(weights, data, imgsz=33, batch=2, workers=0)
    images, _ = next(iter(validator.loader))
    assert tuple(images.shape[-2:]) == (64, 64)
    assert capsys.readouterr().err.strip() == NOTE_33
    with pytest.raises(ValueError, match="imgsz must be a positive multiple"):
        validate_weights(weights, data, imgsz=0, batch=2, workers=0)


@pytest.mark.parametrize("model, options", [
    ("fcos-n", {}), ("centernet-n", {}), ("fcos-n", {"backbone.dilated": True}),
])
def test_train_settings_round_up_with_a_note(model, options, capsys):
    settings = TrainSettings(data="unused", model=model, imgsz=33, batch=2, nproc=1, workers=0,
                             epochs=1, model_options=options)
    assert resolve(settings, num_train=4).imgsz == 64
    assert NOTE_33 in capsys.readouterr().err
    assert settings.imgsz == 33  # the caller's settings are not changed
    settings.imgsz = 64
    assert resolve(settings, num_train=4).imgsz == 64
    assert "note" not in capsys.readouterr().err
    settings.imgsz = 0
    with pytest.raises(ValueError, match="imgsz must be a positive multiple"):
        resolve(settings, num_train=4)


def test_train_settings_default_imgsz_and_pose_crops():
    """No imgsz: a detector trains at 320; a pose model's input is its HxW crop, so an imgsz
    other than H is refused, naming the model option that sets the crop."""
    common = {"data": "unused", "batch": 2, "nproc": 1, "workers": 0, "epochs": 1}
    assert resolve(TrainSettings(model="fcos-n", **common), num_train=4).imgsz == 320
    pose = TrainSettings(model="pose-heatmap-n", **common)
    assert resolve(pose, num_train=4).imgsz == 320  # not read by the crop loader
    assert resolve(replace(pose, imgsz=128), num_train=4).imgsz == 128
    with pytest.raises(ValueError, match=r"imgsz 256: pose-heatmap-n is a pose model.*128x96.*"
                                         r"input_size=\[256,192\]"):
        resolve(replace(pose, imgsz=256), num_train=4)
    wide = replace(pose, imgsz=256, model_options={"input_size": [256, 192]})
    assert resolve(wide, num_train=4).imgsz == 256


def test_export_follows_the_same_rule(tmp_path, capsys):
    from pathlib import Path

    from scaledet.cli import main

    weights = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints_v1" / "fcos-atss.safetensors"
    assert main(["export", "--weights", str(weights), "--imgsz", "33",
                 "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr()
    assert "imgsz 33 rounded up to 64" in out.err and "1x3x64x64" in out.out
    assert main(["export", "--weights", str(weights), "--imgsz", "0",
                 "--out", str(tmp_path / "m0.onnx")]) == 2
    assert "imgsz must be a positive multiple" in capsys.readouterr().err
