"""Batch-1 CPU latency of scaledet checkpoints and Ultralytics models, interleaved in one process.

Separate per-model measurements on a shared VM drift by +-30% between runs (one fcos-n
checkpoint measured 12.2 and 18.6 ms minutes apart), so this script loads every contender into
one interpreter and times them round-robin: each round runs ``--calls`` forward passes of every
model in a shuffled order, and the report gives each model's median over all rounds and its
ratio to the first Ultralytics model, i.e. numbers taken under the same conditions.

What is timed, for both: one preprocessed ``imgsz x imgsz`` image, batch 1, forward + NMS at
conf 0.25 (max 100 detections), BatchNorm folded into the convs, ``torch.inference_mode``. The
interpreter needs both packages: scaledet (repository root on PYTHONPATH, plus its safetensors
and tqdm: `pip install safetensors tqdm` in the ultralytics venv) and ultralytics.

    PYTHONPATH=. /work/venv-ultra/bin/python benchmarks/bench_latency.py --threads 2 \\
        --image data/bench2k/coco/images/val/000000.jpg \\
        --scaledet fcos-n=runs/local_ours/X/train/weights/best.safetensors \\
        --ultralytics yolov8n=runs/local_ultra/yolov8n-tuned/train/weights/best.pt
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ultralytics_runner import EVAL_IOU, LATENCY_CONF, MAX_DET  # noqa: E402


def scaledet_call(weights: str, image: str, imgsz: int) -> Callable[[], object]:
    from scaledet.data import read_image
    from scaledet.inference.predictor import Predictor

    predictor = Predictor(weights, conf=LATENCY_CONF, imgsz=imgsz, batch_size=1, max_det=MAX_DET)
    model = predictor.model  # Predictor folds BatchNorm on load; eval-mode forward includes NMS
    x = predictor.preprocess(read_image(image))[0][None].float().div(255)
    return lambda: model(x)


def ultralytics_call(weights: str, image: str, imgsz: int) -> Callable[[], object]:
    import numpy as np
    import torch
    from PIL import Image
    from ultralytics import YOLO
    from ultralytics.utils.nms import non_max_suppression

    net = YOLO(weights).model.fuse(verbose=False).eval()
    img = Image.open(image).convert("RGB").resize((imgsz, imgsz))
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255.0
    return lambda: non_max_suppression(net(x), LATENCY_CONF, EVAL_IOU, max_det=MAX_DET)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scaledet", nargs="*", default=[], metavar="NAME=WEIGHTS")
    p.add_argument("--ultralytics", nargs="*", default=[], metavar="NAME=WEIGHTS")
    p.add_argument("--image", required=True)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--calls", type=int, default=10, help="timed calls per model per round")
    p.add_argument("--warmup", type=int, default=10)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    calls: dict[str, Callable[[], object]] = {}
    for kind, specs, make in (("scaledet", a.scaledet, scaledet_call),
                              ("ultralytics", a.ultralytics, ultralytics_call)):
        for spec in specs:
            name, sep, weights = spec.partition("=")
            if not sep:
                raise SystemExit(f"--{kind} {spec!r}: expected NAME=WEIGHTS")
            calls[name] = make(weights, a.image, a.imgsz)
    if not calls:
        raise SystemExit("nothing to time: give --scaledet and/or --ultralytics")
    times: dict[str, list[float]] = {name: [] for name in calls}
    rng = random.Random(0)
    with torch.inference_mode():
        for fn in calls.values():
            for _ in range(a.warmup):
                fn()
        for _ in range(a.rounds):
            order = list(calls)
            rng.shuffle(order)
            for name in order:
                for _ in range(a.calls):
                    t0 = time.perf_counter()
                    calls[name]()
                    times[name].append((time.perf_counter() - t0) * 1e3)
    if torch.get_num_threads() != a.threads:
        raise RuntimeError("the torch thread count changed during the measurement")
    ref = next((n for n in calls if n in {s.partition("=")[0] for s in a.ultralytics}), None)
    print(f"batch 1, {a.imgsz} px, {a.threads} threads, {a.rounds} rounds x {a.calls} calls, "
          f"forward + NMS (conf {LATENCY_CONF}), BN folded")
    head = f"{'model':<24} {'median ms':>9} {'p10':>7} {'p90':>7}"
    print(head + (f" {'/ ' + ref:>14}" if ref else ""))
    ref_med = statistics.median(times[ref]) if ref else None
    for name, t in times.items():
        med, q = statistics.median(t), statistics.quantiles(t, n=10)
        line = f"{name:<24} {med:>9.2f} {q[0]:>7.2f} {q[-1]:>7.2f}"
        print(line + (f" {med / ref_med:>13.2f}x" if ref_med else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
