"""Adapting a trained detector to new classes: full fine-tuning, LoRA, adapters, head-only and
training from scratch, side by side with the same budget on one machine.

Each mode is one ``scaledet train`` subprocess on the new dataset (``--weights BASE`` and
``--adapter``/``--rank`` where the mode has them; "scratch" without weights), one after the
other, then:

    mAP50-95 / mAP50   the run's final validation on the new dataset's val split
    trainable params   parameters with ``requires_grad`` in the adapted model (the run's report)
    checkpoint         size of ``best.safetensors`` and its ratio to the base file
    train img/s        mean of ``images_per_s`` over the run's epochs (``metrics.csv``)
    peak memory        the largest resident set of the run's processes (``wait4``'s ru_maxrss)

    scaledet data synth data/persons --task keypoints --train 800 --val 200   # other classes
    python benchmarks/bench_adapt.py --base runs/fcos15/weights/best.safetensors \\
        --data data/persons --minutes 5 --out runs/bench_adapt
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = {  # name: extra train arguments
    "full": [],
    "lora-r4": ["--adapter", "lora", "--rank", "4"],
    "lora-r8": ["--adapter", "lora", "--rank", "8"],
    "lora-r16": ["--adapter", "lora", "--rank", "16"],
    "adapter": ["--adapter", "adapter", "--rank", "16"],
    "head": ["--adapter", "head"],
    "scratch": None,  # no base weights
}


def run_mode(name: str, args: argparse.Namespace) -> dict:
    out = Path(args.out) / name
    cmd = [sys.executable, "-m", "scaledet.cli", "train", "--data", args.data, "--time",
           str(args.minutes), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
           "--out", str(out), "--exist-ok", "--nproc", str(args.nproc), "--seed", "0"]
    extra = MODES[name]
    if extra is None:
        cmd += ["--model", "fcos-n"]
    else:
        cmd += ["--weights", args.base, *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (Path(args.out) / f"{name}.log").open("w")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    log.close()
    text = (Path(args.out) / f"{name}.log").read_text()
    if status != 0:
        raise RuntimeError(f"{name} failed (status {status}); see {args.out}/{name}.log")
    best = out / "weights" / "best.safetensors"
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    final = next(r for r in reversed(rows) if r.get("mAP"))
    ips = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
    trained = re.search(r"([\d,]+) of ([\d,]+) parameters train", text)
    if trained:
        n_train, n_total = (int(g.replace(",", "")) for g in trained.groups())
    else:  # full fine-tuning and scratch train everything
        from scaledet.models.checkpoint import model_from_weights

        model, _ = model_from_weights(best, merge=False)
        n_total = sum(p.numel() for p in model.parameters())
        n_train = n_total
    return {"mode": name, "mAP": float(final["mAP"]), "mAP50": float(final["mAP50"]),
            "trainable": n_train, "total": n_total,
            "trainable_pct": round(100 * n_train / n_total, 2),
            "ckpt_bytes": best.stat().st_size,
            "ckpt_ratio": round(best.stat().st_size / Path(args.base).stat().st_size, 4),
            "train_ips": round(sum(ips) / max(len(ips), 1), 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "epochs": int(rows[-1]["epoch"]),
            "wall_min": round((time.perf_counter() - start) / 60, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the trained base checkpoint (fcos-n)")
    ap.add_argument("--data", required=True, help="the new dataset (other classes)")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--nproc", default="1")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default="runs/bench_adapt")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.modes.split(","):
        rows.append(run_mode(name, args))
        print(json.dumps(rows[-1]), flush=True)
        (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=1))
    full = next((r for r in rows if r["mode"] == "full"), None)
    print("\n| mode | mAP50-95 | mAP50 | vs full | trainable | ckpt | ckpt/base | train img/s "
          "| peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rel = f"{r['mAP'] / full['mAP']:.2f}" if full and full["mAP"] > 0 else "-"
        print(f"| {r['mode']} | {r['mAP']:.3f} | {r['mAP50']:.3f} | {rel} | "
              f"{r['trainable']:,} ({r['trainable_pct']}%) | {r['ckpt_bytes'] / 1024:.0f} KiB | "
              f"{r['ckpt_ratio']:.3f} | {r['train_ips']} | {r['peak_rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
