import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scaledet.engine.checkpoint import load_train_state, save_train_state
from scaledet.models import checkpoint as ckpt


def _state(v: float) -> dict:
    return {"a.weight": torch.full((3, 4), v), "a.bias": torch.arange(3.0) + v}


def test_weights_roundtrip_with_metadata_in_header_and_beside(tmp_path):
    path = tmp_path / "w" / "best.safetensors"
    meta = {"model": "fcos-n", "class_names": ["a", "b"], "imgsz": 320,
            "root": tmp_path, "tuple": (1, 2)}
    ckpt.save_weights(path, _state(1.0), meta)
    state, got = ckpt.load_weights(path)
    assert torch.equal(state["a.weight"], torch.full((3, 4), 1.0))
    assert got["model"] == "fcos-n" and got["class_names"] == ["a", "b"]
    assert got["root"] == str(tmp_path) and got["tuple"] == [1, 2]
    assert json.loads(path.with_suffix(".json").read_text()) == got
    # the header is authoritative: a stale json beside does not change what is loaded
    path.with_suffix(".json").write_text('{"model": "stale"}')
    assert ckpt.load_weights(path)[1]["model"] == "fcos-n"


def test_shared_storage_tensors_can_be_saved(tmp_path):
    w = torch.randn(4, 4)
    ckpt.save_weights(tmp_path / "x.safetensors", {"a": w, "b": w, "c": w[0]}, {})
    state, _ = ckpt.load_weights(tmp_path / "x.safetensors")
    assert torch.equal(state["c"], w[0])


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        ckpt.load_weights(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        ckpt.load_weights(bad)
    with pytest.raises(ValueError, match="must end with .safetensors"):
        ckpt.save_weights(tmp_path / "x.pt", _state(0.0), {})
    with pytest.raises(FileNotFoundError, match="resume state not found"):
        load_train_state(tmp_path / "none.state.pt")


def test_failed_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    ckpt.save_weights(path, _state(1.0), {"epoch": 1})
    save_train_state(tmp_path / "last.state.pt", {"epoch": 1, "t": torch.ones(2)})

    def crash(fd):  # the process "dies" after the bytes are written, before the rename
        raise OSError("simulated crash during fsync")

    monkeypatch.setattr(ckpt.os, "fsync", crash)
    with pytest.raises(OSError, match="simulated"):
        ckpt.save_weights(path, _state(2.0), {"epoch": 2})
    with pytest.raises(OSError, match="simulated"):
        save_train_state(tmp_path / "last.state.pt", {"epoch": 2, "t": torch.zeros(2)})
    monkeypatch.undo()
    state, meta = ckpt.load_weights(path)
    assert meta["epoch"] == 1 and torch.equal(state["a.weight"], torch.full((3, 4), 1.0))
    assert load_train_state(tmp_path / "last.state.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last.json", "last.safetensors", "last.state.pt"]  # no temp files left behind


_KILL_SCRIPT = """
import sys, torch
from scaledet.models.checkpoint import save_weights
i = 0
while True:
    i += 1
    save_weights(sys.argv[1], {"w": torch.full((256, 1024), float(i))}, {"i": i})
    print(i, flush=True)
"""


def test_sigkill_during_saves_never_corrupts_the_file(tmp_path):
    path = tmp_path / "last.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # a few completed saves, then kill at an arbitrary point
            assert proc.stdout.readline().strip()
        time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    state, meta = ckpt.load_weights(path)
    assert torch.all(state["w"] == float(meta["i"]))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_resume_state_loading_never_executes_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.state.pt"
    path.write_bytes(pickle.dumps({"epoch": _Evil()}, protocol=2))
    with pytest.raises(ValueError, match="cannot read resume state"):
        load_train_state(path)
    assert not Path("pwned.txt").exists()
