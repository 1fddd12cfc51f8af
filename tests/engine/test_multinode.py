"""Training on several machines through ``torchrun``: two "machines" on this one (two torchrun
agents meeting at a c10d rendezvous on localhost, one process each, gloo), with a shared output
folder and with none (each node in its own working directory, ``--out`` relative to it)."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from scaledet.cli import main
from scaledet.engine import distributed
from scaledet.engine.fit import TrainSettings, default_workers, resolve
from scaledet.engine.trainer import TrainConfig, Trainer
from scaledet.models.checkpoint import load_weights
from tests.engine.test_distributed import BatchFreeModel, ShardedLoader

TIMEOUT_S = 300
FAST = ["--set", "backbone.widths=[4,8,8,16,16]", "--set", "neck.channels=8",
        "--train-option", "plots=false"]


# ---- the launcher's environment -----------------------------------------------------------------

def test_torchrun_env_reads_the_launchers_variables():
    assert distributed.torchrun_env({}) is None
    assert distributed.torchrun_env({"RANK": "3"}) is None
    place = distributed.torchrun_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                      "LOCAL_WORLD_SIZE": "2"})
    assert place == distributed.Torchrun(rank=3, world_size=4, local_rank=1, local_world_size=2)
    # without the LOCAL_* pair: one machine
    assert distributed.torchrun_env({"RANK": "1", "WORLD_SIZE": "2"}) == distributed.Torchrun(
        1, 2, 1, 2)
    for bad in ({"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "2", "WORLD_SIZE": "2"},
                {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}):
        with pytest.raises(ValueError):
            distributed.torchrun_env(bad)


def test_under_torchrun_nproc_is_the_world_and_workers_are_shared_per_machine(tmp_path,
                                                                             monkeypatch, capsys):
    """Rank 1 of 4, two per machine: ``nproc`` is 4 whatever was asked, and the default data
    workers are those of 2 processes on this machine, not of 4."""
    assert main(["data", "synth", str(tmp_path / "d"), "--train", "8", "--val", "2",
                 "--imgsz", "64"]) == 0
    capsys.readouterr()
    for key, value in {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                       "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "threads_per_rank", lambda nproc: max(1, 4 // nproc))
    assert distributed.local_world_size() == 2
    s = resolve(TrainSettings(data=str(tmp_path / "d"), epochs=1, nproc=3), num_train=8)
    assert s.nproc == 4
    assert s.workers == default_workers("cpu", 2) == 1
    assert capsys.readouterr().out == ""  # notes are rank 0's to print


# ---- resume where the machines share no filesystem (spawned ranks, one folder each) ------------

class EpochLoader(ShardedLoader):
    """ShardedLoader whose order depends on the epoch given to ``set_epoch`` only, as the real
    loader's: a resumed run sees the batches an uninterrupted one would."""

    def __iter__(self):
        rank, world = distributed.rank(), distributed.world_size()
        g = torch.Generator().manual_seed(self.epoch_seen[-1])
        order = torch.randperm(len(self.images), generator=g)
        for i in range(len(self)):
            idx = order[i * self.batch:(i + 1) * self.batch][rank::world]
            yield self.images[idx], [{"boxes": self.boxes[j][None],
                                      "labels": self.labels[j][None]} for j in idx]


class StopAt(Trainer):
    """Rank 1 asks to stop at ``stop_step`` (as a Ctrl-C on its machine would)."""

    stop_step = 0

    def _train_step(self, images, targets):
        if self.step + 1 == self.stop_step and distributed.rank() == 1:
            self._stop.requested = True
        return super()._train_step(images, targets)


def _trainer(cls: type[Trainer], out: Path) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=3, lr=1e-2, warmup_iters=2, progress=False, plots=False, seed=0)
    return cls(BatchFreeModel(), EpochLoader(n=32, batch=8), cfg, out)


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _straight_stopped_resumed(tmp: str) -> list[dict]:
    tmp_path = Path(tmp)
    straight = _trainer(Trainer, tmp_path / "straight")
    straight.fit()
    StopAt.stop_step = 6  # epoch 2, its second of four batches
    own = tmp_path / f"machine{distributed.rank()}" / "run"  # this rank's own disk
    stopped = _trainer(StopAt, own)
    stopped.fit()
    resumed = _trainer(Trainer, own)
    resumed.fit(resume=True)
    mine = {"straight": _weights(straight), "resumed": _weights(resumed),
            "stopped_step": stopped.step, "resumed_step": resumed.step,
            "interrupted": stopped.interrupted}
    every_rank: list = [None] * distributed.world_size()
    dist.all_gather_object(every_rank, mine)
    return every_rank


def test_resume_without_a_shared_filesystem_continues_exactly(tmp_path):
    """Rank 0 alone holds the resume state; it sends it to rank 1, and both finish with the
    weights of a run that was never stopped."""
    ranks = distributed.launch(_straight_stopped_resumed, 2, (str(tmp_path),))
    assert not (tmp_path / "machine1").exists()  # rank 1 wrote nothing
    assert (tmp_path / "machine0" / "run" / "weights" / "last.state.pt").is_file()
    want = ranks[0]["straight"]
    for r in ranks:
        assert r["interrupted"] and r["stopped_step"] == 6 and r["resumed_step"] == 12
        for name, w in want.items():
            torch.testing.assert_close(r["resumed"][name], w, rtol=0, atol=1e-6, msg=name)


# ---- scaledet train under torchrun, two nodes ----------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_core(core: int | None):
    """A preexec_fn pinning a node to one core, as if it were a machine of its own."""
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


def _torchrun(train_args: list[str], cwds: list[Path]) -> list[tuple[int, str]]:
    """Run ``scaledet train TRAIN_ARGS`` on two torchrun nodes (node i in ``cwds[i]``, started in
    that order); return each node's exit code and output. Node 0 starts first, so at the c10d
    rendezvous its process, the smaller pid on this one host, gets rank 0."""
    port, run_id = _free_port(), uuid.uuid4().hex[:8]
    scaledet = str(Path(sys.executable).parent / "scaledet")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT")}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    procs = []
    for node, cwd in enumerate(cwds):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--nproc-per-node", "1", "--node-rank", str(node), "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", run_id, "--no-python",
               scaledet, "train", *train_args]
        procs.append(subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=_one_core(cores[node] if len(cores) >= 2 else None)))
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT_S)
            results.append((p.returncode, out))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        logs = [p.communicate()[0] for p in procs]
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S} s:\n" + _show(
            [(None, log) for log in logs]))
    return results


def _show(results: list[tuple[int | None, str]]) -> str:
    return "\n".join(f"---- node {i} (exit code {rc}) ----\n{out}"
                     for i, (rc, out) in enumerate(results))


def _rows(run: Path) -> list[str]:
    return [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())]


@pytest.mark.slow
@pytest.mark.parametrize("shared", [True, False], ids=["shared-folder", "own-folders"])
def test_two_torchrun_nodes_train_and_resume(tmp_path, shared):
    data = tmp_path / "data"
    assert main(["data", "synth", str(data), "--train", "8", "--val", "4", "--imgsz", "64"]) == 0
    cwds = [tmp_path / "node0", tmp_path / "node1"]
    for cwd in cwds:
        cwd.mkdir()
    out = str(tmp_path / "run") if shared else "run"  # own folders: relative to each node
    args = ["--data", str(data), "--imgsz", "64", "--batch", "4", "--workers", "0",
            "--amp", "off", "--out", out, *FAST]

    first = _torchrun([*args, "--epochs", "1"], cwds)
    assert [rc for rc, _ in first] == [0, 0], _show(first)
    logs = [log for _, log in first]
    assert "2 processes (1 on this machine)" in logs[0], _show(first)
    assert all("best mAP" not in log and "training fcos-n" not in log for log in logs[1:]), \
        _show(first)  # rank 0 alone reports
    run = tmp_path / "run" if shared else cwds[0] / "run"
    assert sorted(p.name for p in (run / "weights").iterdir()) == [
        "best.json", "best.safetensors", "last.json", "last.safetensors", "last.state.pt"]
    if not shared:
        assert not (cwds[1] / "run").exists()  # rank 1 wrote nothing on its machine
    assert _rows(run) == ["1"]

    again = _torchrun([*args, "--epochs", "2", "--resume"], cwds)
    assert [rc for rc, _ in again] == [0, 0], _show(again)
    assert "resumed from" in again[0][1] and "epoch 1, step 2" in again[0][1], _show(again)
    assert _rows(run) == ["1", "2"]
    assert load_weights(run / "weights" / "last.safetensors")[1]["epoch"] == 2
    if not shared:
        assert not (cwds[1] / "run").exists()
        # a finished run is never overwritten silently: both nodes stop with rank 0's reason
        refused = _torchrun([*args, "--epochs", "2"], cwds)
        assert all(rc != 0 and "already holds a training run" in log for rc, log in refused), \
            _show(refused)
