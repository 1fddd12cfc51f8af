"""DiffusionDet / flow checkpoints at inference-time settings: accuracy and CPU latency by
sampling steps, boxes and ensemble, and the spread of accuracy over noise seeds.

For every ``--weights NAME=PATH`` (``scaledet train`` checkpoints of ``diffusiondet-n``,
``flowdet-n``; others such as ``fcos-n`` / ``rtdetr-n`` get one row at their own settings,
for comparison) on the ``--split`` of ``--data``:

    grid     steps in ``--steps`` x boxes in ``--boxes`` x ensemble over steps on / off (one
             row for ``steps = 1``, where both are the same), noise seed ``--seed``
    mAP      mAP50-95 and mAP50 of ``scaledet val`` at that setting (the checkpoint's
             post-processing: score threshold, class-wise NMS, 100 detections per image)
    latency  batch 1, the first validation image letterboxed to the checkpoint's size,
             forward + post-processing at conf 0.25 (as ``bench_latency.py``), BatchNorm
             folded, ``torch.inference_mode``, ``--threads`` threads; the median of
             ``--latency-runs`` calls after ``--warmup``
    seeds    mAP50-95 at the checkpoint's own setting for each noise seed of ``--seeds``:
             mean, std (population), min, max

Writes ``OUT/bench_diffusion.json`` (every number, the machine and the settings) and
``OUT/bench_diffusion.md`` (the tables), and prints the tables.

    python benchmarks/bench_diffusion.py --data data/bench --threads 2 \\
        --weights diffusiondet-n=runs/dd/train/weights/best.safetensors \\
        --weights flowdet-n=runs/flow/train/weights/best.safetensors \\
        --weights fcos-n=runs/fcos/train/weights/best.safetensors --out runs/bench_diffusion
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LATENCY_CONF = 0.25


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{flag} {text!r}: expected comma-separated integers") from None
    if not values or min(values) < 0:
        raise SystemExit(f"{flag} {text!r}: expected non-negative integers")
    return values


def parse_weights(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--weights {item!r}: expected NAME=PATH")
        if not Path(path).is_file():
            raise SystemExit(f"--weights {item!r}: {path} is not a file")
        out.append((name, Path(path)))
    return out


class Bench:
    """One checkpoint loaded once, with a validator over the split and a batch-1 input."""

    def __init__(self, path: Path, args: argparse.Namespace) -> None:
        from scaledet.data import load_dataset
        from scaledet.data.loader import build_dataloader
        from scaledet.evaluation.validator import DetectionValidator
        from scaledet.models.checkpoint import model_from_weights
        from scaledet.models.options import current_inference_options
        from scaledet.models.sizes import check_imgsz, model_stride

        self.model, meta = model_from_weights(path, "cpu")
        self.model.fuse()
        dataset = load_dataset(args.data, args.split)
        if args.max_images:
            dataset.records = dataset.records[:args.max_images]
        names = meta.get("class_names")
        if names is not None and list(names) != list(dataset.class_names):
            raise SystemExit(f"{path} was trained on classes {names} but {args.data} has "
                             f"{list(dataset.class_names)}")
        imgsz = args.imgsz or int(meta.get("imgsz", 320))
        self.imgsz = check_imgsz(imgsz, model_stride(self.model))[0]
        loader = build_dataloader(dataset, imgsz=self.imgsz, batch_size=args.batch,
                                  train=False, workers=0, seed=0)
        self.validator = DetectionValidator(loader, dataset, "cpu")
        self.image = next(iter(loader))[0][:1]
        self.defaults = current_inference_options(self.model)
        self.sampled = "head.steps" in self.defaults  # a head with sampling options

    def set(self, options: dict[str, Any]) -> None:
        from scaledet.models.options import set_inference_options

        set_inference_options(self.model, {**self.defaults, **options}, "bench")

    def accuracy(self, options: dict[str, Any]) -> dict[str, float]:
        self.set(options)
        metrics = self.validator.run(self.model).metrics
        return {"mAP": metrics["mAP"], "mAP50": metrics["mAP50"]}

    def latency_ms(self, options: dict[str, Any], runs: int, warmup: int) -> float:
        import torch

        self.set({**options, "postprocess.score_thresh": LATENCY_CONF})
        times = []
        with torch.inference_mode():
            for i in range(warmup + runs):
                start = time.perf_counter()
                self.model(self.image)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000)
        self.set(options)
        return statistics.median(times)


def grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The inference settings to measure, as option dicts."""
    out = []
    for steps in args.steps:
        for boxes in args.boxes:
            for ensemble in ((False,) if steps == 1 else (True, False)):
                out.append({"head.steps": steps, "head.num_boxes": boxes,
                            "head.ensemble": ensemble, "head.seed": args.seed})
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"machine": machine(args.threads), "settings": {
        "data": str(args.data), "split": args.split, "max_images": args.max_images,
        "latency_runs": args.latency_runs, "warmup": args.warmup,
        "latency_conf": LATENCY_CONF}, "models": {}}
    for name, path in parse_weights(args.weights):
        bench = Bench(path, args)
        rows = []
        for options in (grid(args) if bench.sampled else [{}]):
            row = {**options, **bench.accuracy(options),
                   "latency_ms": bench.latency_ms(options, args.latency_runs, args.warmup)}
            rows.append(row)
            print(f"{name}: {format_row(row)}", flush=True)
        entry: dict[str, Any] = {"weights": str(path), "imgsz": bench.imgsz,
                                 "defaults": bench.defaults, "grid": rows}
        if bench.sampled and args.seeds:
            maps = [bench.accuracy({"head.seed": s})["mAP"] for s in args.seeds]
            entry["seeds"] = {"seeds": args.seeds, "mAP": maps,
                              "mean": statistics.fmean(maps), "std": statistics.pstdev(maps),
                              "min": min(maps), "max": max(maps)}
            print(f"{name}: mAP over seeds {args.seeds}: {format_spread(entry['seeds'])}",
                  flush=True)
        report["models"][name] = entry
    return report


def format_row(row: dict[str, Any]) -> str:
    setting = ("" if "head.steps" not in row else
               f"steps {row['head.steps']} boxes {row['head.num_boxes']} "
               f"ensemble {'on' if row['head.ensemble'] else 'off'}  ")
    return (f"{setting}mAP50-95 {row['mAP']:.4f} mAP50 {row['mAP50']:.4f} "
            f"latency {row['latency_ms']:.1f} ms")


def format_spread(s: dict[str, Any]) -> str:
    return f"mean {s['mean']:.4f} std {s['std']:.4f} min {s['min']:.4f} max {s['max']:.4f}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"DiffusionDet inference settings on {report['settings']['data']} "
             f"({report['settings']['split']}); CPU {m['cpu']}, {m['threads']} threads, "
             f"torch {m['torch']}. Latency: batch 1, conf {LATENCY_CONF}, median of "
             f"{report['settings']['latency_runs']}.", "",
             "| model | steps | boxes | ensemble | mAP50-95 | mAP50 | latency ms |",
             "|---|---:|---:|:---:|---:|---:|---:|"]
    for name, entry in report["models"].items():
        for r in entry["grid"]:
            steps, boxes, ens = (r.get("head.steps", "-"), r.get("head.num_boxes", "-"),
                                 {True: "on", False: "off"}.get(r.get("head.ensemble"), "-"))
            lines.append(f"| {name} | {steps} | {boxes} | {ens} | {r['mAP']:.4f} | "
                         f"{r['mAP50']:.4f} | {r['latency_ms']:.1f} |")
    spreads = {n: e["seeds"] for n, e in report["models"].items() if "seeds" in e}
    if spreads:
        lines += ["", "| model | setting | seeds | mAP50-95 mean | std | min | max |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for name, s in spreads.items():
            d = report["models"][name]["defaults"]
            setting = (f"{d['head.steps']} step(s), {d['head.num_boxes']} boxes, ensemble "
                       f"{'on' if d['head.ensemble'] else 'off'}")
            lines.append(f"| {name} | {setting} | {','.join(map(str, s['seeds']))} | "
                         f"{s['mean']:.4f} | {s['std']:.4f} | {s['min']:.4f} | "
                         f"{s['max']:.4f} |")
    return "\n".join(lines) + "\n"


def machine(threads: int) -> dict[str, Any]:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "python":
            platform.python_version(), "torch": torch.__version__, "threads": threads}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--weights", action="append", required=True, metavar="NAME=PATH",
                   help="a checkpoint to measure (repeatable)")
    p.add_argument("--data", required=True, help="COCO folder, YOLO data.yaml or VOC folder")
    p.add_argument("--split", default="val")
    p.add_argument("--max-images", type=int, default=0, help="score only the first N (0: all)")
    p.add_argument("--imgsz", type=int, default=None, help="default: the training size")
    p.add_argument("--batch", type=int, default=16, help="images per pass of the mAP runs")
    p.add_argument("--steps", default="1,2,4,8", help="sampling steps of the grid")
    p.add_argument("--boxes", default="100,300", help="box counts of the grid")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the grid")
    p.add_argument("--seeds", default="0,1,2,3,4",
                   help="noise seeds of the spread at the checkpoint's setting ('' : none)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (all measurements)")
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default="runs/bench_diffusion", help="folder for the json and md")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.steps = parse_ints(args.steps, "--steps")
    args.boxes = parse_ints(args.boxes, "--boxes")
    args.seeds = parse_ints(args.seeds, "--seeds") if args.seeds.strip() else []
    report = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_diffusion.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (out / "bench_diffusion.md").write_text(table)
    print(table)
    print(f"wrote {out / 'bench_diffusion.json'} and {out / 'bench_diffusion.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
