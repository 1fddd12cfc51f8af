"""Heatmaps vs RLE regression for top-down pose, on the built-in keypoint set.

Three measurements, all on one machine in one run:

1. **Quantisation bound** (no training): the ground-truth joints of the val split rendered as
   the heatmap head's Gaussian targets at each crop size, decoded back (arg-max without offset,
   arg-max + quarter offset, DARK) and scored with OKS. The AP lost here is what heatmaps lose
   at that input size even with a perfect network; regression (RLE) has no such floor.
2. **Training**: each preset trained from scratch at each crop size with the same budget
   (``--epochs``, so that a busy machine changes the wall time, not the comparison; the wall
   time is reported), then its OKS stats on the val split's ground-truth boxes.
3. **CPU latency per crop**: the fused model, fp32, ``--threads`` threads, batch 1 and batch 16
   (per crop), median of ``--repeats`` timed runs after warm-up.

    scaledet data synth data/pose --task keypoints --train 800 --val 200
    python benchmarks/bench_pose.py --data data/pose --sizes 96x64,128x96 --epochs 20 \\
        --latency-sizes 96x64,128x96,256x192 --out runs/bench_pose
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

PRESETS = ("pose-heatmap-n", "pose-rle-n")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"96x64,128x96"`` -> ``[(96, 64), (128, 96)]`` (height x width)."""
    out = []
    for part in text.split(","):
        h, _, w = part.partition("x")
        out.append((int(h), int(w)))
    return out


def quantisation_bound(data: str, size: tuple[int, int]) -> dict[str, float]:
    """OKS AP of the val ground truth pushed through heatmap targets and decoded back."""
    from scaledet.data import load_dataset
    from scaledet.data.pose import build_pose_loader
    from scaledet.evaluation.pose import PoseValidator
    from scaledet.losses.keypoints import gaussian_heatmaps
    from scaledet.models import build
    from scaledet.models.keypoints.decode import decode_argmax, decode_dark

    dataset = load_dataset(data, "val")
    loader = build_pose_loader(dataset, size, 64, train=False, workers=0)
    model = build("pose-heatmap-n", input_size=list(size))
    stride, sigma = model.heatmap_stride, model.sigma
    hm_size = (int(size[0] / stride), int(size[1] / stride))
    truth = [torch.stack([t["keypoints"] for t in targets]) for _, targets in loader]
    decoders = {"argmax": lambda h: decode_argmax(h, quarter_offset=False),
                "argmax+quarter": decode_argmax, "dark": decode_dark}
    out = {}
    for name, decode in decoders.items():
        answers = iter(truth)

        class Oracle(torch.nn.Module):
            def forward(self, crops, decode=decode, answers=answers):
                p = next(answers)
                maps, _ = gaussian_heatmaps((p[..., :2] + 0.5) / stride - 0.5, p[..., 2] > 0,
                                            hm_size, sigma)
                coords, scores = decode(maps)
                return (coords + 0.5) * stride - 0.5, scores.clamp(min=0.5)

        out[name] = PoseValidator(loader, dataset)(Oracle())["mAP"]
    return out


def latency_ms(preset: str, size: tuple[int, int], batch: int, repeats: int) -> float:
    """Median milliseconds per crop of the fused model on ``batch`` crops."""
    from scaledet.models import build

    model = build(preset, input_size=list(size)).fuse()
    x = torch.rand(batch, 3, *size)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / batch


def train_one(data: str, preset: str, size: tuple[int, int], epochs: int, out: Path,
              seed: int) -> dict:
    import scaledet

    start = time.perf_counter()
    run = scaledet.train(data, model=preset, epochs=epochs, batch=32, out=out, exist_ok=True,
                         seed=seed, progress=False, nproc=1, amp="bf16",
                         model_options={"input_size": list(size)}, eval_interval=epochs)
    return {"preset": preset, "size": f"{size[0]}x{size[1]}", "epochs": run.epochs,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            **{k: round(v, 4) for k, v in run.metrics.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="keypoint dataset (COCO folder)")
    ap.add_argument("--sizes", default="96x64,128x96", help="crop sizes HxW to train at")
    ap.add_argument("--latency-sizes", default="96x64,128x96,256x192",
                    help="crop sizes HxW to time")
    ap.add_argument("--epochs", type=int, default=20, help="training budget per run")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--out", default="runs/bench_pose")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    presets = args.presets.split(",")
    report: dict = {"machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": args.threads}

    report["quantisation"] = {}
    for size in parse_sizes(args.latency_sizes):
        bound = quantisation_bound(args.data, size)
        report["quantisation"][f"{size[0]}x{size[1]}"] = bound
        print(f"quantisation bound {size[0]}x{size[1]}: " +
              "  ".join(f"{k} {v:.4f}" for k, v in bound.items()), flush=True)

    report["latency_ms_per_crop"] = []
    for size in parse_sizes(args.latency_sizes):
        for preset in presets:
            row = {"preset": preset, "size": f"{size[0]}x{size[1]}",
                   "batch1": round(latency_ms(preset, size, 1, args.repeats), 3),
                   "batch16": round(latency_ms(preset, size, 16, max(5, args.repeats // 4)), 3)}
            report["latency_ms_per_crop"].append(row)
            print(f"latency {row}", flush=True)

    report["training"] = []
    if not args.skip_train:
        for size in parse_sizes(args.sizes):
            for preset in presets:
                row = train_one(args.data, preset, size, args.epochs,
                                out / f"{preset}_{size[0]}x{size[1]}", args.seed)
                report["training"].append(row)
                print(f"trained {row}", flush=True)
                (out / "report.json").write_text(json.dumps(report, indent=1))

    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'report.json'}")


if __name__ == "__main__":
    main()
