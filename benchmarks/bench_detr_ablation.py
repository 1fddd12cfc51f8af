"""What each convergence idea of rtdetr-n buys, on a budget a laptop affords: the same short
training (``--epochs``, default 20, 96 px, batch 16, one process) of plain DETR and of rtdetr-n
with its ideas switched on one at a time, on the small two-shape dataset of the learning tests
(128 train / 32 held-out images), then the held-out COCO mAP of each. Also the encoder
attention kinds (softmax / linear / GAU) of rtdetr-n.

    python benchmarks/bench_detr_ablation.py --epochs 20 --out runs/detr_ablation
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import scaledet  # noqa: E402
from tests.engine.test_learns import _write_shapes  # noqa: E402

VARIANTS = [
    ("plain DETR (detr-n)", "detr-n", {}),
    ("+ query selection (RT-DETR's Hungarian proposals)", "rtdetr-n",
     {"head.query_selection": "hungarian", "head.num_denoising": 0}),
    ("+ denoising", "rtdetr-n", {"head.query_selection": "hungarian"}),
    ("dense one-to-many proposals, no denoising", "rtdetr-n", {"head.num_denoising": 0}),
    ("rtdetr-n (dense proposals + denoising)", "rtdetr-n", {}),
    ("rtdetr-n, linear-attention encoder", "rtdetr-n", {"neck.encoder": "linear"}),
    ("rtdetr-n, GAU encoder", "rtdetr-n", {"neck.encoder": "gau"}),
    ("rtdetr-n, no encoder attention", "rtdetr-n", {"neck.encoder": "none"}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--out", default="runs/detr_ablation")
    p.add_argument("--only", type=int, nargs="*", help="indices of VARIANTS to run")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    data = out / "shapes"
    _write_shapes(data, "train", 128, 96, seed=0)
    _write_shapes(data, "val", 32, 96, seed=1)
    print("| variant | mAP | mAP50 | train s |\n|---|---:|---:|---:|", flush=True)
    for i, (label, name, options) in enumerate(VARIANTS):
        if args.only and i not in args.only:
            continue
        t0 = time.perf_counter()
        run = scaledet.train(data, model=name, epochs=args.epochs, imgsz=96, batch=16,
                             out=out / f"run{i}", nproc=1, progress=False, eval_interval=0, amp="off",
                             model_options=options)
        seconds = time.perf_counter() - t0
        r = scaledet.val(run.best, data)
        print(f"| {label} | {r['mAP']:.3f} | {r['mAP50']:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
