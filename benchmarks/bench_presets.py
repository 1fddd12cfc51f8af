"""Every model preset at one input size: parameters, FLOPs, CPU forward latency at batch 1.

    python benchmarks/bench_presets.py [--imgsz 320] [--threads 1] [--rounds 15] [--iters 5]

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add;
``scaledet.models.info.count_flops``). Latency is one ``model.predict_raw`` call (network and box
decoding; NMS excluded, since on untrained weights its cost says nothing) on a random
``1 x 3 x imgsz x imgsz`` image in eval mode under ``torch.inference_mode``. Models are
interleaved: each round runs ``--iters`` calls of every model in turn (order reversed on odd
rounds), and the median over all calls is reported, so load changes on a shared machine hit
every model alike. The ratio column is fcos-n's median divided by the model's (higher is
faster), measured in the same run. Besides the presets, rows ``fcos-n/snet``,
``fcos-n/mobilenet`` and ``fcos-n/dilated`` swap fcos-n's backbone (same widths) or make its
last stage atrous.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from scaledet.models import PRESETS, build
from scaledet.models.info import count_flops, count_parameters

VARIANTS = {"fcos-n/snet": ("fcos-n", {"backbone": {"kind": "snet"}}),
            "fcos-n/mobilenet": ("fcos-n", {"backbone": {"kind": "mobilenet"}}),
            "fcos-n/dilated": ("fcos-n", {"backbone": {"dilated": True}})}


def _models(num_classes: int) -> dict[str, torch.nn.Module]:
    specs = {name: (name, {}) for name in PRESETS} | VARIANTS
    out = {}
    for label, (name, overrides) in specs.items():
        torch.manual_seed(0)
        out[label] = build(name, num_classes=num_classes, **overrides).eval()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--num-classes", type=int, default=80)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = _models(args.num_classes)
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(3):  # warm-up: allocations, oneDNN primitive cache
                model.predict_raw(x)
        for r in range(args.rounds):
            order = list(models.items())
            for name, model in order if r % 2 == 0 else order[::-1]:
                for _ in range(args.iters):
                    start = time.perf_counter()
                    model.predict_raw(x)
                    times[name].append(time.perf_counter() - start)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {platform.machine()} {os.cpu_count()} cpus, load {load:.1f}, torch "
          f"{torch.__version__}, {args.threads} thread(s), batch 1, {args.imgsz} px, "
          f"{args.num_classes} classes, median of {args.rounds} x {args.iters} calls")
    ref = statistics.median(times["fcos-n"])
    print("| model | params (M) | GFLOPs | forward ms (median) | fcos-n time / this |")
    print("|---|---:|---:|---:|---:|")
    for name, model in models.items():
        ms = statistics.median(times[name]) * 1000
        print(f"| {name} | {count_parameters(model) / 1e6:.3f} | "
              f"{count_flops(model, args.imgsz) / 1e9:.3f} | {ms:.1f} | {ref * 1000 / ms:.2f}x |")


if __name__ == "__main__":
    main()
