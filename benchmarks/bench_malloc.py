"""glibc malloc settings and the fcos-n training step: default vs ``keep_freed_memory``.

    .venv/bin/python benchmarks/bench_malloc.py [--rounds 4] [--steps 30] [--batch 8]

``scaledet.engine.trainer.keep_freed_memory`` calls ``mallopt`` so that freed blocks up to
32 MB stay in the heap instead of being unmapped and faulted in again at the next step. The
setting cannot be undone inside a process, so each round starts two fresh processes, one per
setting, in alternating order; each times ``--steps`` training steps (forward, backward,
AdamW) of fcos-n after 5 warm-up steps, one torch thread, 320 px, bf16 autocast where the CPU
has native bf16. Prints each process's median step time and the median per-round ratio
default / kept (above 1: keeping the memory is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import statistics, sys, time
import torch
from bench_engine import fake_batch
from scaledet.engine.runtime import keep_freed_memory
from scaledet.ops.device import cpu_has_native_bf16
from scaledet.models import build

mode, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "kept":
    assert keep_freed_memory(), "mallopt not applied (not glibc, or MALLOC_* set)"
torch.set_num_threads(1)
torch.manual_seed(0)
model = build("fcos-n", num_classes=8).train().to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
images, targets = fake_batch(batch, 320, torch.device("cpu"))
bf16 = cpu_has_native_bf16()

def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(images, targets)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

for _ in range(5):
    step()
times = []
for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
print(statistics.median(times) * 1000)
"""


def run(mode: str, steps: int, batch: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                      env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(steps), str(batch)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    ratios = []
    print(f"{'round':>5} {'default ms':>11} {'kept ms':>8} {'default/kept':>13}")
    for r in range(args.rounds):
        order = ("default", "kept") if r % 2 == 0 else ("kept", "default")
        t = {mode: run(mode, args.steps, args.batch) for mode in order}
        ratios.append(t["default"] / t["kept"])
        print(f"{r:>5} {t['default']:>11.1f} {t['kept']:>8.1f} {ratios[-1]:>12.3f}x")
    print(f"median default / kept: {statistics.median(ratios):.3f}x over {args.rounds} rounds")


if __name__ == "__main__":
    main()
