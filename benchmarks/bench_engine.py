"""Training-engine speed choices, measured side by side in the same process.

* CPU: a full fcos-n training step (forward, backward, AdamW step, EMA update) and an inference
  forward in fp32 vs bf16 autocast; decides ``--amp auto`` on CPU.
* CUDA (when present): the training step in fp32 vs bf16 vs fp16 (+GradScaler), and peak memory
  with / without ``--grad-ckpt``.

Contenders alternate within each round; the figure is the median over rounds of the per-round
time ratio (robust on a shared, loaded machine).

    .venv/bin/python benchmarks/bench_engine.py [--rounds 7] [--batch 8] [--imgsz 320]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scaledet.engine.ema import ModelEMA
from scaledet.engine.optim import build_optimizer, enable_grad_checkpointing
from scaledet.engine.trainer import TrainConfig
from scaledet.models import build


def fake_batch(batch: int, imgsz: int, device: torch.device, num_classes: int = 8):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, imgsz, imgsz, generator=g)
    targets = []
    for i in range(batch):
        xy = torch.rand(6, 2, generator=g) * imgsz * 0.7
        wh = 8 + torch.rand(6, 2, generator=g) * imgsz * 0.3
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=imgsz)], 1).to(device),
                        "labels": torch.randint(0, num_classes, (6,), generator=g).to(device),
                        "image_id": i})
    return images.to(device), targets


class Step:
    """One training step of a fresh fcos-n with the given autocast dtype."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None, grad_ckpt: bool = False):
        torch.manual_seed(0)
        self.model = build("fcos-n", num_classes=8).to(device).train()
        self.ema = ModelEMA(self.model)
        if grad_ckpt:
            enable_grad_checkpointing(self.model)
        self.opt = build_optimizer(self.model, TrainConfig(epochs=1))
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.device, self.dtype = device, dtype

    def __call__(self, images, targets) -> None:
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            loss = self.model(images, targets)["loss"]
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.model)


def timed(fn, device: torch.device, reps: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def compare(name: str, contenders: dict, device: torch.device, rounds: int, reps: int) -> None:
    """Print median seconds per call of each contender and its ratio to the first one."""
    for fn in contenders.values():
        fn()  # warm-up (allocator, oneDNN / cuDNN kernel selection)
    times = {k: [] for k in contenders}
    for _ in range(rounds):
        for k, fn in contenders.items():
            times[k].append(timed(fn, device, reps))
    base = next(iter(contenders))
    print(f"{name}:")
    for k in contenders:
        ratio = statistics.median(b / t for b, t in zip(times[base], times[k]))
        print(f"  {k:<10} {statistics.median(times[k]) * 1e3:8.1f} ms   "
              f"speed-up vs {base}: {ratio:.2f}x")


def cpu(args) -> None:
    dev = torch.device("cpu")
    images, targets = fake_batch(args.batch, args.imgsz, dev)
    steps = {"fp32": Step(dev, None), "bf16": Step(dev, torch.bfloat16)}
    compare(f"CPU train step, fcos-n, batch {args.batch}, {args.imgsz} px, "
            f"{torch.get_num_threads()} threads",
            {k: (lambda s=s: s(images, targets)) for k, s in steps.items()}, dev, args.rounds, 1)
    model = build("fcos-n", num_classes=8).eval()

    def infer(dtype):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32,
                                             enabled=dtype is not None):
            model(images)

    compare(f"CPU inference, batch {args.batch}",
            {"fp32": lambda: infer(None), "bf16": lambda: infer(torch.bfloat16)},
            dev, args.rounds, 1)


def cuda(args) -> None:
    dev = torch.device("cuda")
    batch = args.batch * 4
    images, targets = fake_batch(batch, args.imgsz, dev)
    steps = {"fp32": Step(dev, None), "bf16": Step(dev, torch.bfloat16),
             "fp16": Step(dev, torch.float16)}
    compare(f"CUDA train step, fcos-n, batch {batch}, {args.imgsz} px ({torch.cuda.get_device_name()})",
            {k: (lambda s=s: s(images, targets)) for k, s in steps.items()}, dev, args.rounds, 5)
    for ckpt in (False, True):
        step = Step(dev, None, grad_ckpt=ckpt)
        step(images, targets)
        torch.cuda.reset_peak_memory_stats()
        t = timed(lambda s=step: s(images, targets), dev, 10)
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"  grad_ckpt={ckpt!s:<5} peak memory {peak:7.0f} MiB, {t * 1e3:6.1f} ms/step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--skip-cpu", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_cpu:
        cpu(args)
    if torch.cuda.is_available():
        cuda(args)


if __name__ == "__main__":
    main()
