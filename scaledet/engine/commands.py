"""Handlers of ``scaledet train | val | demo`` (arguments are declared in cli.py; ``predict`` is
:mod:`scaledet.inference.commands`).

Each returns an exit code; user errors are raised as ValueError / FileNotFoundError and printed
by ``scaledet.cli.main`` as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

DEFAULT_MINUTES = 10.0
DEFAULT_WORKERS = 2
"""Data-loading processes in all when ``--workers`` is not given, shared by the ``--nproc``
ranks (at least one each), except where every rank has one CPU core (``default_workers``)."""


def default_workers(device: str, nproc: int) -> int:
    """``--workers`` (per rank) when not given.

    Several CPU ranks with one core each: 0, each rank loads its own batches. A loader process
    would only take turns with its rank on the same core, and adds a copy through shared
    memory: on a 2-core VM two ranks trained fcos-n at 107 / 112 img/s without loader
    processes against 98 / 103 with one each (epochs 2 and 3 of two alternating pairs;
    ~100 vs ~77 in epoch 1, which also starts the processes). Otherwise ``DEFAULT_WORKERS``
    shared by the ranks, at least one each.
    """
    from scaledet.engine.distributed import threads_per_rank

    if nproc > 1 and not str(device).startswith("cuda") and threads_per_rank(nproc) == 1:
        return 0
    return max(1, DEFAULT_WORKERS // nproc)


# ---- train ----------------------------------------------------------------------------------

def train_command(args: argparse.Namespace) -> int:
    from torch.multiprocessing import ProcessRaisedException

    from scaledet.engine.trainer import TrainingDiverged

    try:
        summary = train(args)
    except TrainingDiverged as e:
        print(f"scaledet train: error: {e}", file=sys.stderr)
        return 1
    except ProcessRaisedException as e:  # --nproc: a rank failed; its traceback says why
        print(f"scaledet train: error: a training process failed:\n{e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    if summary["skipped_steps"]:
        print(f"warning: {summary['skipped_steps']} steps were skipped (non-finite loss)")
    print(f"best mAP {summary['best_map']:.4f}  ->  {out / 'weights' / 'best.safetensors'}")
    print(f"metrics: {out / 'metrics.csv'}   plots: {out / 'plots'}")
    return 0


def train(args: argparse.Namespace, eval_min_minutes: float = 0.0) -> dict[str, Any]:
    """Build data, model and trainer from the parsed ``train`` arguments and run it
    (in ``args.nproc`` data-parallel processes when that is above 1)."""
    from scaledet.data import available_splits, load_dataset
    from scaledet.engine.distributed import auto_nproc, launch
    from scaledet.engine.trainer import resolve_device

    resolve_device(args.device)  # a bad --device: one line here, not a failed rank
    nproc = getattr(args, "nproc", 1) or 1
    if nproc == "auto":
        nproc = auto_nproc(args.device, args.batch)
    try:
        nproc = int(nproc)
    except ValueError:
        raise ValueError(f"--nproc must be a number or auto, got {nproc!r}") from None
    _check_positive(imgsz=args.imgsz, batch=args.batch, nproc=nproc)
    args.nproc = nproc  # recorded in the checkpoints as the concrete number
    if getattr(args, "workers", None) is None:
        args.workers = default_workers(args.device, nproc)
    if nproc > args.batch:
        raise ValueError(f"--nproc {nproc} is more than --batch {args.batch} (the batch is "
                         "split between the processes)")
    out = _prepare_out(Path(args.out), args.resume, getattr(args, "exist_ok", False))
    if args.epochs is None and args.time is None:
        args.time = DEFAULT_MINUTES
        print(f"no --epochs or --time given: training for {DEFAULT_MINUTES:g} minutes")
    train_ds = load_dataset(args.data, "train")
    if len(train_ds) < nproc:
        raise ValueError(f"--data {args.data}: the train split has {len(train_ds)} images, "
                         f"fewer than --nproc {nproc}" if len(train_ds) else
                         f"--data {args.data}: the train split has no images")
    val_ds = load_dataset(args.data, "val") if "val" in available_splits(args.data) else None
    if val_ds is None or not len(val_ds):
        print(f"warning: {args.data} has no val split: no validation, best = last")
    if args.time and not eval_min_minutes and getattr(args, "eval_interval", None) is None:
        # a timed run spends its budget training: validate about six times, not every epoch
        eval_min_minutes = args.time / 6
    if nproc > 1:  # bad --model / --set / --train-option / --augment: one line here, not in a rank
        from scaledet.models import build

        model = build(args.model, num_classes=train_ds.num_classes,
                      **parse_overrides(getattr(args, "set", None) or []))
        _train_config(args, model, eval_min_minutes)
        _augment_config(args)
    device_type = str(args.device).split(":")[0]
    return launch(_fit, nproc, (args, out, train_ds, val_ds, eval_min_minutes), device_type)


def _fit(args: argparse.Namespace, out: Path, train_ds, val_ds,
         eval_min_minutes: float) -> dict[str, Any]:
    """One process's part of ``train`` (every rank builds the same model from the seed)."""
    from scaledet.engine import distributed
    from scaledet.engine.trainer import Trainer, keep_freed_memory, seed_everything
    from scaledet.models import build

    rank, world = distributed.rank(), distributed.world_size()
    if world > 1 and str(args.device).startswith("cuda"):
        args.device = f"cuda:{distributed.local_rank()}"  # global rank counts all machines
    if not str(args.device).startswith("cuda"):
        keep_freed_memory()  # every rank is its own process
    seed_everything(args.seed)  # the model's initial weights come from the seed too
    model = build(args.model, num_classes=train_ds.num_classes,
                  **parse_overrides(getattr(args, "set", None) or []))
    if getattr(args, "amp", None) == "auto":  # one concrete choice for every rank and --resume
        args.amp = _auto_amp(args, model, out)
    cfg = _train_config(args, model, eval_min_minutes)
    loader = _loader(train_ds, args, train=True, shard=(rank, world))
    validator = None
    if rank == 0 and val_ds is not None and len(val_ds):
        validator = _validator(val_ds, args, cfg)
    meta = checkpoint_meta(args, model, train_ds)
    if rank == 0:
        procs = f", {world} processes" if world > 1 else ""
        print(f"training {args.model} on {len(train_ds)} images ({train_ds.num_classes} classes), "
              f"{len(val_ds) if val_ds else 0} val images, imgsz {args.imgsz}, batch {args.batch}"
              f"{procs}, {_budget(args)}, device {cfg.device}, amp {_amp_name(cfg)} -> {out}")
        if cfg.plots and not args.resume:
            _plot_labels(train_ds, out / "plots" / "labels.png", args.imgsz)
    trainer = Trainer(model, loader, cfg, out, evaluate=validator, meta=meta)
    summary = trainer.fit(resume=args.resume)
    if getattr(loader, "num_skipped", 0):
        print(loader.summary())
    return summary


def _plot_labels(dataset, path: Path, imgsz: int) -> None:
    from scaledet.engine.plots import plot_labels

    try:
        plot_labels(dataset, path, imgsz)
    except Exception as e:  # a plot must never stop a training
        print(f"warning: could not write {path}: {e}")


_BF16_SPEEDUPS: dict[tuple, float] = {}  # per process: two runs of one model choose alike


def _auto_amp(args: argparse.Namespace, model, out: Path) -> str:
    """``--amp auto`` as "off", "bf16" or "fp16", decided once: by rank 0, shared with the other
    ranks, and recorded in the checkpoints' ``train_args`` so that ``--resume`` keeps it.

    On a CPU with bf16 instructions the choice is timed (:func:`bf16_speedup`), not read off
    the flags: bf16 autocast trained fcos-n 1.16-1.22x as fast as fp32 on an AMD EPYC
    (AVX512-BF16) but 0.88x as fast on an Intel Xeon with AVX512-BF16 and no AMX in reach
    (benchmarks/RESULTS.md). Timings can differ between invocations when the two are close:
    pin ``--amp off|bf16`` for bit-identical repeats.
    """
    import torch

    from scaledet.engine import distributed
    from scaledet.engine.checkpoint import load_weights
    from scaledet.engine.trainer import resolve_amp, resolve_device

    last = out / "weights" / "last.safetensors"
    if args.resume and last.is_file():
        saved = (load_weights(last)[1].get("train_args") or {}).get("amp")
        if saved in ("off", "bf16", "fp16"):
            return saved
    device = resolve_device(args.device)
    names = ["off", "bf16", "fp16"]
    choice = 0
    if distributed.rank() == 0:
        dtype = resolve_amp("auto", device)
        if dtype == torch.bfloat16 and device.type == "cpu":
            size = max(int(args.imgsz), 256)  # tiny inputs time the overheads, not the convs
            key = (args.model, repr(getattr(model, "config", None)), size,
                   torch.get_num_threads())
            if key not in _BF16_SPEEDUPS:
                _BF16_SPEEDUPS[key] = bf16_speedup(model, size)
            speedup = _BF16_SPEEDUPS[key]
            dtype = torch.bfloat16 if speedup > 1.0 else None
            print(f"--amp auto: bf16 autocast trains {speedup:.2f}x as fast as fp32 on this CPU"
                  f" -> {'bf16' if dtype else 'fp32'}")
        choice = names.index({None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype])
    choice = int(distributed.all_reduce_max([float(choice)], device)[0])
    return names[choice]


def bf16_speedup(model, imgsz: int = 320, batch: int = 2, rounds: int = 3) -> float:
    """fp32 time / bf16-autocast time of a training forward + backward of a copy of ``model``
    (a :class:`~scaledet.models.Detector`) on ``batch`` random ``imgsz`` images with one box
    each; best of ``rounds``, the two dtypes alternating. About a second for fcos-n."""
    import copy

    import torch

    probe = copy.deepcopy(model).train()
    images = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[0.2, 0.25, 0.6, 0.7]]) * imgsz
    targets = [{"boxes": box, "labels": torch.zeros(1, dtype=torch.long)} for _ in range(batch)]

    def step(bf16: bool) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = probe(images, targets)["loss"]
        loss.backward()
        probe.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    step(False), step(True)  # warm-up: oneDNN picks its kernels on the first call
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for bf16 in times:
            times[bf16].append(step(bf16))
    return min(times[False]) / min(times[True])


def _amp_name(cfg) -> str:
    from scaledet.engine.trainer import resolve_amp, resolve_device

    dtype = resolve_amp(cfg.amp, resolve_device(cfg.device))
    return "off (fp32)" if dtype is None else str(dtype).replace("torch.", "")


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if v is None or v < 1:
            raise ValueError(f"--{name} must be >= 1, got {v}")


def _budget(args: argparse.Namespace) -> str:
    return f"{args.epochs} epochs" if args.epochs is not None else f"{args.time:.2f} minutes"


def _prepare_out(out: Path, resume: bool, exist_ok: bool) -> Path:
    """Refuse to silently overwrite an earlier run; clear our files when overwriting is asked."""
    state = out / "weights" / "last.state.pt"
    if resume:
        if not state.is_file():
            raise FileNotFoundError(f"--resume: no run to resume in {out} ({state} not found)")
        return out
    if state.is_file() or (out / "weights" / "last.safetensors").is_file():
        if not exist_ok:
            raise ValueError(f"--out {out} already holds a training run; use --resume to "
                             "continue it, --exist-ok to overwrite it, or another --out")
        for name in ("weights", "plots"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / "metrics.csv").unlink(missing_ok=True)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["head.norm=level_bn", "lr=0.01"]`` -> ``{"head": {"norm": "level_bn"}, "lr": 0.01}``
    for :func:`scaledet.models.build` (values parsed as JSON where they are, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. head.norm=level_bn")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {name} is set to a value and a section")
        node[leaf] = value
    return out


def _train_config(args: argparse.Namespace, model, eval_min_minutes: float):
    from scaledet.engine.trainer import TrainConfig

    lr = args.lr if args.lr is not None else getattr(model.config, "lr", None)
    kwargs = {k: v for k, v in {
        "optimizer": getattr(args, "optimizer", None), "amp": getattr(args, "amp", None),
        "eval_interval": getattr(args, "eval_interval", None), "lr": lr,
        "warmup_iters": getattr(args, "warmup", None),
    }.items() if v is not None}
    kwargs.update(_field_overrides(getattr(args, "train_option", None), TrainConfig,
                                   "--train-option"))
    return TrainConfig(**{"epochs": args.epochs, "time_minutes": args.time, "seed": args.seed,
                          "device": args.device, "grad_ckpt": getattr(args, "grad_ckpt", False),
                          "eval_min_minutes": eval_min_minutes, **kwargs})


def _loader(dataset, args: argparse.Namespace, train: bool, shard: tuple[int, int] = (0, 1)):
    from scaledet.data.loader import build_dataloader

    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    on_gpu = str(args.device).startswith("cuda")  # then uint8 batches go to float on the GPU
    return build_dataloader(dataset, imgsz=args.imgsz, batch_size=args.batch, train=train,
                            workers=args.workers if train else min(args.workers, 1),
                            seed=args.seed, strict=getattr(args, "strict", False),
                            device=args.device if on_gpu else None, shard=shard,
                            augment=_augment_config(args) if train else None)


def _augment_config(args: argparse.Namespace):
    """``--augment FIELD=VALUE`` items on top of :class:`~scaledet.data.transforms.AugmentConfig`
    (lists become tuples, e.g. ``scale_range=[0.75,1.25]``)."""
    from scaledet.data.transforms import AugmentConfig

    kwargs = _field_overrides(getattr(args, "augment", None), AugmentConfig, "--augment")
    try:
        return AugmentConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--augment: {e}") from None


def _field_overrides(items: list[str] | None, cls: type, flag: str) -> dict[str, Any]:
    """``FIELD=VALUE`` items of ``flag`` as keyword arguments of the dataclass ``cls`` (lists
    become tuples); a ``ValueError`` naming the valid fields for an unknown one."""
    fields = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in parse_overrides(items or []).items():
        if key not in fields or isinstance(value, dict):
            article = "an" if cls.__name__[0] in "AEIOU" else "a"
            raise ValueError(f"{flag} {key}: not {article} {cls.__name__} field (one of "
                             f"{', '.join(sorted(fields))})")
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _validator(val_ds, args: argparse.Namespace, cfg):
    """fp32 validation whatever ``--amp``: the same numbers as ``scaledet val``."""
    from scaledet.engine.trainer import resolve_device
    from scaledet.engine.validate import DetectionValidator

    return DetectionValidator(_loader(val_ds, args, train=False), val_ds,
                              resolve_device(cfg.device))


def checkpoint_meta(args: argparse.Namespace, model, dataset) -> dict[str, Any]:
    """What every checkpoint records besides the weights (see engine/checkpoint.py)."""
    train_args = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    return {"model": args.model, "model_config": asdict(model.config),
            "class_names": list(dataset.class_names),
            "category_ids": [int(c) for c in dataset.category_ids],
            "imgsz": args.imgsz, "train_args": train_args}


# ---- val ------------------------------------------------------------------------------------

def val_command(args: argparse.Namespace) -> int:
    from scaledet.data import load_dataset
    from scaledet.engine.checkpoint import model_from_weights
    from scaledet.engine.trainer import resolve_device
    from scaledet.engine.validate import DetectionValidator

    device = resolve_device(args.device)
    model, meta = model_from_weights(args.weights, device)
    model.fuse()
    dataset = load_dataset(args.data, args.split)
    _check_classes(meta, dataset, args.weights, args.data)
    args.imgsz = int(getattr(args, "imgsz", None) or meta.get("imgsz", 320))
    args.workers, args.seed = getattr(args, "workers", 1), 0
    _check_positive(batch=args.batch, imgsz=args.imgsz)
    validator = DetectionValidator(_loader(dataset, args, train=False), dataset, device)
    result = validator.run(model)
    print(result.summary())
    if len(result.category_ids) <= 50:  # longer tables belong in --json
        print(result.per_category_table())
    print(f"{len(dataset)} images, {validator.images_per_second:.1f} images/s")
    if args.json_out:
        payload = {**result.to_dict(), "images_per_second": validator.images_per_second}
        _write_json(args.json_out, payload)
        print(f"wrote {args.json_out}")
    if getattr(args, "plots", None):
        from scaledet.engine.plots import plot_pr

        paths = plot_pr(result, args.plots)
        paths.append(validator.confusion.plot(Path(args.plots) / "confusion_matrix.png",
                                              list(dataset.class_names)))
        print(f"wrote {', '.join(p.name for p in paths)} to {args.plots}")
    return 0


def _check_classes(meta: dict, dataset, weights: str, data: str) -> None:
    names = meta.get("class_names")
    if names is not None and list(names) != list(dataset.class_names):
        raise ValueError(f"{weights} was trained on classes {names} but {data} has "
                         f"{list(dataset.class_names)}")


def _write_json(path: str | Path, payload: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


# ---- predict (the command itself is scaledet.inference.commands) ---------------------------

def collect_images(sources: list[str]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the given folders."""
    from scaledet.data.images import IMAGE_SUFFIXES

    files: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"source not found: {p}")
    if not files:
        raise ValueError(f"no images found in {' '.join(sources)} "
                         f"(looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


# ---- demo -----------------------------------------------------------------------------------

DEMO_TRAIN, DEMO_VAL, DEMO_IMGSZ, DEMO_PREDICT = 1500, 200, 320, 6


def demo_command(args: argparse.Namespace) -> int:
    from scaledet.inference.commands import predict_stream
    from scaledet.inference.predictor import Predictor

    if not args.minutes > 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    start = time.monotonic()
    out = Path(args.out)
    data = demo_dataset(out / "data")
    setup_min = (time.monotonic() - start) / 60
    train_args = argparse.Namespace(
        data=str(data), model=args.model, imgsz=DEMO_IMGSZ, epochs=None,
        time=max(args.minutes - setup_min, args.minutes / 2), batch=16,
        workers=getattr(args, "workers", None), device=args.device, out=str(out / "train"),
        resume=False, exist_ok=True, seed=0, lr=None, strict=False, amp="auto",
        nproc=getattr(args, "nproc", "auto"))
    summary = train(train_args, eval_min_minutes=args.minutes / 4)
    weights = out / "train" / "weights" / "best.safetensors"
    val_images = sorted((data / "images" / "val").iterdir())[:DEMO_PREDICT]
    predictor = Predictor(weights, device=args.device, conf=0.3)
    pred = out / "predictions"
    shutil.rmtree(pred, ignore_errors=True)  # the demo's own output folder, rewritten each run
    predict_stream(predictor, val_images, pred / "predictions.json", errors=pred / "errors.txt",
                   images_dir=pred, progress_bar=False)
    _print_demo_summary(out, summary, time.monotonic() - start)
    return 0


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


def _print_demo_summary(out: Path, summary: dict[str, Any], seconds: float) -> None:
    m = summary["metrics"]
    print()
    print(f"demo finished in {seconds / 60:.1f} min "
          f"({summary['epoch']} epochs, {summary['step']} steps)")
    if m:
        print(f"  validation (EMA model, {DEMO_VAL} images): mAP {m['mAP']:.4f}  "
              f"mAP50 {m['mAP50']:.4f}  mAP75 {m['mAP75']:.4f}  "
              f"(small {m['mAP_small']:.4f}, medium {m['mAP_medium']:.4f}, "
              f"large {m['mAP_large']:.4f})")
    print(f"  weights:      {out / 'train' / 'weights' / 'best.safetensors'}")
    print(f"  metrics:      {out / 'train' / 'metrics.csv'}")
    print(f"  plots:        {out / 'train' / 'plots'}  (train_batch.jpg, labels, losses, mAP, "
          "PR curves, confusion matrix)")
    print(f"  predictions:  {out / 'predictions'}  (annotated images + predictions.json)")
