"""Handlers of ``scaledet train | val | demo``: command-line options to typed settings, once,
then :func:`scaledet.engine.fit.fit` / :func:`scaledet.evaluation.validator.validate_weights`.

Each returns an exit code; user errors are raised as ValueError / FileNotFoundError and printed
by :func:`scaledet.cli.main` as one line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from scaledet.engine.fit import TrainResult, TrainSettings, fit


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["head.norm=level_bn", "lr=0.01"]`` -> ``{"head.norm": "level_bn", "lr": 0.01}``
    (values parsed as JSON where they are, else kept as strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected FIELD=VALUE, e.g. head.norm=level_bn")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def parse_sigmas(text: str | None) -> list[float] | None:
    """``"0.025,0.035"`` -> ``[0.025, 0.035]`` (None stays None)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--sigmas {text!r}: expected comma-separated numbers") from None
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"--sigmas {text!r}: expected positive numbers")
    return values


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """The typed settings of ``scaledet train``'s arguments."""
    return TrainSettings(
        data=args.data, model=args.model, epochs=args.epochs, minutes=args.time,
        imgsz=args.imgsz, batch=args.batch, out=args.out, device=args.device, seed=args.seed,
        resume=args.resume, exist_ok=args.exist_ok, workers=args.workers, nproc=args.nproc,
        lr=args.lr, warmup=args.warmup, optimizer=args.optimizer, amp=args.amp,
        grad_ckpt=args.grad_ckpt, eval_interval=args.eval_interval, strict=args.strict,
        weights=args.weights, adapter=args.adapter, rank=args.rank,
        sigmas=parse_sigmas(args.sigmas),
        model_options=parse_assignments(args.set, "--set"),
        train_options=parse_assignments(args.train_option, "--train-option"),
        augment=parse_assignments(args.augment, "--augment"))


def train_command(args: argparse.Namespace) -> int:
    from torch.multiprocessing import ProcessRaisedException

    from scaledet.engine.distributed import torchrun_env
    from scaledet.engine.trainer import TrainingDiverged

    try:
        result = fit(settings_from_args(args))
    except TrainingDiverged as e:
        print(f"scaledet train: error: {e}", file=sys.stderr)
        return 1
    except ProcessRaisedException as e:  # --nproc: a rank failed; its traceback says why
        print(f"scaledet train: error: a training process failed:\n{e}", file=sys.stderr)
        return 1
    place = torchrun_env()
    if place is not None and place.rank != 0:  # a torchrun run: rank 0 reports for all
        return 130 if result.interrupted else 0
    if result.interrupted:
        how = "with"
        if place is not None and place.world_size > 1:
            how = "by starting the same torchrun command on every machine, with the arguments"
        print(f"interrupted: the run is saved in {result.out / 'weights'} "
              f"(epoch {result.epochs}, step {result.steps}); continue it exactly {how}:\n"
              f"  {resume_command(sys.argv[1:])}", file=sys.stderr)
        return 130
    print_result(result)
    return 0


def resume_command(argv: list[str]) -> str:
    """The command line that resumes the run ``argv`` started (``--exist-ok`` dropped)."""
    import shlex

    args = [a for a in argv if a not in ("--exist-ok", "--resume")]
    return shlex.join(["scaledet", *args, "--resume"])


def print_result(result: TrainResult) -> None:
    if result.skipped_steps:
        print(f"warning: {result.skipped_steps} steps were skipped (non-finite loss)")
    print(f"best mAP {result.best_map:.4f}  ->  {result.best}")
    print(f"metrics: {result.out / 'metrics.csv'}   plots: {result.out / 'plots'}")


# ---- val --------------------------------------------------------------------------------------

def val_command(args: argparse.Namespace) -> int:
    from scaledet.evaluation.validator import validate_weights
    from scaledet.models.checkpoint import read_meta

    if read_meta(args.weights).get("task") == "pose":
        if args.set:
            raise ValueError(f"--set: {args.weights} is a pose model; --set applies to "
                             "detectors' inference options")
        return _val_pose(args)

    result, validator = validate_weights(args.weights, args.data, split=args.split,
                                         imgsz=args.imgsz, batch=args.batch, device=args.device,
                                         model_options=parse_assignments(args.set, "--set"))
    if validator.inference_note:
        print(f"inference: {validator.inference_note}")
    print(result.summary())
    if len(result.category_ids) <= 50:  # longer tables belong in --json
        print(result.per_category_table())
    print(f"{len(validator.dataset)} images, {validator.images_per_second:.1f} images/s")
    if args.json_out:
        payload = {**result.to_dict(), "metrics": result.metrics,
                   "images_per_second": validator.images_per_second,
                   "inference_options": validator.inference_options}
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    if args.plots:
        from scaledet.plots.confusion import plot_confusion
        from scaledet.plots.pr import plot_pr

        paths = plot_pr(result, args.plots)
        paths.append(plot_confusion(validator.confusion, Path(args.plots) / "confusion_matrix.png",
                                    list(validator.dataset.class_names)))
        print(f"wrote {', '.join(p.name for p in paths)} to {args.plots}")
    return 0


def _val_pose(args: argparse.Namespace) -> int:
    """``scaledet val`` of a pose checkpoint: OKS stats on the ground-truth person boxes."""
    from scaledet.evaluation.pose import validate_pose_weights

    result, validator = validate_pose_weights(args.weights, args.data, split=args.split,
                                              batch=args.batch, device=args.device)
    print(result.summary())
    print(f"{len(validator.results)} people (ground-truth boxes), "
          f"{validator.crops_per_second:.1f} crops/s")
    if args.json_out:
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {**result.to_dict(), "crops_per_second": validator.crops_per_second}
        path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    if args.plots:
        print("--plots: no PR plots for keypoints yet (the stats are above)", file=sys.stderr)
    return 0


# ---- demo -------------------------------------------------------------------------------------

DEMO_TRAIN, DEMO_VAL, DEMO_IMGSZ, DEMO_PREDICT = 1500, 200, 320, 6


def demo_command(args: argparse.Namespace) -> int:
    from scaledet.inference.predictor import Predictor
    from scaledet.inference.stream import predict_stream

    if not args.minutes > 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    start = time.monotonic()
    out = Path(args.out)
    data = demo_dataset(out / "data")
    setup_min = (time.monotonic() - start) / 60
    suffix = next_run_suffix(out)
    if suffix:
        print(f"{out / 'train'} holds an earlier demo run (kept): this one writes to "
              f"{out / ('train' + suffix)} and {out / ('predictions' + suffix)}")
    settings = TrainSettings(
        data=str(data), model=args.model, imgsz=DEMO_IMGSZ, batch=16,
        out=str(out / f"train{suffix}"), minutes=max(args.minutes - setup_min, args.minutes / 2),
        device=args.device, nproc=args.nproc, eval_min_minutes=args.minutes / 4)
    result = fit(settings)
    if result.interrupted:
        command = resume_command(["train", "--data", str(data), "--model", args.model,
                                  "--imgsz", str(DEMO_IMGSZ), "--time", f"{settings.minutes:.6g}",
                                  "--out", str(result.out)])
        print(f"interrupted: the run is saved in {result.out / 'weights'}; continue it with:\n"
              f"  {command}", file=sys.stderr)
        return 130
    val_images = sorted((data / "images" / "val").iterdir())[:DEMO_PREDICT]
    predictor = Predictor(result.best, device=args.device, conf=0.3)
    pred = out / f"predictions{suffix}"
    predict_stream(predictor, val_images, pred / "predictions.json", errors=pred / "errors.txt",
                   images_dir=pred, progress_bar=False)
    _print_demo_summary(pred, result, time.monotonic() - start)
    return 0


def next_run_suffix(out: Path) -> str:
    """``""`` when ``out/train`` holds no run yet, else the first free ``"2"``, ``"3"``, ...: a
    demo run never overwrites an earlier one."""
    n = 1
    while True:
        suffix = "" if n == 1 else str(n)
        train = out / f"train{suffix}"
        if not ((train / "weights").exists() or (train / "metrics.csv").exists()
                or (out / f"predictions{suffix}").exists()):
            return suffix
        n += 1


def demo_dataset(folder: Path) -> Path:
    """The demo's synthetic dataset in ``folder``, generated once (atomically: a killed
    generation leaves no half dataset behind)."""
    from scaledet.data import make_synthetic_dataset

    if (folder / "annotations" / "instances_val.json").is_file():
        print(f"using the built-in dataset in {folder}")
        return folder
    if folder.exists():
        raise ValueError(f"{folder} exists but is not a complete demo dataset; remove it")
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t = time.monotonic()
    print(f"generating the built-in dataset ({DEMO_TRAIN} train + {DEMO_VAL} val images, "
          f"{DEMO_IMGSZ} px) in {folder} ...")
    make_synthetic_dataset(tmp, n_train=DEMO_TRAIN, n_val=DEMO_VAL, seed=0, imgsz=DEMO_IMGSZ)
    tmp.rename(folder)
    print(f"  done in {time.monotonic() - t:.0f} s")
    return folder


def _print_demo_summary(pred: Path, result: TrainResult, seconds: float) -> None:
    m = result.metrics
    print()
    print(f"demo finished in {seconds / 60:.1f} min ({result.epochs} epochs, {result.steps} steps)")
    if m:
        print(f"  validation (EMA model, {DEMO_VAL} images): mAP {m['mAP']:.4f}  "
              f"mAP50 {m['mAP50']:.4f}  mAP75 {m['mAP75']:.4f}  "
              f"(small {m['mAP_small']:.4f}, medium {m['mAP_medium']:.4f}, "
              f"large {m['mAP_large']:.4f})")
    print(f"  weights:      {result.best}")
    print(f"  metrics:      {result.out / 'metrics.csv'}")
    print(f"  plots:        {result.out / 'plots'}  (train_batch.jpg, labels, losses, mAP, "
          "PR curves, confusion matrix)")
    print(f"  predictions:  {pred}  (annotated images + predictions.json)")
