"""Train and measure Ultralytics YOLOv8n for `bench_train.py` (runs under ultralytics' interpreter).

Ultralytics is never a scaledet dependency: this script runs in a separate virtualenv (or, on a
machine that has it, in the same interpreter) as a subprocess of `benchmarks/bench_train.py`, which
pins it to its cores with `taskset`. Sub-commands:

    train     YOLOv8n from scratch (`yolov8n.yaml`, no pretrained weights) for a wall-clock budget;
              writes OUT/summary.json with images seen, training seconds and ultralytics' own mAP.
    prepare   build ultralytics' label caches once (parallel runs would race to write them).
    evaluate  predictions on the val images as a COCO results json (category and image ids taken
              from the COCO ground truth) for scaledet's evaluator, and the batch-1 CPU latency.

Nothing is downloaded at run time: the model is built from its yaml, plots are off (they fetch a
font), AMP is off (its check fetches weights) and YOLO_OFFLINE=1 is set before the import.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# The two ultralytics recipes compared. `default` is what a user gets from `model.train(...)`;
# `tuned` is adapted to a budget of minutes: short warm-up, AdamW at a fixed lr, mosaic always on.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "tuned": {"warmup_epochs": 0.3, "lr0": 0.002, "optimizer": "AdamW", "close_mosaic": 0},
}

# Thresholds of ultralytics' own validator, so the COCO evaluation sees the same detections.
EVAL_CONF, EVAL_IOU, MAX_DET = 0.001, 0.7, 100
# Thresholds of a deployed detector (ultralytics' `predict` default) for the latency measurement.
LATENCY_CONF = 0.25


def _offline_ultralytics(settings_dir: Path) -> None:
    """Import ultralytics with every run-time download and telemetry path switched off."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    settings_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(settings_dir))
    from ultralytics import settings
    from ultralytics.engine.trainer import BaseTrainer

    off = {"sync": False, "hub": False, "wandb": False, "tensorboard": False, "mlflow": False}
    settings.update({k: v for k, v in off.items() if k in settings})  # keys vary by version
    try:
        import polars  # noqa: F401
    except ImportError:
        # polars (a 40 MB wheel) is used only to re-read results.csv into the checkpoint metadata.
        BaseTrainer.read_results_csv = _read_results_csv


def _read_results_csv(trainer) -> dict[str, list]:
    """Stdlib stand-in for `BaseTrainer.read_results_csv` (columns -> lists of floats)."""
    try:
        with open(trainer.csv, newline="") as f:
            rows = list(csv.DictReader(f, skipinitialspace=True))
    except OSError:
        return {}
    return {k.strip(): [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def _set_threads(threads: int) -> None:
    """Make ultralytics use exactly ``threads`` torch threads.

    `import ultralytics` sets OMP_NUM_THREADS=1 when it is unset, and `select_device("cpu")` (run
    by every trainer and predictor) calls `torch.set_num_threads(min(8, os.cpu_count() - 1))`,
    which ignores the taskset affinity: 8 threads on 2 pinned cores on a 16-core machine, 1 thread
    on a 2-core one. Patch the constant it uses before those modules read it.
    """
    import torch
    import ultralytics.utils
    import ultralytics.utils.torch_utils

    ultralytics.utils.NUM_THREADS = ultralytics.utils.torch_utils.NUM_THREADS = threads
    torch.set_num_threads(threads)


def _check_threads(threads: int) -> int:
    import torch

    if torch.get_num_threads() != threads:
        raise RuntimeError(f"ultralytics runs with {torch.get_num_threads()} torch threads, "
                           f"expected {threads}")
    return threads


# ---- train --------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    _offline_ultralytics(out / "settings")
    _set_threads(args.threads)
    from ultralytics import YOLO

    state = {"images": 0, "val_seconds": 0.0, "t_start": None, "t_loop_end": None}

    def on_train_start(trainer) -> None:
        state["t_start"] = trainer.train_time_start
        state["torch_threads"] = _check_threads(args.threads)
        preprocess, validate, final_eval = trainer.preprocess_batch, trainer.validate, trainer.final_eval

        def counting_preprocess(batch):
            state["images"] += len(batch["img"])
            return preprocess(batch)

        def timed_validate():
            t0 = time.time()
            try:
                return validate()
            finally:
                state["val_seconds"] += time.time() - t0

        def marked_final_eval():
            state["t_loop_end"] = time.time()
            return final_eval()

        trainer.preprocess_batch = counting_preprocess
        trainer.validate = timed_validate
        trainer.final_eval = marked_final_eval

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_start", on_train_start)
    t0 = time.time()
    model.train(
        data=str(Path(args.data).resolve()), imgsz=args.imgsz, time=args.minutes / 60.0,
        batch=args.batch, workers=args.workers, device="cpu", pretrained=False, plots=False,
        amp=False, seed=args.seed, project=str(out), name="run", exist_ok=True, verbose=False,
        **RECIPES[args.recipe],
    )
    wall = time.time() - t0
    trainer = model.trainer
    loop_seconds = (state["t_loop_end"] or time.time()) - state["t_start"]
    weights = trainer.best if trainer.best.exists() else trainer.last
    summary = {
        "contender": f"yolov8n-{args.recipe}",
        "recipe": {**RECIPES[args.recipe]},
        "budget_minutes": args.minutes,
        "epochs_completed": trainer.epoch + 1,
        "train_images_seen": state["images"],
        "train_loop_seconds": loop_seconds,
        "train_val_seconds": state["val_seconds"],
        "process_train_call_seconds": wall,
        "weights": str(weights),
        "last_weights": str(trainer.last),
        "ultralytics_map50_95": float(trainer.metrics.get("metrics/mAP50-95(B)", float("nan"))),
        "ultralytics_map50": float(trainer.metrics.get("metrics/mAP50(B)", float("nan"))),
        "threads": state["torch_threads"],
        "batch": args.batch,
        "workers": args.workers,
        "versions": _versions(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


# ---- prepare ----------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> int:
    """Write ultralytics' label caches (labels/{train,val}.cache) once, before parallel runs
    read them: two trainings creating the same cache at once can read it half-written."""
    out = Path(args.out).resolve()
    _offline_ultralytics(out / "settings")
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(Path(args.data).resolve()))
    for split in ("train", "val"):
        ds = YOLODataset(img_path=data[split], data=data, imgsz=args.imgsz, augment=False,
                         prefix=f"{split}: ")
        print(f"{split}: {len(ds)} images, {sum(len(x['cls']) for x in ds.labels)} boxes")
    return 0


# ---- evaluate -----------------------------------------------------------------------------


def _val_images(gt: dict, images_dir: Path) -> list[tuple[int, Path]]:
    """(COCO image id, image path) for every ground-truth image, matched by file stem."""
    by_stem = {p.stem: p for p in images_dir.iterdir() if p.is_file()}
    pairs = []
    for im in gt["images"]:
        stem = Path(im["file_name"]).stem
        if stem not in by_stem:
            raise FileNotFoundError(f"--images: no file for ground-truth image {im['file_name']!r}")
        pairs.append((im["id"], by_stem[stem]))
    return pairs


def _category_ids(gt: dict, names: dict[int, str]) -> dict[int, int]:
    """YOLO class index -> COCO category id, matched by name."""
    by_name = {c["name"]: c["id"] for c in gt["categories"]}
    missing = sorted(set(names.values()) - set(by_name))
    if missing:
        raise ValueError(f"--gt: categories {missing} of the YOLO model are not in the ground truth")
    return {i: by_name[n] for i, n in names.items()}


def coco_results(model, pairs: list[tuple[int, Path]], cat_ids: dict[int, int], imgsz: int
                 ) -> tuple[list[dict], float]:
    """COCO results (bbox xywh, absolute pixels) for `pairs`, and the images/s of the pass."""
    dets: list[dict] = []
    t0 = time.perf_counter()
    for image_id, path in pairs:
        (r,) = model.predict(str(path), imgsz=imgsz, conf=EVAL_CONF, iou=EVAL_IOU, max_det=MAX_DET,
                             device="cpu", verbose=False)
        boxes = r.boxes
        for (x1, y1, x2, y2), c, s in zip(boxes.xyxy.tolist(), boxes.cls.tolist(),
                                          boxes.conf.tolist()):
            dets.append({"image_id": image_id, "category_id": cat_ids[int(c)],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    return dets, len(pairs) / (time.perf_counter() - t0)


def latency_ms(model, image: Path, imgsz: int, runs: int, warmup: int) -> list[float]:
    """Batch-1 forward + NMS times (ms) of the fused model on one preprocessed val image."""
    import numpy as np
    import torch
    from PIL import Image
    from ultralytics.utils.nms import non_max_suppression

    net = model.model.fuse(verbose=False).eval()
    img = Image.open(image).convert("RGB").resize((imgsz, imgsz))
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255.0
    times = []
    threads = torch.get_num_threads()
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            non_max_suppression(net(x), LATENCY_CONF, EVAL_IOU, max_det=MAX_DET)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    if torch.get_num_threads() != threads:
        raise RuntimeError("the torch thread count changed during the latency measurement")
    return times


def evaluate(args: argparse.Namespace) -> int:
    out_json = Path(args.json)
    _offline_ultralytics(out_json.parent / "settings")
    _set_threads(args.threads)
    import torch
    from ultralytics import YOLO

    gt = json.loads(Path(args.gt).read_text())
    pairs = _val_images(gt, Path(args.images))
    model = YOLO(args.weights)
    dets, ips = coco_results(model, pairs, _category_ids(gt, model.names), args.imgsz)
    Path(args.dt).write_text(json.dumps(dets))
    torch.set_num_threads(args.threads)  # predict() above reset it through select_device
    times = latency_ms(YOLO(args.weights), pairs[0][1], args.imgsz, args.runs, args.warmup)
    result = {
        "weights": args.weights,
        "detections_json": args.dt,
        "num_detections": len(dets),
        "predict_images_per_second": ips,
        "latency_ms_median": statistics.median(times),
        "latency_ms_p10": statistics.quantiles(times, n=10)[0],
        "latency_ms_p90": statistics.quantiles(times, n=10)[-1],
        "latency_runs": len(times),
        "latency_conf": LATENCY_CONF,
        "threads": _check_threads(args.threads),
    }
    out_json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


def _versions() -> dict[str, str]:
    import torch
    import ultralytics

    return {"ultralytics": ultralytics.__version__, "torch": torch.__version__,
            "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train YOLOv8n from scratch for a wall-clock budget")
    t.add_argument("--data", required=True, help="YOLO data.yaml")
    t.add_argument("--out", required=True, help="run folder (summary.json goes here)")
    t.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    t.add_argument("--minutes", type=float, required=True, help="wall-clock training budget")
    t.add_argument("--imgsz", type=int, default=320)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=train)
    r = sub.add_parser("prepare", help="build ultralytics' label caches of a YOLO dataset")
    r.add_argument("--data", required=True, help="YOLO data.yaml")
    r.add_argument("--out", required=True, help="folder for ultralytics' settings file")
    r.add_argument("--imgsz", type=int, default=320)
    r.set_defaults(func=prepare)
    e = sub.add_parser("evaluate", help="COCO results json on val images + batch-1 latency")
    e.add_argument("--weights", required=True, help="ultralytics .pt checkpoint")
    e.add_argument("--gt", required=True, help="COCO ground-truth json of the val split")
    e.add_argument("--images", required=True, help="folder of the val images")
    e.add_argument("--dt", required=True, help="write the COCO results json here")
    e.add_argument("--json", required=True, help="write the measurements here")
    e.add_argument("--imgsz", type=int, default=320)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--runs", type=int, default=100, help="timed latency runs (median reported)")
    e.add_argument("--warmup", type=int, default=10)
    e.set_defaults(func=evaluate)
    args = p.parse_args(argv)
    if args.cmd == "train" and args.minutes <= 0:
        p.error("--minutes must be > 0")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
