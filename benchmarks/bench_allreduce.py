"""What the gradient all-reduce of data-parallel training costs for the presets' models, and
what that predicts for training on N machines.

Measured here:

* the gradient bytes of one step: every trainable parameter in float32, as
  ``DistributedDataParallel`` all-reduces them (``scaledet.models.build(name, num_classes=80)``);
* the time of one all-reduce of that many bytes between 2 processes on this machine, over gloo
  (loopback TCP, one core each), the median of ``--repeat``, and of a 4-byte one (the latency);
* the compute of one training step on one process with ``--threads`` torch threads: forward
  and backward of batch ``--batch`` at ``--imgsz`` pixels in float32, timed apart (median of
  ``--steps``, after one warm-up step).

Predicted for N machines on a network of ``--gbps`` Gb/s: a ring all-reduce moves
``2(N-1)/N x bytes`` in and out of each machine and takes ``2(N-1)`` latency-bound message
steps per bucket, so ``t_comm = 2(N-1)/N x bytes / bandwidth + 2(N-1) x alpha x buckets``
(DDP's buckets: a first one of 1 MiB, then 25 MiB each). DDP starts each bucket's all-reduce
while the backward pass is still computing the earlier layers, so communication costs nothing
until it outlasts the backward pass: the first N where ``t_comm > t_backward`` is where more
machines stop helping. Two ways to add machines: each keeps a batch of ``--batch`` (the global
batch grows; the compute per machine stays), or ``--batch`` is the global batch, as
``scaledet train --batch`` is (each machine computes ``1/N`` of it, taken as ``1/N`` of the time).

    .venv/bin/python benchmarks/bench_allreduce.py [--repeat 20] [--steps 3] [--threads 1]
        [--gbps 10] [--alpha-us 50] [--models fcos-n fcos-s fcos-m yolo-n]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from scaledet.engine import distributed
from scaledet.models import build

MIB = 1 << 20
FIRST_BUCKET = 1 * MIB
BUCKET = 25 * MIB
MACHINES = (2, 4, 8, 16, 64)


@dataclass
class Model:
    """One model's measured numbers (times in seconds)."""

    name: str
    params: int
    allreduce_s: float = math.nan
    forward_s: float = math.nan
    backward_s: float = math.nan

    @property
    def bytes(self) -> int:
        return 4 * self.params

    @property
    def buckets(self) -> int:
        return 1 + math.ceil(max(0, self.bytes - FIRST_BUCKET) / BUCKET)

    @property
    def step_s(self) -> float:
        return self.forward_s + self.backward_s


def ring_seconds(nbytes: int, machines: int, bandwidth: float, alpha: float,
                 buckets: int = 1) -> float:
    """Time of a ring all-reduce of ``nbytes`` between ``machines`` on links of ``bandwidth``
    bytes/s each way with ``alpha`` seconds per message step (``buckets`` all-reduces)."""
    n = machines
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * alpha * buckets


def _time_allreduce(sizes: list[int], repeat: int) -> list[float]:
    """Per rank of a :func:`~scaledet.engine.distributed.launch`: the median seconds of an
    all-reduce of each float32 element count in ``sizes``, both ranks starting together."""
    out = []
    for numel in sizes:
        t = torch.ones(numel)
        times = []
        for i in range(repeat + 3):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(t)
            if i >= 3:  # the first calls set up the connections' buffers
                times.append(time.perf_counter() - start)
        out.append(statistics.median(times))
    return out


def fake_batch(batch: int, imgsz: int, num_classes: int = 80) -> tuple[torch.Tensor, list]:
    """``batch`` random images with 6 boxes each, the same every call."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, imgsz, imgsz, generator=g)
    targets = []
    for i in range(batch):
        xy = torch.rand(6, 2, generator=g) * imgsz * 0.7
        wh = 8 + torch.rand(6, 2, generator=g) * imgsz * 0.3
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=imgsz)], 1),
                        "labels": torch.randint(0, num_classes, (6,), generator=g),
                        "image_id": i})
    return images, targets


def time_step(model: torch.nn.Module, batch: int, imgsz: int, steps: int) -> tuple[float, float]:
    """Median seconds of the forward and of the backward pass of a training step."""
    images, targets = fake_batch(batch, imgsz)
    model.train()
    fwd, bwd = [], []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = model(images, targets)["loss"]
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        if i:  # the first step picks oneDNN's kernels
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return statistics.median(fwd), statistics.median(bwd)


def first_n(predicate, limit: int = 4096) -> str:
    """The smallest N in 2..limit with ``predicate(N)``, as text (``> limit`` if none)."""
    for n in range(2, limit + 1):
        if predicate(n):
            return str(n)
    return f"> {limit}"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["fcos-n", "fcos-s", "fcos-m", "yolo-n"])
    parser.add_argument("--repeat", type=int, default=20, help="all-reduces timed per size")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed per model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the timed step (one is steadiest on a shared "
                             "machine, where intra-op threads wait on each other)")
    parser.add_argument("--gbps", type=float, default=10.0, help="network bandwidth, Gb/s")
    parser.add_argument("--alpha-us", type=float, default=50.0,
                        help="latency of one message step on that network, microseconds")
    args = parser.parse_args()
    bandwidth, alpha = args.gbps * 1e9 / 8, args.alpha_us * 1e-6

    models = []
    for name in args.models:
        torch.manual_seed(0)
        m = build(name, num_classes=80)
        models.append(Model(name, sum(p.numel() for p in m.parameters() if p.requires_grad)))
    sizes = [1, *(m.params for m in models)]
    times = distributed.launch(_time_allreduce, 2, (sizes, args.repeat))
    latency = times[0]
    for m, t in zip(models, times[1:]):
        m.allreduce_s = t

    torch.set_num_threads(args.threads)
    for m in models:
        torch.manual_seed(0)
        m.forward_s, m.backward_s = time_step(build(m.name, num_classes=80), args.batch,
                                              args.imgsz, args.steps)

    print(f"{cpu_name()}, torch {torch.__version__}; all-reduce: gloo, 2 processes on this "
          f"machine (one core each), median of {args.repeat}; a 4-byte all-reduce takes "
          f"{latency * 1e6:.0f} us here. Step: one process, {args.threads} thread(s), batch "
          f"{args.batch}, {args.imgsz} px, fp32, median of {args.steps}.\n")
    print("| model | params (M) | gradient MB | DDP buckets | all-reduce here (ms) | here GB/s "
          "| forward (ms) | backward (ms) | all-reduce / step here |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in models:
        print(f"| {m.name} | {m.params / 1e6:.2f} | {m.bytes / 1e6:.2f} | {m.buckets} | "
              f"{m.allreduce_s * 1e3:.2f} | {m.bytes / m.allreduce_s / 1e9:.2f} | "
              f"{m.forward_s * 1e3:.0f} | {m.backward_s * 1e3:.0f} | "
              f"{m.allreduce_s / m.step_s:.4f} |")

    print(f"\nPredicted for N machines on {args.gbps:g} Gb/s ({bandwidth / 1e9:.2f} GB/s, "
          f"alpha {args.alpha_us:g} us), each cell: t_comm in ms / t_comm / (forward + "
          f"backward) with batch {args.batch} per machine / the same with batch {args.batch} "
          "in all.\n")
    head = " | ".join(f"N={n}" for n in MACHINES)
    print(f"| model | {head} | comm > backward from N (batch {args.batch} per machine) "
          f"| from N (batch {args.batch} in all) |")
    print("|---|" + "---:|" * (len(MACHINES) + 2))
    for m in models:
        cells = []
        for n in MACHINES:
            t = ring_seconds(m.bytes, n, bandwidth, alpha, m.buckets)
            split = f"{t / (m.step_s / n):.4f}" if n <= args.batch else "-"  # < 1 image each
            cells.append(f"{t * 1e3:.2f} / {t / m.step_s:.4f} / {split}")
        weak = first_n(lambda n, m=m: ring_seconds(m.bytes, n, bandwidth, alpha, m.buckets)
                       > m.backward_s)
        strong = first_n(lambda n, m=m: ring_seconds(m.bytes, n, bandwidth, alpha, m.buckets)
                         > m.backward_s / n)
        if not strong.isdigit() or int(strong) > args.batch:
            strong = f"never (N <= {args.batch})"
        print(f"| {m.name} | {' | '.join(cells)} | {weak} | {strong} |")


if __name__ == "__main__":
    main()
