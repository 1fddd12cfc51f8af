"""Model compute of the scaledet presets vs Ultralytics YOLOv8n, side by side on the CPU.

    python benchmarks/bench_models.py [--presets fcos-n fcos-s fcos-m] [--threads 2]
        [--batch 16] [--imgsz 320] [--rounds 3] [--ultra-python /work/venv-ultra/bin/python]

For each model: parameters, forward GFLOPs for one ``imgsz x imgsz`` image (counted with
``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-add of convolutions and
matmuls, the convention of Ultralytics' "8.7 GFLOPs" at 640 px), and the time of one training
step's forward + backward (loss included: scaledet's full loss with assignment; YOLOv8n's
``model.loss`` with its TAL assigner) on a batch of random images with 6 random boxes each,
reported per image. Every measurement runs in its own subprocess (YOLOv8n under
``--ultra-python``; ultralytics is never a scaledet dependency) with ``--threads`` intra-op
threads; contenders alternate round by round and the median of the per-round minima is kept,
so load changes on a shared machine hit all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 8
BOXES_PER_IMAGE = 6


def _random_batch(batch: int, imgsz: int) -> tuple[torch.Tensor, list[dict]]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, imgsz, imgsz, generator=g)
    targets = []
    for _ in range(batch):
        xy = torch.rand(BOXES_PER_IMAGE, 2, generator=g) * imgsz * 0.7
        wh = 8 + torch.rand(BOXES_PER_IMAGE, 2, generator=g) * imgsz * 0.3
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=imgsz)], 1),
                        "labels": torch.randint(0, NUM_CLASSES, (BOXES_PER_IMAGE,), generator=g)})
    return images, targets


def _scaledet(name: str, batch: int, imgsz: int):
    from scaledet.models import build

    model = build(name, num_classes=NUM_CLASSES)
    images, targets = _random_batch(batch, imgsz)

    def step() -> None:
        model(images, targets)["loss"].backward()

    def forward_one(x: torch.Tensor) -> None:
        model.predict_raw(x)

    return model, step, forward_one


def _yolov8n(batch: int, imgsz: int):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=NUM_CLASSES, verbose=False)
    model.args = get_cfg()  # loss gains (box, cls, dfl) as in a default training run
    images, targets = _random_batch(batch, imgsz)
    boxes = torch.cat([t["boxes"] for t in targets]) / imgsz
    xywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
    data = {"img": images, "cls": torch.cat([t["labels"] for t in targets])[:, None].float(),
            "bboxes": xywh,
            "batch_idx": torch.arange(batch).repeat_interleave(BOXES_PER_IMAGE).float()}

    def step() -> None:
        loss, _ = model.loss(data)
        loss.sum().backward()

    def forward_one(x: torch.Tensor) -> None:
        model(x)

    return model, step, forward_one


def worker(name: str, batch: int, imgsz: int, steps: int) -> dict:
    """Measure one model in this process; returns a JSON-able dict."""
    from torch.utils.flop_counter import FlopCounterMode

    model, step, forward_one = (_yolov8n(batch, imgsz) if name == "yolov8n"
                                else _scaledet(name, batch, imgsz))
    params = sum(p.numel() for p in model.parameters())
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward_one(torch.rand(1, 3, imgsz, imgsz))
    model.train()
    step()  # warm-up (allocations, oneDNN primitive cache)
    times = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"name": name, "params": params, "gflops": counter.get_total_flops() / 1e9,
            "ms_per_image": min(times) / batch * 1000}


def _run_worker(python: str, name: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    cmd = [python, __file__, "--worker", name, "--threads", str(args.threads), "--batch",
           str(args.batch), "--imgsz", str(args.imgsz), "--steps", str(args.steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["fcos-n", "fcos-s", "fcos-m"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (min is kept)")
    p.add_argument("--ultra-python", default=None, help="interpreter with ultralytics installed")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.imgsz, args.steps)))
        return
    contenders = [(sys.executable, name) for name in args.presets]
    if args.ultra_python:
        contenders.append((args.ultra_python, "yolov8n"))
    results: dict[str, list[dict]] = {name: [] for _, name in contenders}
    for r in range(args.rounds):
        for python, name in contenders if r % 2 == 0 else contenders[::-1]:
            results[name].append(_run_worker(python, name, args))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {platform.machine()} {os.cpu_count()} cpus, load {load:.1f}, torch "
          f"{torch.__version__}, {args.threads} threads, batch {args.batch}, {args.imgsz} px, "
          f"median of {args.rounds} rounds x min of {args.steps} steps")
    peer = statistics.median(r["ms_per_image"] for r in results.get("yolov8n", [{"ms_per_image": 0}]))
    print("| model | params (M) | GFLOPs | fwd+bwd ms/img | YOLOv8n time / this |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in results.items():
        ms = statistics.median(r["ms_per_image"] for r in runs)
        ratio = f"{peer / ms:.2f}x" if peer else "-"
        print(f"| {name} | {runs[0]['params'] / 1e6:.2f} | {runs[0]['gflops']:.3f} | {ms:.1f} "
              f"| {ratio} |")


if __name__ == "__main__":
    main()
