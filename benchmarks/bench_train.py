"""scaledet vs Ultralytics YOLOv8n: train from scratch on the same data, cores and wall clock.

Contenders (each trained from scratch in its own subprocess, pinned with ``taskset`` to the same
number of cores, with ``OMP_NUM_THREADS`` = that number):

    scaledet-<preset>   ``scaledet train --model <preset> --time <budget>`` on the COCO copy
    yolov8n-default     ``YOLO("yolov8n.yaml").train(time=<budget h>)`` on the YOLO copy
    yolov8n-tuned       the same with a recipe for a short budget (see ultralytics_runner.RECIPES)

Every contender is then measured the same way, one after the other on its own cores:
    mAP50-95   its detections on the val split (conf 0.001, max 100 per image) as a COCO results
               json, scored by scaledet's pycocotools-exact evaluator (and by pycocotools itself
               when it is installed, as a cross-check); each tool's own reported mAP is kept too
    train img/s  images through the training step / seconds spent in training steps (periodic
               validation excluded for both)
    latency    batch 1, imgsz x imgsz, CPU, forward + postprocess (NMS at conf 0.25), median of
               ``--latency-runs`` runs after a warm-up

Ultralytics is never a scaledet dependency: it runs under ``--ultra-python`` (a separate virtualenv,
or the same interpreter where it is installed) via ``benchmarks/ultralytics_runner.py``. scaledet
runs as ``python -m scaledet.cli`` with the repository root on PYTHONPATH, so it need not be
pip-installed.

    python benchmarks/bench_train.py --data data/bench --budget-min 15 --cores 0,1 \\
        --ultra-python /work/venv-ultra/bin/python
    # 16-core machine: the three trainings at once, each on its own pair of cores
    python benchmarks/bench_train.py --data data/bench --budget-min 15 --parallel \\
        --cores 0,1 2,3 4,5 --ultra-python python3
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "benchmarks" / "ultralytics_runner.py"
ULTRA_RECIPES = ("default", "tuned")
EVAL_CONF, MAX_DET, LATENCY_CONF = 0.001, 100, 0.25
GOALS = {"map": 2.0, "train_ips": 3.0, "latency": 1.0}  # ours / best YOLOv8n (latency: at most)


@dataclass
class Contender:
    """One training run: what to launch, where it is pinned, and what was measured."""

    name: str
    kind: str  # "scaledet" | "ultralytics"
    recipe: str  # scaledet preset or ultralytics recipe
    cores: str  # taskset list, e.g. "0,1"
    out: Path
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def threads(self) -> int:
        return len(parse_cores(self.cores))


def parse_cores(spec: str) -> list[int]:
    """``"0,1"`` or ``"0-3"`` or ``"0,2-3"`` -> sorted cpu ids; ValueError if malformed."""
    cpus: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--cores: {spec!r} is not a cpu list like 0,1 or 0-1") from None
    if not cpus or min(cpus) < 0:
        raise ValueError(f"--cores: {spec!r} names no cpu")
    return sorted(cpus)


def assign_cores(specs: list[str], n: int, parallel: bool) -> list[str]:
    """The core list of each of ``n`` contenders: one set each when parallel (disjoint, equal
    sizes), else the first set for all."""
    sets = [parse_cores(s) for s in specs]
    if len({len(s) for s in sets}) > 1:
        raise ValueError(f"--cores: every set must have the same number of cores, got {specs}")
    if not parallel:
        return [specs[0]] * n
    if len(sets) < n:
        raise ValueError(f"--parallel needs {n} core sets (one per contender), got {len(sets)}")
    flat = [c for s in sets[:n] for c in s]
    if len(flat) != len(set(flat)):
        raise ValueError(f"--parallel needs disjoint core sets, got {specs[:n]}")
    available = os.sched_getaffinity(0)
    if not set(flat) <= available:
        raise ValueError(f"--cores: cpus {sorted(set(flat) - available)} are not available here "
                         f"(this process may use {sorted(available)})")
    return specs[:n]


# ---- subprocesses ---------------------------------------------------------------------------


def child_env(threads: int) -> dict[str, str]:
    """Environment of every child: N threads, repo importable, ultralytics offline."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["YOLO_OFFLINE"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def pinned(cores: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cores, *map(str, cmd)]


def run_logged(cmd: list[str], log: Path, threads: int) -> int:
    """Run ``cmd`` to completion with stdout+stderr appended to ``log``; returns the exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env(threads),
                              cwd=REPO).returncode


def scaledet_cli(python: str) -> list[str]:
    return [python, "-m", "scaledet.cli"]


# ---- data -----------------------------------------------------------------------------------


@dataclass
class BenchData:
    coco: Path  # scaledet COCO folder (annotations/instances_{split}.json, images/{split}/)
    yolo_yaml: Path  # the same images and boxes as a YOLO dataset

    @property
    def val_gt(self) -> Path:
        return self.coco / "annotations" / "instances_val.json"

    @property
    def val_images(self) -> Path:
        return self.coco / "images" / "val"


def prepare_data(data: Path, args: argparse.Namespace) -> BenchData:
    """Use or build the dataset in both formats.

    ``data`` is either a COCO folder (its YOLO copy goes to ``<data>_yolo`` by ``scaledet data
    convert``) or a folder that holds ``coco/`` and ``yolo/``, each built by ``scaledet data
    synth`` with the same seed when missing.
    """
    cli = scaledet_cli(args.python)
    if (data / "annotations").is_dir():
        coco, yolo = data, data.with_name(data.name + "_yolo")
        if not (yolo / "data.yaml").is_file():
            _check_call([*cli, "data", "convert", coco, yolo, "--to", "yolo"])
    else:
        coco, yolo = data / "coco", data / "yolo"
        synth = ["--train", args.n_train, "--val", args.n_val, "--seed", args.seed,
                 "--imgsz", args.imgsz]
        if not (coco / "annotations").is_dir():
            _check_call([*cli, "data", "synth", coco, *synth])
        if not (yolo / "data.yaml").is_file():
            _check_call([*cli, "data", "synth", yolo, *synth, "--format", "yolo"])
    bd = BenchData(coco, yolo / "data.yaml")
    for path in (bd.val_gt, bd.val_images, bd.yolo_yaml):
        if not path.exists():
            raise FileNotFoundError(f"--data: {path} is missing")
    return bd


def _check_call(cmd: list) -> None:
    cmd = [str(c) for c in cmd]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=child_env(os.cpu_count() or 1), cwd=REPO)


# ---- training -------------------------------------------------------------------------------


def train_command(c: Contender, data: BenchData, args: argparse.Namespace) -> list[str]:
    if c.kind == "scaledet":
        preset, extra = parse_variant(c.recipe)
        return [*scaledet_cli(args.python), "train", "--data", str(data.coco), "--model", preset,
                "--imgsz", str(args.imgsz), "--time", str(args.budget_min), "--batch",
                str(args.batch), "--seed", str(args.seed), "--out", str(c.out / "train"),
                *([] if args.workers is None else ["--workers", str(args.workers)]), *extra]
    return [args.ultra_python, str(RUNNER), "train", "--data", str(data.yolo_yaml),
            "--out", str(c.out / "train"), "--recipe", c.recipe, "--minutes", str(args.budget_min),
            "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--workers",
            str(2 if args.workers is None else args.workers), "--threads", str(c.threads),
            "--seed", str(args.seed)]


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """``"fcos-n+amp=off+lr=0.01"`` -> ``("fcos-n", ["--amp", "off", "--lr", "0.01"])``: a preset
    plus ``scaledet train`` options, for ablations run beside the presets."""
    preset, *opts = spec.split("+")
    extra: list[str] = []
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not key:
            raise ValueError(f"--preset {spec!r}: empty option")
        extra += [f"--{key.replace('_', '-')}", value] if sep else [f"--{key.replace('_', '-')}"]
    return preset, extra


def prepare_ultralytics(c: Contender, data: BenchData, args: argparse.Namespace) -> None:
    """Build ultralytics' label caches before the runs that would race to write them."""
    cmd = [args.ultra_python, str(RUNNER), "prepare", "--data", str(data.yolo_yaml),
           "--out", str(c.out.parent / "ultralytics-prepare"), "--imgsz", str(args.imgsz)]
    log = c.out.parent / "ultralytics-prepare.log"
    if run_logged(pinned(c.cores, cmd), log, c.threads) != 0:
        raise RuntimeError(f"ultralytics could not read {data.yolo_yaml}, see {log}")


def train_all(contenders: list[Contender], data: BenchData, args: argparse.Namespace) -> None:
    """Train every contender, all at once with ``--parallel`` (disjoint cores) else in turn."""
    ultra = [c for c in contenders if c.kind == "ultralytics"]
    if ultra:
        prepare_ultralytics(ultra[0], data, args)
    groups = [contenders] if args.parallel else [[c] for c in contenders]
    for group in groups:
        running = []
        for c in group:
            c.out.mkdir(parents=True, exist_ok=True)
            log = (c.out / "train.log").open("w")
            cmd = pinned(c.cores, train_command(c, data, args))
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            print(f"[{c.name}] training on cores {c.cores} for {args.budget_min} min "
                  f"(log: {c.out / 'train.log'})", flush=True)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    env=child_env(c.threads), cwd=REPO)
            running.append((c, proc, log, time.monotonic()))
        for c, proc, log, t0 in running:
            rc = proc.wait()
            log.close()
            c.results["train_process_seconds"] = time.monotonic() - t0
            c.results["train_exit_code"] = rc
            print(f"[{c.name}] training exited with {rc} after "
                  f"{c.results['train_process_seconds'] / 60:.1f} min", flush=True)


def read_scaledet_run(run: Path, batch: int) -> dict[str, Any]:
    """Images seen, training-step seconds and own mAP of a ``scaledet train`` folder.

    metrics.csv has one row per epoch with the cumulative optimizer ``step`` and ``images_per_s``
    of that epoch's training steps (validation excluded); the loader drops the last partial batch,
    so an epoch saw ``(step delta) * batch`` images in ``images / images_per_s`` seconds.
    """
    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{run / 'metrics.csv'} has no rows")
    images, seconds, prev_step = 0, 0.0, 0
    for r in rows:
        n = (int(r["step"]) - prev_step) * batch
        prev_step = int(r["step"])
        images += n
        seconds += n / float(r["images_per_s"])
    maps = [float(r["mAP"]) for r in rows if r.get("mAP")]
    weights = run / "weights" / "best.safetensors"
    return {"epochs_completed": int(rows[-1]["epoch"]), "train_images_seen": images,
            "train_step_seconds": seconds, "train_images_per_second": images / seconds,
            "train_elapsed_seconds": float(rows[-1]["elapsed_s"]),
            "own_map50_95": max(maps) if maps else float("nan"),
            "weights": str(weights if weights.is_file() else run / "weights" / "last.safetensors")}


def read_ultralytics_run(run: Path) -> dict[str, Any]:
    """The runner's summary.json, with training images/s excluding periodic validation."""
    s = json.loads((run / "summary.json").read_text())
    step_seconds = s["train_loop_seconds"] - s["train_val_seconds"]
    return {"epochs_completed": s["epochs_completed"], "train_images_seen": s["train_images_seen"],
            "train_step_seconds": step_seconds,
            "train_images_per_second": s["train_images_seen"] / step_seconds,
            "train_elapsed_seconds": s["train_loop_seconds"],
            "own_map50_95": s["ultralytics_map50_95"], "weights": s["weights"],
            "versions": s["versions"], "recipe": s["recipe"]}


# ---- measurement ----------------------------------------------------------------------------


def measure(c: Contender, data: BenchData, args: argparse.Namespace) -> None:
    """Detections json + latency in a subprocess on ``c.cores``, then the COCO score here."""
    dt, js = c.out / "val_detections.json", c.out / "measure.json"
    common = ["--gt", data.val_gt, "--dt", dt, "--json", js, "--imgsz", args.imgsz,
              "--threads", c.threads, "--runs", args.latency_runs, "--warmup", args.warmup]
    if c.kind == "scaledet":
        cmd = [args.python, __file__, "measure-scaledet", "--weights", c.results["weights"],
               "--images", data.val_images, *common]
    else:
        yolo_val = data.yolo_yaml.parent / "images" / "val"
        cmd = [args.ultra_python, RUNNER, "evaluate", "--weights", c.results["weights"],
               "--images", yolo_val, *common]
    print(f"[{c.name}] measuring on cores {c.cores}", flush=True)
    rc = run_logged(pinned(c.cores, cmd), c.out / "measure.log", c.threads)
    if rc != 0:
        raise RuntimeError(f"[{c.name}] measurement failed (exit {rc}), see {c.out / 'measure.log'}")
    m = json.loads(js.read_text())
    c.results.update({k: m[k] for k in ("latency_ms_median", "latency_ms_p10", "latency_ms_p90",
                                        "latency_runs", "predict_images_per_second")})
    c.results.update(score(data.val_gt, dt))


def score(gt: Path, dt: Path) -> dict[str, float]:
    """COCO bbox stats of ``dt`` by scaledet's evaluator (+ pycocotools where installed)."""
    from scaledet.evaluation.coco import evaluate_coco

    stats = evaluate_coco(gt, dt).stats
    out = {"map50_95": float(stats[0]), "map50": float(stats[1]), "map_small": float(stats[3])}
    try:
        out["pycocotools_map50_95"] = _pycocotools_map(gt, dt)
    except ImportError:
        pass
    return out


def _pycocotools_map(gt: Path, dt: Path) -> float:
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt))
        dets = json.loads(dt.read_text())
        coco_dt = coco_gt.loadRes(dets) if dets else COCO()
        if not dets:
            return 0.0
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


# ---- report ---------------------------------------------------------------------------------


def ratios(contenders: list[Contender]) -> dict[str, float | None]:
    """ours / the better YOLOv8n: mAP vs the higher mAP, img/s vs the faster trainer, latency vs
    the lower latency (each against the strongest YOLOv8n figure); None where YOLOv8n's mAP is 0."""
    ours = [c.results for c in contenders if c.kind == "scaledet" and "map50_95" in c.results]
    yolo = [c.results for c in contenders if c.kind == "ultralytics" and "map50_95" in c.results]
    if not ours or not yolo:
        return {}
    o = ours[0]
    best_map = max(r["map50_95"] for r in yolo)
    return {
        "map": o["map50_95"] / best_map if best_map > 0 else None,
        "train_ips": o["train_images_per_second"] / max(r["train_images_per_second"] for r in yolo),
        "latency": o["latency_ms_median"] / min(r["latency_ms_median"] for r in yolo),
    }


def format_table(contenders: list[Contender], r: dict[str, float | None]) -> str:
    head = (f"{'contender':<26} {'mAP50-95':>8} {'(own)':>7} {'mAP50':>6} {'AP_S':>6} {'epochs':>6} "
            f"{'train img/s':>11} {'latency ms':>10}")
    lines = [head, "-" * len(head)]
    for c in contenders:
        x = c.results
        if "map50_95" not in x:
            lines.append(f"{c.name:<26} failed: {x.get('error', 'see logs')}")
            continue
        lines.append(f"{c.name:<26} {x['map50_95']:>8.4f} {x['own_map50_95']:>7.4f} "
                     f"{x['map50']:>6.3f} {x['map_small']:>6.3f} {x['epochs_completed']:>6} "
                     f"{x['train_images_per_second']:>11.1f} {x['latency_ms_median']:>10.1f}")
    if r:
        lines.append("")
        lines.append("ours / best YOLOv8n: " + ", ".join(_verdict(k, v) for k, v in r.items()))
    return "\n".join(lines)


def _verdict(key: str, value: float | None) -> str:
    op = "<=" if key == "latency" else ">="
    if value is None:
        return f"{key} n/a (YOLOv8n scored 0; goal {op} {GOALS[key]:g})"
    ok = value <= GOALS[key] if key == "latency" else value >= GOALS[key]
    return f"{key} x{value:.2f} (goal {op} {GOALS[key]:g}: {'met' if ok else 'NOT met'})"


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cpus_visible": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version()}


# ---- scaledet measurement worker (runs pinned, in its own process) -----------------------


def measure_scaledet(argv: list[str]) -> int:
    """``bench_train.py measure-scaledet ...``: val detections json + batch-1 latency, the same
    measurements ``ultralytics_runner.py evaluate`` makes for YOLOv8n."""
    p = argparse.ArgumentParser(prog="bench_train.py measure-scaledet")
    for name in ("--weights", "--gt", "--images", "--dt", "--json"):
        p.add_argument(name, required=True)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    a = p.parse_args(argv)
    import torch

    from scaledet.inference.predictor import Predictor

    torch.set_num_threads(a.threads)
    gt = json.loads(Path(a.gt).read_text())
    files = {f.stem: f for f in Path(a.images).iterdir() if f.is_file()}
    missing = [im["file_name"] for im in gt["images"] if Path(im["file_name"]).stem not in files]
    if missing:
        raise FileNotFoundError(f"--images: no file for ground-truth images {missing[:3]}")
    predictor = Predictor(a.weights, conf=EVAL_CONF, imgsz=a.imgsz, max_det=MAX_DET)
    dets, t0 = [], time.perf_counter()
    for im in gt["images"]:
        (det,) = predictor.predict([files[Path(im["file_name"]).stem]])
        dets += predictor.to_coco_results(det, im["id"])
    ips = len(gt["images"]) / (time.perf_counter() - t0)
    Path(a.dt).write_text(json.dumps(dets))
    times = scaledet_latency_ms(a.weights, files[Path(gt["images"][0]["file_name"]).stem],
                                a.imgsz, a.runs, a.warmup)
    result = {"weights": a.weights, "detections_json": a.dt, "num_detections": len(dets),
              "predict_images_per_second": ips, "latency_ms_median": statistics.median(times),
              "latency_ms_p10": statistics.quantiles(times, n=10)[0],
              "latency_ms_p90": statistics.quantiles(times, n=10)[-1],
              "latency_runs": len(times), "latency_conf": LATENCY_CONF,
              "threads": torch.get_num_threads()}
    Path(a.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


def scaledet_latency_ms(weights: str, image: Path, imgsz: int, runs: int, warmup: int
                        ) -> list[float]:
    """Batch-1 times (ms) of the model on one preprocessed val image: in eval mode the model's
    forward includes box decoding and NMS, i.e. forward + postprocess."""
    import torch

    from scaledet.data import read_image
    from scaledet.inference.predictor import Predictor

    predictor = Predictor(weights, conf=LATENCY_CONF, imgsz=imgsz, batch_size=1, max_det=MAX_DET)
    model = predictor.model
    if callable(getattr(model, "fuse", None)):  # Conv+BN folding, as ultralytics does
        model = model.fuse() or model
    x = predictor.preprocess(read_image(image))[0][None].float().div(255)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return times


# ---- main -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", required=True, help="COCO folder, or a folder for coco/ + yolo/")
    p.add_argument("--budget-min", type=float, default=15.0, help="training wall clock (minutes)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--cores", nargs="+", default=["0,1"],
                   help="taskset core list(s); with --parallel one disjoint set per contender")
    p.add_argument("--parallel", action="store_true", help="train all contenders at once")
    p.add_argument("--python", default=sys.executable, help="interpreter for scaledet")
    p.add_argument("--ultra-python", default="/work/venv-ultra/bin/python",
                   help="interpreter with ultralytics installed (may be the same as --python)")
    p.add_argument("--preset", nargs="+", default=["fcos-n"],
                   help="scaledet model preset(s); PRESET+OPTION=VALUE adds a train option "
                        "(e.g. fcos-n+amp=off)")
    p.add_argument("--recipes", default=",".join(ULTRA_RECIPES),
                   help="YOLOv8n recipes to run (comma list of default,tuned)")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument("--skip-ultra", action="store_true")
    p.add_argument("--skip-train", action="store_true", help="measure existing runs in --out")
    p.add_argument("--batch", type=int, default=16, help="training batch (both tools)")
    p.add_argument("--workers", type=int, default=None,
                   help="dataloader workers (both tools; default: each tool's own, ultralytics "
                        "2, which it turns to 0 on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=800, help="synth train images if building")
    p.add_argument("--n-val", type=int, default=200, help="synth val images if building")
    p.add_argument("--latency-runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", default="runs/bench_train")
    return p


def contenders_from(args: argparse.Namespace) -> list[Contender]:
    out = Path(args.out).resolve()
    todo: list[tuple[str, str, str]] = []
    if not args.skip_ours:
        for preset in args.preset:
            todo.append((f"scaledet-{preset}", "scaledet", preset))
    if not args.skip_ultra:
        for recipe in args.recipes.split(","):
            if recipe not in ULTRA_RECIPES:
                raise ValueError(f"--recipes: {recipe!r} is not one of {ULTRA_RECIPES}")
            todo.append((f"yolov8n-{recipe}", "ultralytics", recipe))
    if not todo:
        raise ValueError("nothing to run: --skip-ours and --skip-ultra both given")
    cores = assign_cores(args.cores, len(todo), args.parallel)
    return [Contender(n, k, r, cs, out / n) for (n, k, r), cs in zip(todo, cores)]


def collect(c: Contender, args: argparse.Namespace) -> None:
    run = c.out / "train"
    try:
        if c.kind == "scaledet":
            extra = parse_variant(c.recipe)[1]  # a variant may set its own --batch
            batch = int(extra[extra.index("--batch") + 1]) if "--batch" in extra else args.batch
            c.results.update(read_scaledet_run(run, batch))
        else:
            c.results.update(read_ultralytics_run(run))
    except (OSError, ValueError, KeyError) as e:
        c.results["error"] = f"no training results in {run}: {e}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["measure-scaledet"]:
        return measure_scaledet(argv[1:])
    args = build_parser().parse_args(argv)
    if not args.budget_min > 0:
        raise SystemExit("--budget-min must be > 0")
    contenders = contenders_from(args)
    data = prepare_data(Path(args.data).resolve(), args)
    if not args.skip_train:
        train_all(contenders, data, args)
    def collect_and_measure(c: Contender) -> None:
        collect(c, args)
        if "error" not in c.results:
            try:
                measure(c, data, args)
            except RuntimeError as e:
                c.results["error"] = str(e)

    if args.parallel:  # each on its own cores, as they trained
        with ThreadPoolExecutor(len(contenders)) as pool:
            list(pool.map(collect_and_measure, contenders))
    else:
        for c in contenders:
            collect_and_measure(c)
    r = ratios(contenders)
    print()
    print(format_table(contenders, r))
    report = {"machine": machine(), "config": {k: v for k, v in vars(args).items()},
              "contenders": {c.name: {"cores": c.cores, **c.results} for c in contenders},
              "ratios": r, "goals": GOALS}
    path = Path(args.out) / "results.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return 0 if all("error" not in c.results for c in contenders) else 1


if __name__ == "__main__":
    sys.exit(main())
