"""Ctrl-C (SIGINT) or SIGTERM during training: the run stops at the end of the current step,
saves a resumable state there (mid-epoch), and ``resume`` finishes with the same weights as a
run that was never interrupted."""

import os
import signal

import pytest
import torch

import scaledet
from scaledet.cli import main
from scaledet.data import make_synthetic_dataset
from scaledet.engine.trainer import Trainer
from scaledet.models.checkpoint import load_weights

TINY = {"backbone.widths": [4, 8, 8, 16, 16], "neck.channels": 8}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("stop") / "d", n_train=24, n_val=4,
                                  imgsz=64, seed=0)


def _train(data, out, **kw):
    return scaledet.train(data, epochs=2, imgsz=64, batch=8, out=out, nproc=1, workers=0,
                          amp="off", model_options=TINY, **kw)


def _signal_at(monkeypatch, step: int, sig=signal.SIGINT):
    """Send ``sig`` to this process during the given optimizer step (1-based)."""
    original = Trainer._train_step

    def step_and_signal(self, images, targets):
        if self.step + 1 == step:
            os.kill(os.getpid(), sig)
        return original(self, images, targets)

    monkeypatch.setattr(Trainer, "_train_step", step_and_signal)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_mid_epoch_then_resume_matches_the_straight_run(data, tmp_path, monkeypatch, sig):
    straight = _train(data, tmp_path / "straight")
    assert straight.steps == 6 and not straight.interrupted
    with monkeypatch.context() as m:
        _signal_at(m, 5, sig)  # epoch 2, its second of three batches
        stopped = _train(data, tmp_path / "run")
    assert stopped.interrupted and stopped.steps == 5 and stopped.epochs == 1
    assert (tmp_path / "run" / "weights" / "last.state.pt").is_file()
    resumed = _train(data, tmp_path / "run", resume=True)
    assert resumed.steps == 6 and not resumed.interrupted
    want, _ = load_weights(straight.last)
    got, _ = load_weights(resumed.last)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)


def test_cli_says_what_was_saved_and_how_to_resume(data, tmp_path, monkeypatch, capsys):
    _signal_at(monkeypatch, 2)
    out = tmp_path / "cli"
    argv = ["train", "--data", str(data), "--imgsz", "64", "--epochs", "2", "--batch", "8",
            "--nproc", "1", "--workers", "0", "--amp", "off", "--out", str(out),
            "--set", "neck.channels=8"]
    monkeypatch.setattr("sys.argv", ["scaledet", *argv])
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted: the run is saved in" in err
    assert f"scaledet train --data {data}" in err and err.rstrip().endswith("--resume")
    assert load_weights(out / "weights" / "last.safetensors")[1]["interrupted"] is True
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
