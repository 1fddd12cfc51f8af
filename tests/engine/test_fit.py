"""``amp="auto"`` in :func:`scaledet.engine.fit.fit`: timed on the model where the CPU has bf16
instructions, decided once, kept by ``resume`` (also from checkpoints of format 1)."""

import math

import pytest
import torch

from scaledet.engine import fit as commands
from scaledet.engine.fit import TrainSettings
from scaledet.models import build
from scaledet.models.checkpoint import save_weights
from scaledet.ops import device as device_mod


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build("fcos-n", num_classes=2)


def _args(**kw) -> TrainSettings:
    return TrainSettings(**{"data": "unused", "model": "fcos-n", "imgsz": 64, **kw})


def test_bf16_speedup_times_a_training_step_on_a_copy(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    speedup = commands.bf16_speedup(model, imgsz=64, batch=1, rounds=1)
    assert math.isfinite(speedup) and speedup > 0
    # the model itself is untouched (BatchNorm statistics included) and has no gradients
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("speedup", "expected"), [(0.88, "off"), (1.2, "bf16")])
def test_auto_amp_follows_the_timing(monkeypatch, tmp_path, model, speedup, expected):
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(commands, "_BF16_SPEEDUPS", {})
    calls = []
    monkeypatch.setattr(commands, "bf16_speedup",
                        lambda m, size: calls.append(size) or speedup)
    assert commands._auto_amp(_args(), model, tmp_path) == expected
    assert commands._auto_amp(_args(), model, tmp_path) == expected
    assert calls == [256]  # timed once per process, never on tiny images


def test_auto_amp_without_bf16_instructions_is_fp32_untimed(monkeypatch, tmp_path, model):
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(commands, "bf16_speedup", lambda *a: pytest.fail("timed"))
    assert commands._auto_amp(_args(), model, tmp_path) == "off"


def test_resume_keeps_the_recorded_choice(monkeypatch, tmp_path, model):
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(commands, "_BF16_SPEEDUPS", {})
    monkeypatch.setattr(commands, "bf16_speedup", lambda m, size: 0.5)
    (tmp_path / "weights").mkdir()
    save_weights(tmp_path / "weights" / "last.safetensors", model.state_dict(),
                 {"train_args": {"amp": "bf16"}})  # as format 1 recorded it
    assert commands._auto_amp(_args(resume=True), model, tmp_path) == "bf16"
    assert commands._auto_amp(_args(resume=False), model, tmp_path) == "off"
    save_weights(tmp_path / "weights" / "last.safetensors", model.state_dict(),
                 {"train_settings": {"amp": "bf16"}})
    assert commands._auto_amp(_args(resume=True), model, tmp_path) == "bf16"
