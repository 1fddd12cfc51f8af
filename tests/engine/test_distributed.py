"""Data-parallel training (scaledet.engine.distributed): two spawned CPU processes must train
exactly like one process on the whole batch, and ``scaledet train --nproc 2`` must work."""

import csv
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn

from scaledet.cli import main
from scaledet.engine import distributed
from scaledet.engine.trainer import TrainConfig, Trainer
from scaledet.ops.device import resolve_amp
from tests.engine.dummy import TinyLoader


class BatchFreeModel(nn.Module):
    """No BatchNorm, no dropout, batch-mean losses: the gradient of a batch is the mean of the
    gradients of its equal halves, so two ranks must reproduce one process exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.box = nn.Linear(8, 4)
        self.cls = nn.Linear(8, 2)

    def forward(self, images, targets):
        f = self.conv(images).relu().mean(dim=(2, 3))
        gt_box = torch.stack([t["boxes"][0] for t in targets])
        gt_lab = torch.stack([t["labels"][0] for t in targets])
        loss_box = nn.functional.smooth_l1_loss(self.box(f) * 32.0, gt_box) / 32.0
        loss_cls = nn.functional.cross_entropy(self.cls(f), gt_lab)
        return {"loss": loss_box + loss_cls, "loss_box": loss_box, "loss_cls": loss_cls}


class ShardedLoader(TinyLoader):
    """TinyLoader without noise whose batches are split between the ranks like ``_KeySampler``."""

    def __iter__(self):
        rank, world = distributed.rank(), distributed.world_size()
        g = torch.Generator().manual_seed(len(self.epoch_seen))
        order = torch.randperm(len(self.images), generator=g)
        for i in range(len(self)):
            idx = order[i * self.batch:(i + 1) * self.batch][rank::world]
            yield self.images[idx], [{"boxes": self.boxes[j][None],
                                      "labels": self.labels[j][None]} for j in idx]


def _train(out: str) -> dict:
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=3, lr=1e-2, warmup_iters=2, progress=False, plots=False, seed=0)
    trainer = Trainer(BatchFreeModel(), ShardedLoader(n=32, batch=8), cfg, out)
    trainer.fit()
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    every_rank = [weights]
    if distributed.world_size() > 1:
        every_rank = [None] * distributed.world_size()
        dist.all_gather_object(every_rank, weights)
    return {"weights": weights, "every_rank": every_rank, "step": trainer.step}


def test_two_processes_train_like_one(tmp_path):
    one = distributed.launch(_train, 1, (str(tmp_path / "one"),))
    two = distributed.launch(_train, 2, (str(tmp_path / "two"),))
    assert two["step"] == one["step"] == 12
    for name, w in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-4, atol=1e-5)
        assert not torch.equal(w, BatchFreeModel().state_dict()[name])  # it did train
    rank0, rank1 = two["every_rank"]
    for name in rank0:  # DDP keeps the ranks identical
        assert torch.equal(rank0[name], rank1[name])
    assert (tmp_path / "two" / "weights" / "last.safetensors").is_file()  # rank 0 saved


def test_sampler_shards_partition_each_batch():
    from scaledet.data.loader import _KeySampler

    full = list(_KeySampler(10, 4, True, True, seed=3, mosaic=0.5))
    shards = [list(_KeySampler(10, 4, True, True, seed=3, mosaic=0.5, shard=(r, 3)))
              for r in range(3)]
    assert all(len(s) == len(full) == 2 for s in shards)
    for b, batch in enumerate(full):
        parts = [k for s in shards for k in s[b]]
        assert sorted(parts) == sorted(batch)


def test_launch_rejects_bad_nproc():
    with pytest.raises(ValueError, match="nproc"):
        distributed.launch(print, 0)


def test_launch_from_a_script_read_on_stdin(tmp_path):
    """``python - <<EOF``: the main script has no file for the spawned ranks to re-run (they
    used to fail looking for ``<stdin>`` and leave the launch waiting)."""
    script = ("import os\nfrom scaledet.engine.distributed import launch\n"
              "print(launch(os.getpid, 2) != os.getpid())\n")
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"  # rank 0's pid, not this process's


def test_cli_train_with_two_processes(tmp_path, capsys):
    data = tmp_path / "synth"
    assert main(["data", "synth", str(data), "--train", "8", "--val", "4", "--imgsz", "64"]) == 0
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "fcos-n", "--imgsz", "64",
                 "--epochs", "2", "--batch", "4", "--workers", "0", "--nproc", "2",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[-1]["mAP"] != ""
    assert (out / "weights" / "best.safetensors").is_file()
    for bad, message in ((["--nproc", "two"], "nproc must be a number or auto"),
                         (["--batch", "2", "--nproc", "3"], "nproc 3 is more than batch 2"),
                         (["--nproc", "2", "--model", "fcos-xxl"], "unknown model preset"),
                         (["--nproc", "2", "--train-option", "x=1"], "not a field of TrainConfig")):
        assert main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), *bad]) == 2
        assert message in capsys.readouterr().err


def test_auto_nproc_keeps_eight_images_per_rank(monkeypatch):
    monkeypatch.setattr(distributed, "threads_per_rank", lambda n: 16 // n)
    assert distributed.auto_nproc("cpu", 16) == 2
    assert distributed.auto_nproc("cpu", 64) == 8
    assert distributed.auto_nproc("cpu", 4) == 1
    monkeypatch.setattr(distributed, "threads_per_rank", lambda n: 1)
    assert distributed.auto_nproc("cpu", 16) == 1
    assert distributed.auto_nproc("cuda:0", 16) == 1


def test_local_rank_follows_torchrun_not_the_global_rank(monkeypatch):
    """Under multi-node torchrun, global rank 5 may be the second process on its machine: it
    must drive cuda:1, not cuda:5."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert distributed.local_rank() == distributed.rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed, "rank", lambda: 5)
    assert distributed.local_rank() == 1


def test_grad_ckpt_with_two_processes_trains_the_same_weights(tmp_path):
    """Checkpointed backbone blocks under DistributedDataParallel: the recomputed forward must
    give the same gradients (and BatchNorm statistics) as the stored one."""
    from scaledet.models.checkpoint import load_weights

    data = tmp_path / "synth"
    assert main(["data", "synth", str(data), "--train", "8", "--val", "2", "--imgsz", "64"]) == 0
    weights = {}
    for ckpt in ([], ["--grad-ckpt"]):
        out = tmp_path / f"run{len(ckpt)}"
        assert main(["train", "--data", str(data), "--model", "fcos-n", "--imgsz", "64",
                     "--epochs", "1", "--batch", "4", "--workers", "0", "--nproc", "2",
                     "--amp", "off", "--eval-interval", "0", "--out", str(out), *ckpt]) == 0
        weights[len(ckpt)] = load_weights(out / "weights" / "last.safetensors")[0]
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-4, atol=1e-5, msg=k)


def _cores_inside_and_after() -> dict:
    import os

    own = (sorted(os.sched_getaffinity(0)), torch.get_num_threads())
    with distributed.all_cores():
        inside = (sorted(os.sched_getaffinity(0)), torch.get_num_threads())
    after = (sorted(os.sched_getaffinity(0)), torch.get_num_threads())
    return {"own": own, "inside": inside, "after": after}


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="Linux only")
def test_all_cores_lends_rank_zero_every_core_and_gives_them_back():
    """Rank 0 validates while the other ranks wait: inside ``all_cores`` it runs on all the
    cores ``launch`` had (one thread each), afterwards on its own share again."""
    import os

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    got = distributed.launch(_cores_inside_and_after, 2)
    per = len(cores) // 2
    assert got["own"] == (cores[:per], per) == got["after"]
    assert got["inside"] == (cores, len(cores))
    with distributed.all_cores():  # outside a launch: nothing changes
        assert sorted(os.sched_getaffinity(0)) == cores


def test_cli_train_defaults_resolve_nproc_and_workers(tmp_path, monkeypatch):
    """``--nproc`` defaults to auto and ``--workers`` to 0 when each CPU rank has one core,
    else 2 shared by the ranks; the arguments the ranks get (and the checkpoints record) hold
    the concrete numbers."""
    import dataclasses
    import json

    seen = {}

    def fake_launch(fn, nproc, args, device_type):
        seen.update(nproc=nproc, workers=args[0].workers, recorded=args[0].nproc)
        json.dumps(dataclasses.asdict(args[0]))  # the recorded settings stay JSON-safe
        return {"skipped_steps": 0, "best_map": 0.0, "metrics": {}, "epoch": 0, "step": 0,
                "elapsed_s": 0.0}

    monkeypatch.setattr(distributed, "launch", fake_launch)
    monkeypatch.setattr(distributed, "auto_nproc", lambda device, batch: 2)
    cores = {"n": 2}
    monkeypatch.setattr(distributed, "threads_per_rank", lambda nproc: max(1, cores["n"] // nproc))
    data = tmp_path / "synth"
    assert main(["data", "synth", str(data), "--train", "8", "--val", "4", "--imgsz", "64"]) == 0
    base = ["train", "--data", str(data), "--imgsz", "64", "--epochs", "1"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert seen == {"nproc": 2, "workers": 0, "recorded": 2}  # one core per rank
    cores["n"] = 4
    assert main([*base, "--out", str(tmp_path / "a2")]) == 0
    assert seen == {"nproc": 2, "workers": 1, "recorded": 2}  # two cores per rank
    assert main([*base, "--nproc", "1", "--out", str(tmp_path / "b")]) == 0
    assert seen == {"nproc": 1, "workers": 2, "recorded": 1}
    assert main([*base, "--workers", "3", "--out", str(tmp_path / "c")]) == 0
    assert seen == {"nproc": 2, "workers": 3, "recorded": 2}


@pytest.mark.parametrize("model", ["pose-heatmap-n", "pose-rle-n"])
def test_cli_pose_train_with_two_processes(tmp_path, model):
    """A pose head reads one neck level, so some parameters get no gradient: data-parallel
    training must still step (DDP told to look for them)."""
    data = tmp_path / "kp"
    assert main(["data", "synth", str(data), "--task", "keypoints", "--train", "6", "--val",
                 "2", "--imgsz", "96"]) == 0
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", model, "--epochs", "2", "--batch",
                 "4", "--workers", "0", "--nproc", "2", "--set", "input_size=[64,64]",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[-1]["mAP"] != ""


def test_cli_rtdetr_train_with_two_processes_and_amp_auto(tmp_path):
    """The set head's loss all-reduces its box count across ranks, so ``--amp auto``'s timing
    must run on every rank (run on rank 0 alone it waited for the others forever). Run as a
    subprocess with a timeout: a hang fails the test instead of the suite."""
    data = tmp_path / "synth"
    assert main(["data", "synth", str(data), "--train", "8", "--val", "2", "--imgsz", "96"]) == 0
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scaledet.cli", "train", "--data", str(data), "--model",
           "rtdetr-n", "--imgsz", "96", "--epochs", "1", "--batch", "4", "--workers", "0",
           "--nproc", "2", "--amp", "auto", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    if resolve_amp("auto", torch.device("cpu")) == torch.bfloat16:  # the timed path ran
        assert done.stdout.count("amp auto:") == 1
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]
