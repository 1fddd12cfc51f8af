import csv
import math
import sys
import time

import pytest
import torch

from scaledet.engine import trainer as trainer_mod
from scaledet.engine.checkpoint import load_train_state
from scaledet.engine.optim import enable_grad_checkpointing
from scaledet.engine.trainer import TrainConfig, Trainer, TrainingDiverged
from scaledet.models.checkpoint import load_weights
from scaledet.ops import device as device_mod
from scaledet.ops.device import resolve_amp
from tests.engine.dummy import TinyLoader, TinyModel, tiny_eval


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, lr=3e-3, warmup_iters=3, ema_tau=5.0, progress=False, seed=1,
                plots=False)
    return TrainConfig(**{**base, **kw})


def _trainer(tmp_path, cfg, model=None, **kw) -> Trainer:
    torch.manual_seed(123)
    return Trainer(model or TinyModel(), TinyLoader(), cfg, tmp_path, evaluate=tiny_eval,
                   meta={"model": "tiny", "class_names": ["a", "b"]}, **kw)


class _StopAfterOneEpoch(Trainer):
    """Simulates a run killed right after its first epoch's checkpoint."""

    def finished(self) -> bool:
        return self.epoch >= 1 or super().finished()



class _Clock:
    """``time`` as the trainer module sees it, with ``monotonic`` read from ``clock[0]``:
    patching the real ``time.monotonic`` would also freeze every timeout in the process (a
    data loader's worker shutdown waits on it, and can hang)."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock

    def monotonic(self) -> float:
        return self.clock[0]

    def __getattr__(self, name: str):
        return getattr(time, name)


def _freeze_trainer_clock(monkeypatch, clock: list[float]) -> None:
    monkeypatch.setattr(trainer_mod, "time", _Clock(clock))

def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    straight = _trainer(tmp_path / "a", _cfg())
    straight.fit()
    torch.manual_seed(123)
    first = _StopAfterOneEpoch(TinyModel(), TinyLoader(), _cfg(), tmp_path / "b",
                               evaluate=tiny_eval)
    first.fit()
    assert first.epoch == 1
    torch.manual_seed(999)  # a different init and RNG: everything must come from the state file
    resumed = Trainer(TinyModel(), TinyLoader(), _cfg(), tmp_path / "b", evaluate=tiny_eval)
    resumed.fit(resume=True)
    assert resumed.loader.epoch_seen == [1]
    assert len(straight.history) == len(resumed.history) == 12
    assert resumed.history == pytest.approx(straight.history, abs=1e-6, rel=0)
    for a, b in zip(straight.ema.module.state_dict().values(),
                    resumed.ema.module.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    with (tmp_path / "b" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_outputs_checkpoints_and_metrics(tmp_path):
    t = _trainer(tmp_path, _cfg(epochs=3, eval_interval=2, plots=True))
    summary = t.fit()
    assert summary["epoch"] == 3 and summary["step"] == 18
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"loss", "loss_box", "loss_cls", "lr", "images_per_s", "mAP", "mAP50"} <= set(rows[0])
    assert rows[0]["mAP"] == "" and rows[1]["mAP"] != "" and rows[2]["mAP"] != ""  # every 2 + end
    assert float(rows[2]["loss"]) < float(rows[0]["loss"])
    _, meta = load_weights(tmp_path / "weights" / "last.safetensors")
    assert meta["epoch"] == 3 and meta["step"] == 18 and meta["class_names"] == ["a", "b"]
    assert meta["train_config"]["epochs"] == 3
    best_state, best_meta = load_weights(tmp_path / "weights" / "best.safetensors")
    assert best_meta["best_map"] == pytest.approx(max(float(r["mAP"]) for r in rows[1:]))
    # last/best hold the EMA weights, the state file the raw ones
    assert torch.equal(load_weights(tmp_path / "weights" / "last.safetensors")[0]["box.weight"],
                       t.ema.module.box.weight)
    state = load_train_state(tmp_path / "weights" / "last.state.pt")
    assert torch.equal(state["model"]["box.weight"], t.model.box.weight.detach())
    assert (tmp_path / "plots" / "losses.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "map.png").stat().st_size > 1000


def test_nan_losses_are_skipped_and_reported(tmp_path, capsys):
    model = TinyModel(nan_calls={2, 3, 7})
    t = _trainer(tmp_path, _cfg(epochs=2), model=model)
    summary = t.fit()
    assert summary["skipped_steps"] == 3
    assert [i + 1 for i, v in enumerate(t.history) if math.isnan(v)] == [2, 3, 7]
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert all(torch.isfinite(p).all() for p in t.ema.module.parameters())
    assert "step 3: non-finite loss, step skipped (2 in a row)" in capsys.readouterr().out


def test_persistent_nan_stops_training_with_a_clear_message(tmp_path):
    model = TinyModel(nan_calls=set(range(4, 100)))
    t = _trainer(tmp_path, _cfg(epochs=50, max_bad_steps=5), model=model)
    with pytest.raises(TrainingDiverged, match="5 consecutive steps with a non-finite loss"):
        t.fit()
    assert t.step == 8


def test_time_budget_stops_and_anneals_the_lr(tmp_path, monkeypatch):
    clock = [0.0]
    _freeze_trainer_clock(monkeypatch, clock)
    t = _trainer(tmp_path, _cfg(epochs=None, time_minutes=1.0, warmup_iters=0, min_lr_ratio=0.1))
    lrs = []
    orig_step = t._train_step

    def step(images, targets):  # every step "takes" 2 s of wall clock
        clock[0] += 2.0
        lrs.append(t.optimizer.param_groups[0]["lr"])
        return orig_step(images, targets)

    t._train_step = step
    summary = t.fit()
    assert summary["step"] == 30  # 60 s / 2 s, mid-epoch (6 steps per epoch)
    assert summary["epoch"] == 5 and summary["metrics"]  # final evaluation ran
    base = t.optimizer.param_groups[0]["initial_lr"]
    # cosine over progress = elapsed / budget: lr(step k) uses progress 2k/60 (k from 0)
    for k in (0, 10, 29):
        expect = base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 2 * k / 60)))
        assert lrs[k] == pytest.approx(expect, rel=1e-6)


def test_epochs_schedule_reaches_the_floor(tmp_path):
    t = _trainer(tmp_path, _cfg(epochs=2, warmup_iters=0, min_lr_ratio=0.2))
    t.fit()
    # the lr used by the last step is set from progress (n-1)/n
    base = t.optimizer.param_groups[0]["initial_lr"]
    expect = base * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 11 / 12)))
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(expect)


def test_mosaic_is_closed_for_the_final_fraction(tmp_path):
    t = _trainer(tmp_path, _cfg(epochs=10, close_mosaic=0.15, eval_interval=0))
    t.fit()
    assert t.loader.mosaic_set == [(8, 0.0)]  # epochs 9 and 10 (0-based 8, 9): the last 20%
    t = _trainer(tmp_path / "b", _cfg(epochs=3, close_mosaic=0.0, eval_interval=0))
    t.fit()
    assert t.loader.mosaic_set == []


def test_progressive_resizing_switches_to_full_size_once(tmp_path):
    t = _trainer(tmp_path, _cfg(epochs=10, progressive_imgsz=24, progressive_until=0.5,
                                eval_interval=0))
    t.fit()
    # epochs 1-5 end at progress <= 0.5: small; epoch 6 (0-based 5) on: the loader's own size
    assert t.loader.imgsz_set == [(0, 24), (5, None)]
    t = _trainer(tmp_path / "b", _cfg(epochs=3, eval_interval=0))
    t.fit()
    assert t.loader.imgsz_set == []
    with pytest.raises(ValueError, match="progressive_imgsz"):
        _cfg(epochs=1, progressive_imgsz=4)


def test_mosaic_closing_under_a_time_budget(tmp_path, monkeypatch):
    clock = [0.0]
    _freeze_trainer_clock(monkeypatch, clock)
    t = _trainer(tmp_path, _cfg(epochs=None, time_minutes=1.0, close_mosaic=0.15,
                                eval_interval=0))
    orig_step = t._train_step

    def step(images, targets):  # 6 steps per epoch, 1.5 s each: 9 s per epoch
        clock[0] += 1.5
        return orig_step(images, targets)

    t._train_step = step
    t.fit()
    # at the start of epoch 6 (0-based 5): 45 s elapsed + 9 s expected = 54 s = 0.9 > 0.85
    assert t.loader.mosaic_set == [(5, 0.0)]


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = TinyModel()
    a.drop.p = 0.0
    b = TinyModel()
    b.load_state_dict(a.state_dict())
    b.drop.p = 0.0
    assert enable_grad_checkpointing(b) == 2
    assert list(a.state_dict()) == list(b.state_dict())
    loader = TinyLoader()
    images, targets = next(iter(loader))
    for m in (a, b):
        m.train()
        m(images, targets)["loss"].backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6), name
    b.eval()
    a.eval()
    assert torch.allclose(a(images)[0]["boxes"], b(images)[0]["boxes"])


def test_grad_ckpt_option_trains(tmp_path):
    t = _trainer(tmp_path, _cfg(epochs=1, grad_ckpt=True))
    assert t.fit()["step"] == 6
    assert not hasattr(t.ema.module.backbone[0].forward, "func")  # the EMA copy is plain


def test_sgd_and_bf16_autocast_run(tmp_path):
    t = _trainer(tmp_path, _cfg(epochs=1, optimizer="sgd", amp="bf16", lr=0.01))
    assert t.amp_dtype == torch.bfloat16
    t.fit()
    assert all(math.isfinite(v) for v in t.history)
    groups = t.optimizer.param_groups
    assert groups[0]["weight_decay"] == 5e-4 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in groups[1]["params"])


def test_config_and_device_errors(tmp_path):
    with pytest.raises(ValueError, match="--epochs or --time"):
        TrainConfig()
    with pytest.raises(ValueError, match="--epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="--amp"):
        TrainConfig(epochs=1, amp="fp8")
    with pytest.raises(ValueError, match="--optimizer"):
        TrainConfig(epochs=1, optimizer="lion")
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        resolve_amp("fp16", torch.device("cpu"))
    native = device_mod.cpu_has_native_bf16()
    assert resolve_amp("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)
    assert resolve_amp("off", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="unknown device"):
        _trainer(tmp_path, _cfg(device="gpu0"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            _trainer(tmp_path, _cfg(device="cuda"))
    with pytest.raises(FileNotFoundError, match="resume state not found"):
        _trainer(tmp_path, _cfg()).fit(resume=True)


def test_resume_of_a_finished_run_does_nothing(tmp_path, capsys):
    _trainer(tmp_path, _cfg(epochs=1)).fit()
    t = _trainer(tmp_path, _cfg(epochs=1))
    assert t.fit(resume=True)["step"] == 6
    assert "already finished" in capsys.readouterr().out


_MALLINFO = """
import ctypes, sys
import numpy as np
from scaledet.engine.runtime import keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
applied = keep_freed_memory() if sys.argv[1] == "on" else False
block = np.ones(8 << 20, np.uint8)
del block
print(applied, libc.mallinfo2().fordblks >= 8 << 20)  # the freed 8 MB stayed in the heap
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_keep_freed_memory_keeps_a_freed_block_in_the_heap():
    import ctypes
    import os
    import subprocess

    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 (glibc >= 2.33)
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    run = [sys.executable, "-c", _MALLINFO]
    for mode, expected in (("on", "True True"), ("off", "False False")):
        got = subprocess.run([*run, mode], env=env, capture_output=True, text=True, check=True)
        assert got.stdout.split() == expected.split(), got.stderr
    env["MALLOC_ARENA_MAX"] = "2"  # the user tunes malloc: leave it alone
    got = subprocess.run([*run, "on"], env=env, capture_output=True, text=True, check=True)
    assert got.stdout.split() == ["False", "False"]


def test_stop_mid_epoch_resumes_with_a_loader_that_cannot_start_there(tmp_path, monkeypatch):
    """A loader without ``set_start_batch`` (this one): the resumed epoch drops the batches
    trained before the stop and the run ends after the same number of steps."""
    import os
    import signal

    original = Trainer._train_step

    def step_and_stop(self, images, targets):
        if self.step + 1 == 8:  # epoch 2, batch 2 of 6
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, images, targets)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_train_step", step_and_stop)
        first = _trainer(tmp_path, _cfg())
        summary = first.fit()
    assert summary["interrupted"] and summary["step"] == 8 and summary["epoch_batches"] == 2
    resumed = Trainer(TinyModel(), TinyLoader(), _cfg(), tmp_path, evaluate=tiny_eval)
    done = resumed.fit(resume=True)
    assert not done["interrupted"] and done["step"] == 12 and done["epoch"] == 2
