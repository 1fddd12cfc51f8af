"""Training a detector from typed settings: what ``scaledet train`` and :func:`scaledet.train`
both run.

:class:`TrainSettings` holds every option of a run; :func:`fit` builds the datasets, the
model (a preset plus overrides), the loaders, the validator and the
:class:`~scaledet.engine.trainer.Trainer`, runs it (in ``nproc`` data-parallel processes when
that is above 1) and returns a :class:`TrainResult`. Settings are resolved once (``"auto"``
values made concrete) into a new object; the caller's is never changed. Checkpoints record
the resolved settings, so ``resume`` continues with the same choices.

Started by ``torchrun`` on one or several machines, each process is one rank of the run
(:mod:`scaledet.engine.distributed`): ``nproc`` is the launcher's world size, and rank 0 alone
checks and prepares the run folder and decides ``amp="auto"``, so that the machines agree
whether or not they share a filesystem (only rank 0 writes there).

With ``weights`` a run starts from a trained checkpoint, whose config gives the architecture
(with the new class count): its tensors load, the class layers are rebuilt when the class
list differs (:func:`~scaledet.models.adapters.load_pretrained`), and with ``adapter`` the
base is frozen and only the adapter trains (:mod:`scaledet.models.adapters`); the run's
checkpoints then hold only what trained and name the base file and its SHA-256.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaledet.data.pose import PoseAugment
from scaledet.data.transforms import AugmentConfig
from scaledet.engine import distributed
from scaledet.engine.runtime import StopRequest
from scaledet.engine.trainer import TrainConfig
from scaledet.evaluation.coco import METRIC_NAMES
from scaledet.evaluation.pose import POSE_METRIC_NAMES
from scaledet.models.config import apply_overrides, config_from_dict, nest
from scaledet.models.factory import preset, upgrade_config
from scaledet.models.keypoints.config import is_pose_config, pose_config_from_dict
from scaledet.models.sizes import check_imgsz, config_stride
from scaledet.ops.device import resolve_amp, resolve_device

DEFAULT_MINUTES = 10.0
DEFAULT_IMGSZ = 320
"""A detector's input side when ``imgsz`` is not given."""
DEFAULT_WORKERS = 2
"""Data-loading processes in all when ``workers`` is not given, shared by the ``nproc`` ranks
(at least one each), except where every rank has one CPU core (:func:`default_workers`)."""


@dataclass
class TrainSettings:
    """Every option of a training run (``scaledet train --help`` says the same per flag).

    Attributes:
        data: COCO folder, YOLO ``data.yaml`` or VOC folder.
        model: preset name (:data:`~scaledet.models.factory.PRESETS`); None: ``fcos-n``, or
            with ``weights`` the base checkpoint's (another name is an error).
        weights: a trained ``.safetensors`` checkpoint to start from (fine-tuning); the
            architecture is its config with this dataset's class count.
        adapter: with ``weights``, train only an adapter on the frozen base: ``"lora"``,
            ``"adapter"``, ``"prefix"`` or ``"head"`` (:mod:`scaledet.models.adapters`).
        rank: LoRA rank, adapter bottleneck width or prefix length.
        sigmas: pose models: per-joint OKS sigmas of the validation (default: COCO's for 17
            joints; required for another joint count).
        epochs, minutes: stop after this many epochs or minutes of wall clock, whichever
            comes first; neither: ``DEFAULT_MINUTES``.
        imgsz: training and validation input side in pixels (None: ``DEFAULT_IMGSZ``). A pose
            model's input is its crop, ``input_size`` ``(H, W)`` of its config (model option
            ``input_size=[H, W]``); an ``imgsz`` other than ``H`` is an error there.
        batch: images per optimizer step (all processes together).
        out: output folder (weights/, metrics.csv, plots/).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: seeds the initial weights, the data order and the augmentation.
        resume: continue the run in ``out`` exactly where it stopped.
        exist_ok: overwrite a finished run in ``out`` (otherwise refused).
        workers: data-loading processes per rank (None: :func:`default_workers`).
        nproc: data-parallel processes, or ``"auto"`` (:func:`~scaledet.engine.distributed.auto_nproc`);
            under ``torchrun`` the launcher's world size, whatever is given.
        lr, warmup, optimizer: optimizer settings; ``lr`` / ``warmup`` None take the preset's
            recipe.
        amp: ``"auto"``, ``"off"``, ``"bf16"`` or ``"fp16"``; ``"auto"`` on a CPU with bf16
            instructions times bf16 against fp32 on the model and keeps the faster.
        grad_ckpt: gradient checkpointing of the backbone.
        eval_interval: validate every N epochs (None: every epoch, and in a timed run at most
            every sixth of the budget; 0: only at the end).
        eval_min_minutes: minutes between periodic validations (None: as ``eval_interval``
            says).
        strict: stop at the first unreadable image instead of skipping it.
        model_options: ModelConfig overrides (``--set``), e.g. ``{"head.norm": "gn"}``.
        train_options: TrainConfig overrides (``--train-option``), e.g. ``{"ema_tau": 600}``.
        augment: AugmentConfig overrides (``--augment``), e.g. ``{"mosaic": 0.5}``.
        progress: progress bars.
    """

    data: str
    model: str | None = None
    epochs: int | None = None
    minutes: float | None = None
    imgsz: int | None = None
    batch: int = 16
    out: str = "runs/train"
    device: str = "cpu"
    seed: int = 0
    resume: bool = False
    exist_ok: bool = False
    workers: int | None = None
    nproc: int | str = "auto"
    lr: float | None = None
    warmup: int | None = None
    optimizer: str = "adamw"
    amp: str = "auto"
    grad_ckpt: bool = False
    eval_interval: int | None = None
    eval_min_minutes: float | None = None
    strict: bool = False
    model_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    weights: str | None = None
    adapter: str | None = None
    rank: int = 8
    sigmas: list[float] | None = None


@dataclass
class TrainResult:
    """What a finished run left behind.

    Attributes:
        best, last: the weights (``.safetensors``) with the best validation mAP and of the
            last epoch.
        metrics: the final validation's 12 COCO stats (:data:`~scaledet.evaluation.coco.METRIC_NAMES`:
            ``mAP``, ``mAP50``, ... ``AR_large``), or a pose model's 10 OKS stats
            (:data:`~scaledet.evaluation.pose.POSE_METRIC_NAMES`); empty without a val split.
        out: the run folder; epochs, steps, minutes, skipped_steps: how far it went.
        interrupted: the run was stopped by Ctrl-C / SIGTERM and saved a resumable state
            (``resume=True`` continues it exactly).
    """

    best: Path
    last: Path
    metrics: dict[str, float]
    out: Path
    epochs: int
    steps: int
    minutes: float
    skipped_steps: int = 0
    best_map: float = -1.0
    interrupted: bool = False


def default_workers(device: str, nproc: int) -> int:
    """``workers`` (per rank) when not given, for ``nproc`` ranks on this machine. Several CPU
    ranks with one core each: 0, each rank loads its own batches (a loader process would only
    take turns with its rank on the same core, and adds a copy through shared memory).
    Otherwise ``DEFAULT_WORKERS`` shared by the ranks, at least one each."""
    if nproc > 1 and not str(device).startswith("cuda") and distributed.threads_per_rank(
            nproc) == 1:
        return 0
    return max(1, DEFAULT_WORKERS // nproc)


# ---- settings ---------------------------------------------------------------------------------

def resolve(settings: TrainSettings, num_train: int) -> TrainSettings:
    """A copy of ``settings`` with ``nproc``, ``workers`` and the budget made concrete and every
    option checked (a bad value is one ``ValueError`` here, not a failed process later).
    ``imgsz`` is rounded up to a multiple of the model config's largest stride, with a note
    (:func:`~scaledet.models.sizes.check_imgsz`, the rule of ``predict``, ``val`` and ``info``).

    Started by ``torchrun`` (in a process group that already exists, or alone), ``nproc`` is
    the world size and default ``workers`` are shared by the ranks on this machine only."""
    s = copy.deepcopy(settings)
    resolve_device(s.device)
    _resolve_weights(s)
    nproc = s.nproc
    launched = distributed.world_size() > 1 or distributed.torchrun_env() is not None
    if launched:  # the launcher started the processes: no more
        if nproc != "auto" and str(nproc) != str(distributed.world_size()):
            _note(f"nproc {nproc} ignored: the launcher started {distributed.world_size()} "
                  "processes")
        nproc = distributed.world_size()
    elif nproc == "auto":
        nproc = distributed.auto_nproc(s.device, s.batch)
    try:
        s.nproc = int(nproc)
    except ValueError:
        raise ValueError(f"nproc must be a number or auto, got {nproc!r}") from None
    for name in ("batch", "nproc"):
        if getattr(s, name) is None or getattr(s, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(s, name)}")
    cfg = model_config(s, 1)
    if is_pose(s):
        h, w = cfg.input_size
        if s.imgsz is not None and s.imgsz != h:
            raise ValueError(f"imgsz {s.imgsz}: {_preset_name(s)} is a pose model, its input "
                             f"is a {h}x{w} (height x width) person crop; change it with the "
                             f"model option input_size=[H, W] (scaledet train --set "
                             f"input_size=[{2 * h},{2 * w}]), not imgsz")
    s.imgsz = DEFAULT_IMGSZ if s.imgsz is None else s.imgsz
    s.imgsz, note = check_imgsz(s.imgsz, config_stride(cfg.strides))
    if note:
        _note(note, file=sys.stderr)
    if s.workers is None:
        local = distributed.local_world_size() if launched else s.nproc
        s.workers = default_workers(s.device, local)
    if s.workers < 0:
        raise ValueError(f"workers must be >= 0, got {s.workers}")
    if s.nproc > s.batch:
        raise ValueError(f"nproc {s.nproc} is more than batch {s.batch} (the batch is split "
                         "between the processes)")
    if s.epochs is None and s.minutes is None:
        s.minutes = DEFAULT_MINUTES
        _note(f"no epochs or minutes given: training for {DEFAULT_MINUTES:g} minutes")
    if num_train < s.nproc:
        raise ValueError(f"{s.data}: the train split has {num_train} images, fewer than nproc "
                         f"{s.nproc}" if num_train else f"{s.data}: the train split has no images")
    if s.eval_min_minutes is None:  # a timed run spends its budget training: validate about
        s.eval_min_minutes = s.minutes / 6 if s.minutes and s.eval_interval is None else 0.0
    return s


def _resolve_weights(s: TrainSettings) -> None:
    """Check ``weights`` / ``adapter`` / ``rank`` and make ``model`` concrete (in place)."""
    if s.adapter is not None:
        from scaledet.models.adapters import ADAPTER_KINDS

        if s.adapter not in ADAPTER_KINDS:
            raise ValueError(f"adapter must be one of {', '.join(ADAPTER_KINDS)}, got "
                             f"{s.adapter!r}")
        if s.weights is None:
            raise ValueError(f"adapter {s.adapter}: an adapter trains on a trained model; give "
                             "the base checkpoint (--weights BASE.safetensors)")
    if s.rank < 1:
        raise ValueError(f"rank must be >= 1, got {s.rank}")
    if s.weights is None:
        s.model = s.model or "fcos-n"
        return
    meta = _base_meta(s.weights)
    _refuse_unmergeable_adapter(s.weights, meta)
    base = meta.get("model")
    if s.model is not None and base is not None and s.model != base:
        raise ValueError(f"model {s.model}: {s.weights} is a {base} checkpoint, and with weights "
                         "the architecture is the checkpoint's (leave the model out)")
    s.model = s.model or base or "fcos-n"


def _refuse_unmergeable_adapter(path: str, meta: dict[str, Any]) -> None:
    """A ``ValueError`` naming ``path`` when it was trained with a bottleneck ``adapter`` or a
    ``prefix`` (adapted or standalone): unlike LoRA, which merges into plain weights, their
    tensors (``adapters.*``, ``prefix_k`` / ``prefix_v``) have no place in the model a
    fine-tune builds and would be silently dropped, leaving only the base."""
    kind = (meta.get("adapter") or {}).get("kind")
    if kind not in ("adapter", "prefix"):
        return
    base = (meta.get("base_weights") or meta.get("adapted_from") or {}).get("path")
    what = {"adapter": "a bottleneck adapter", "prefix": "prefix tuning"}[kind]
    raise ValueError(f"{path}: trained with {what}, whose tensors cannot be merged "
                     "into the model a fine-tune starts from (they would be dropped); fine-tune "
                     f"from its base model{f' ({base})' if base else ''} instead, or from a "
                     "LoRA checkpoint (adapted or standalone), which merges into plain weights")


def _base_meta(path: str) -> dict[str, Any]:
    """The metadata of the base checkpoint ``path`` (it must describe its model)."""
    from scaledet.models.checkpoint import read_meta

    meta = read_meta(path)
    if "model_config" not in meta:
        raise ValueError(f"{path}: not a scaledet checkpoint (no model_config in its metadata)")
    return meta


def _preset_name(s: TrainSettings) -> str:
    if s.model is not None:
        return s.model
    return (_base_meta(s.weights).get("model") if s.weights else None) or "fcos-n"


def _note(message: str, file: Any = None) -> None:
    """Print ``message`` once per run: by rank 0 (every process of a ``torchrun`` run resolves
    the same settings)."""
    if distributed.is_main():
        print(message, file=file)


def is_pose(s: TrainSettings) -> bool:
    """Whether the run trains a top-down pose model (a pose preset, or a pose base)."""
    if s.weights is not None:
        return _base_meta(s.weights).get("task") == "pose"
    return preset(_preset_name(s)).task == "pose"


def num_outputs(s: TrainSettings, dataset) -> int:
    """What the model config is built for: the dataset's class count, or for a pose model
    its keypoint count (a ``ValueError`` when it has none)."""
    if not is_pose(s):
        return dataset.num_classes
    if not dataset.num_keypoints:
        raise ValueError(f"{s.data}: {_preset_name(s)} is a pose model and this dataset has no "
                         "keypoints (COCO person_keypoints, YOLO pose with kpt_shape, or "
                         "`scaledet data synth --task keypoints`)")
    return dataset.num_keypoints


def model_config(s: TrainSettings, num_classes: int, num_keypoints: int = 0):
    """The run's :class:`~scaledet.models.config.ModelConfig` (a pose model's
    :class:`~scaledet.models.keypoints.config.PoseConfig`): the preset (with ``weights``, the
    base checkpoint's config) for ``num_classes`` classes (pose: keypoints), plus
    ``model_options``. A detector with a keypoint branch (``head.num_keypoints > 0``, e.g.
    face-n) gets the dataset's ``num_keypoints`` when that is not 0."""
    if s.weights is not None:
        data = _base_meta(s.weights)["model_config"]
        if is_pose_config(data):
            cfg = dataclasses.replace(pose_config_from_dict(data), num_keypoints=num_classes)
        else:
            cfg = config_from_dict(upgrade_config(data))
            cfg = dataclasses.replace(cfg, num_classes=num_classes)
    else:
        cfg = preset(_preset_name(s)).config(num_classes)
    cfg = apply_overrides(cfg, s.model_options) if s.model_options else cfg
    if num_keypoints and getattr(getattr(cfg, "head", None), "num_keypoints", 0):
        cfg = dataclasses.replace(cfg, head=dataclasses.replace(cfg.head,
                                                                num_keypoints=num_keypoints))
    return cfg


def train_config(s: TrainSettings) -> TrainConfig:
    """The trainer's settings: the preset's recipe, then the run's options on top."""
    recipe = preset(_preset_name(s)).recipe
    kwargs: dict[str, Any] = {"lr": recipe.lr, "warmup_iters": recipe.warmup_iters}
    kwargs.update({k: v for k, v in {"lr": s.lr, "warmup_iters": s.warmup,
                                      "optimizer": s.optimizer, "amp": s.amp,
                                      "eval_interval": s.eval_interval}.items()
                   if v is not None})
    kwargs.update(_checked_options(s.train_options, TrainConfig, "train option"))
    kwargs.update(epochs=s.epochs, time_minutes=s.minutes, seed=s.seed, device=s.device,
                  grad_ckpt=s.grad_ckpt, eval_min_minutes=s.eval_min_minutes or 0.0,
                  progress=s.progress)
    return TrainConfig(**kwargs)


def augment_config(s: TrainSettings) -> AugmentConfig | PoseAugment:
    """The training augmentation: the preset's recipe, then ``augment`` on top (a pose
    model's: :class:`~scaledet.data.pose.PoseAugment`)."""
    recipe = preset(_preset_name(s)).recipe
    if is_pose(s):
        kwargs = {"scale_range": recipe.scale_range,
                  **_checked_options(s.augment, PoseAugment, "augment")}
        try:
            return PoseAugment(**kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"augment: {e}") from None
    kwargs: dict[str, Any] = {"mosaic": recipe.mosaic, "scale_range": recipe.scale_range}
    kwargs.update(_checked_options(s.augment, AugmentConfig, "augment"))
    try:
        return AugmentConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"augment: {e}") from None


def _checked_options(options: dict[str, Any], cls: type, what: str) -> dict[str, Any]:
    """``options`` (flat or dotted keys) as keyword arguments of the dataclass ``cls``, lists
    as tuples; a ``ValueError`` naming the field and the valid ones for an unknown field."""
    fields = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in nest(options).items():
        if key not in fields or isinstance(value, dict):
            raise ValueError(f"{what} {key}: not a field of {cls.__name__}; valid: "
                             f"{', '.join(sorted(fields))}")
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


# ---- the run ----------------------------------------------------------------------------------

def fit(settings: TrainSettings) -> TrainResult:
    """Train as ``settings`` say; see the module docstring."""
    with distributed.torchrun_group(str(settings.device).split(":")[0]):
        return _fit(settings)


def _fit(settings: TrainSettings) -> TrainResult:
    from scaledet.data import available_splits, load_dataset

    # rank 0 checks the folder (an earlier run there without --resume or --exist-ok is
    # refused before any work); its answer (or its error) holds for every rank
    out = Path(settings.out)
    distributed.on_rank0(_prepare_out_rank0, out, settings.resume, settings.exist_ok, False)
    train_ds = load_dataset(settings.data, "train")
    s = resolve(settings, len(train_ds))
    val_ds = load_dataset(s.data, "val") if "val" in available_splits(s.data) else None
    if val_ds is None or not len(val_ds):
        _note(f"warning: {s.data} has no val split: no validation, best = last")
    # every bad option fails here, in this process, not in a training rank
    model_config(s, num_outputs(s, train_ds), train_ds.num_keypoints)
    train_config(s)
    augment_config(s)
    if s.weights is not None:
        _check_start(s, train_ds)
    # only now, with every option checked, is an earlier run cleared (--exist-ok): a bad
    # --weights, --adapter or --set leaves it intact
    out = distributed.on_rank0(_prepare_out_rank0, out, s.resume, s.exist_ok, True)
    device_type = str(s.device).split(":")[0]
    # With spawned ranks, they get the terminal's Ctrl-C too and save; this process keeps
    # waiting for them. A single process, or a rank started by torchrun, handles it in the trainer.
    spawns = s.nproc > 1 and distributed.world_size() == 1
    with StopRequest() if spawns else contextlib.nullcontext() as stop:
        try:
            summary = distributed.launch(_fit_rank, s.nproc, (s, out, train_ds, val_ds),
                                         device_type)
        except Exception:
            if stop is not None and stop.requested:  # a rank stopped before training began
                raise KeyboardInterrupt from None
            raise
    weights = out / "weights"
    names = POSE_METRIC_NAMES if is_pose(s) else METRIC_NAMES
    metrics = {k: v for k, v in (summary["metrics"] or {}).items() if k in names}
    return TrainResult(best=weights / "best.safetensors", last=weights / "last.safetensors",
                       metrics=metrics, out=out, epochs=summary["epoch"], steps=summary["step"],
                       minutes=summary["elapsed_s"] / 60, best_map=summary["best_map"],
                       skipped_steps=summary["skipped_steps"],
                       interrupted=bool(summary.get("interrupted")))


def _fit_rank(s: TrainSettings, out: Path, train_ds, val_ds) -> dict[str, Any]:
    """One process's part of :func:`fit` (every rank builds the same model from the seed)."""
    from scaledet.engine.runtime import keep_freed_memory, seed_everything
    from scaledet.engine.trainer import Trainer
    from scaledet.models.factory import build_from_config

    s = copy.deepcopy(s)
    rank, world = distributed.rank(), distributed.world_size()
    if world > 1 and s.device.startswith("cuda"):
        s.device = f"cuda:{distributed.local_rank()}"  # global rank counts all machines
    if not s.device.startswith("cuda"):
        keep_freed_memory()  # every rank is its own process
    seed_everything(s.seed)  # the model's initial weights come from the seed too
    pose = is_pose(s)
    model = build_from_config(model_config(s, num_outputs(s, train_ds), train_ds.num_keypoints),
                              flip_index=train_ds.flip_index() if pose else None)
    if s.weights is not None:
        report = start_from_weights(model, s, train_ds.class_names)
        if rank == 0:
            print(report)
    if s.amp == "auto":  # one concrete choice for every rank and for resume
        s.amp = _auto_amp(s, model, out)
    cfg = train_config(s)
    loader = _loader(train_ds, s, train=True, shard=(rank, world), model=model)
    validator = None
    if rank == 0 and val_ds is not None and len(val_ds) and pose:
        from scaledet.evaluation.pose import PoseValidator

        validator = PoseValidator(_loader(val_ds, s, train=False, model=model), val_ds,
                                  resolve_device(cfg.device), s.sigmas)
    elif rank == 0 and val_ds is not None and len(val_ds):
        from scaledet.evaluation.validator import DetectionValidator

        validator = DetectionValidator(_loader(val_ds, s, train=False), val_ds,
                                       resolve_device(cfg.device))
    meta = checkpoint_meta(s, model, train_ds)
    if rank == 0:
        local = distributed.local_world_size()
        here = f" ({local} on this machine)" if local < world else ""
        procs = f", {world} processes{here}" if world > 1 else ""
        budget = f"{s.epochs} epochs" if s.epochs is not None else f"{s.minutes:.2f} minutes"
        what = (f"{len(loader.dataset)} people, {model.input_size[0]}x{model.input_size[1]} crops"
                if pose else f"{train_ds.num_classes} classes")
        size = "" if pose else f", imgsz {s.imgsz}"
        print(f"training {s.model} on {len(train_ds)} images ({what}), "
              f"{len(val_ds) if val_ds else 0} val images{size}, batch {s.batch}"
              f"{procs}, {budget}, device {cfg.device}, amp {_amp_name(cfg)} -> {out}")
        if cfg.plots and not s.resume:
            _plot_labels(train_ds, out / "plots" / "labels.png", s.imgsz)
    trainer = Trainer(model, loader, cfg, out, evaluate=validator, meta=meta,
                      metric_names=POSE_METRIC_NAMES if pose else None)
    summary = trainer.fit(resume=s.resume)
    if getattr(loader, "num_skipped", 0):
        print(loader.summary())
    return summary


def _check_start(s: TrainSettings, train_ds) -> None:
    """:func:`start_from_weights` on a throw-away model: another architecture or an adapter
    the model cannot take fails in this process, not in a training rank. The random state is
    left as it was."""
    import torch

    from scaledet.models.factory import build_from_config

    with torch.random.fork_rng(devices=[]):
        start_from_weights(build_from_config(model_config(s, num_outputs(s, train_ds),
                                                          train_ds.num_keypoints)), s,
                           train_ds.class_names)


def start_from_weights(model, s: TrainSettings, class_names) -> str:
    """Load ``s.weights`` into ``model`` (class layers rebuilt when ``class_names`` differ
    from the checkpoint's) and, with ``s.adapter``, adapt it; returns the one-line report."""
    from scaledet.models.adapters import AdapterConfig, apply_adapters, load_pretrained
    from scaledet.models.checkpoint import load_weights, model_from_weights

    meta = _base_meta(s.weights)
    if meta.get("adapter") is not None:  # an adapted base: its full model, LoRA merged
        state = model_from_weights(s.weights, "cpu")[0].state_dict()
    else:
        state = load_weights(s.weights)[0]
    same = list(meta.get("class_names") or []) == list(class_names)
    report = load_pretrained(model, state, source=s.weights, same_classes=same)
    line = report.line()
    if s.adapter is not None:
        apply_adapters(model, AdapterConfig(s.adapter, s.rank, full=report.rebuilt_modules))
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        line += (f"; adapter {s.adapter} rank {s.rank}: {trained:,} of {total:,} parameters "
                 f"train ({100 * trained / total:.1f}%)")
    return line


def _loader(dataset, s: TrainSettings, train: bool, shard: tuple[int, int] = (0, 1),
            model=None):
    from scaledet.data.loader import build_dataloader

    on_gpu = s.device.startswith("cuda")  # then uint8 batches go to float on the GPU
    if is_pose(s):
        from scaledet.data.pose import build_pose_loader

        return build_pose_loader(dataset, model.input_size, s.batch, train,
                                 workers=s.workers if train else min(s.workers, 1),
                                 augment=augment_config(s) if train else None,
                                 padding=model.config.box_padding, seed=s.seed, strict=s.strict,
                                 shard=shard, device=s.device if on_gpu else None)
    return build_dataloader(dataset, imgsz=s.imgsz, batch_size=s.batch, train=train,
                            workers=s.workers if train else min(s.workers, 1), seed=s.seed,
                            strict=s.strict, device=s.device if on_gpu else None, shard=shard,
                            augment=augment_config(s) if train else None)


def _plot_labels(dataset, path: Path, imgsz: int) -> None:
    from scaledet.plots.labels import plot_labels

    try:
        plot_labels(dataset, path, imgsz)
    except Exception as e:  # a plot must never stop a training
        print(f"warning: could not write {path}: {e}")


def checkpoint_meta(s: TrainSettings, model, dataset) -> dict[str, Any]:
    """What every checkpoint records besides the weights (see :mod:`scaledet.models.checkpoint`);
    started from ``weights``, that file's path and SHA-256: as the base an adapted checkpoint
    needs (``base_weights``), or where a full fine-tune began (``init_weights``)."""
    from scaledet.models.checkpoint import base_reference

    meta = {"model": s.model, "model_config": asdict(model.config),
            "recipe": asdict(preset(_preset_name(s)).recipe),
            "class_names": list(dataset.class_names),
            "category_ids": [int(c) for c in dataset.category_ids],
            "imgsz": s.imgsz, "train_settings": asdict(s)}
    if is_pose(s):
        meta.update(task="pose", keypoint_names=dataset.keypoint_names,
                    skeleton=[list(p) for p in dataset.skeleton or []],
                    flip_index=dataset.flip_index(), sigmas=s.sigmas,
                    imgsz=model.input_size[0])
    elif getattr(model.config.head, "num_keypoints", 0):  # a detector with keypoints (face-n)
        meta.update(keypoint_names=dataset.keypoint_names,
                    skeleton=[list(p) for p in dataset.skeleton or []])
    if s.weights is not None:
        meta["base_weights" if s.adapter else "init_weights"] = base_reference(s.weights)
    adapter = getattr(model, "adapter_config", None)
    if adapter is not None:
        meta["adapter"] = adapter.to_dict()
    return meta


def _prepare_out_rank0(out: Path, resume: bool, exist_ok: bool, clear: bool = True) -> Path:
    """:func:`prepare_out` by rank 0; a run to resume that is not there may be on another
    machine of a multi-machine run, which the error then says."""
    try:
        return prepare_out(out, resume, exist_ok, clear)
    except FileNotFoundError as e:
        if distributed.world_size() == 1:
            raise
        import socket

        raise FileNotFoundError(
            f"{e}; rank 0 (on {socket.gethostname()}) reads the run from its own disk: where "
            "the machines do not share the output folder, the machine that holds the run must "
            "get rank 0 (torchrun --rdzv-backend static --node-rank 0 on it)") from None


def prepare_out(out: Path, resume: bool, exist_ok: bool, clear: bool = True) -> Path:
    """Refuse to silently overwrite an earlier run; clear our files when overwriting is asked
    and ``clear`` (False: only check, as :func:`fit` does before it has checked the options,
    so that a bad option does not cost the earlier run)."""
    state = out / "weights" / "last.state.pt"
    if resume:
        if not state.is_file():
            raise FileNotFoundError(f"resume: no run to resume in {out} ({state} not found)")
        return out
    if state.is_file() or (out / "weights" / "last.safetensors").is_file():
        if not exist_ok:
            raise ValueError(f"{out} already holds a training run; resume it (--resume), "
                             "overwrite it (--exist-ok) or choose another output folder (--out)")
        if not clear:
            return out
        for name in ("weights", "plots"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / "metrics.csv").unlink(missing_ok=True)
    return out


# ---- --amp auto -------------------------------------------------------------------------------

_BF16_SPEEDUPS: dict[tuple, float] = {}  # per process: two runs of one model choose alike


def _auto_amp(s: TrainSettings, model, out: Path) -> str:
    """``amp="auto"`` as "off", "bf16" or "fp16", decided once: by rank 0 (the only rank whose
    machine is sure to hold the run's files), shared with the other ranks, and recorded in the
    checkpoints so that ``resume`` keeps it. On a CPU with bf16 instructions the choice is
    timed (:func:`bf16_speedup`), not read off the flags: some such CPUs train slower with
    bf16 than with fp32. Every rank runs that timing (a head's loss may all-reduce across
    ranks, e.g. the set heads' box count, so the ranks must step together); rank 0's
    measurement decides. Pin ``amp`` for bit-identical repeats."""
    choice = distributed.on_rank0(_resumed_or_untimed_amp, s, out)
    if choice != "time":
        return choice
    import torch

    size = max(int(s.imgsz), 256)  # tiny inputs time the overheads, not the convs
    key = (s.model, repr(getattr(model, "config", None)), size, torch.get_num_threads())
    if distributed.world_size() > 1:  # every rank must time (see above): no cache
        speedup = bf16_speedup(model, size)
    else:
        if key not in _BF16_SPEEDUPS:
            _BF16_SPEEDUPS[key] = bf16_speedup(model, size)
        speedup = _BF16_SPEEDUPS[key]
    return distributed.on_rank0(_timed_amp, speedup)


def _resumed_or_untimed_amp(s: TrainSettings, out: Path) -> str:
    """Rank 0's part of :func:`_auto_amp`: the resumed run's choice, the device's choice where
    no timing is needed, else ``"time"``."""
    import torch

    from scaledet.models.checkpoint import load_weights

    last = out / "weights" / "last.safetensors"
    if s.resume and last.is_file():
        meta = load_weights(last)[1]
        saved = (meta.get("train_settings") or meta.get("train_args") or {}).get("amp")
        if saved in ("off", "bf16", "fp16"):
            return saved
    device = resolve_device(s.device)
    dtype = resolve_amp("auto", device)
    if dtype == torch.bfloat16 and device.type == "cpu":
        return "time"
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _timed_amp(speedup: float) -> str:
    """Rank 0's decision from its bf16 speedup."""
    choice = "bf16" if speedup > 1.0 else "off"
    print(f"amp auto: bf16 autocast trains {speedup:.2f}x as fast as fp32 on this CPU"
          f" -> {'bf16' if choice == 'bf16' else 'fp32'}")
    return choice


def bf16_speedup(model, imgsz: int = 320, batch: int = 2, rounds: int = 3) -> float:
    """fp32 time / bf16-autocast time of a training forward + backward of a copy of ``model``
    (a :class:`~scaledet.models.Detector`) on ``batch`` random ``imgsz`` images with one box
    each; best of ``rounds``, the two dtypes alternating."""
    import torch

    probe = copy.deepcopy(model).train()
    gen = torch.Generator().manual_seed(0)
    if hasattr(probe, "input_size"):  # a pose model: its crops, joints all over them
        h, w = probe.input_size
        images = torch.rand(batch, 3, h, w, generator=gen)
        xy = torch.rand(probe.num_keypoints, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
        points = torch.cat([xy, torch.full((probe.num_keypoints, 1), 2.0)], 1)
        targets = [{"keypoints": points} for _ in range(batch)]
    else:
        images = torch.rand(batch, 3, imgsz, imgsz, generator=gen)
        box = torch.tensor([[0.2, 0.25, 0.6, 0.7]]) * imgsz
        targets = [{"boxes": box, "labels": torch.zeros(1, dtype=torch.long)}
                   for _ in range(batch)]

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


def _amp_name(cfg: TrainConfig) -> str:
    dtype = resolve_amp(cfg.amp, resolve_device(cfg.device))
    return "off (fp32)" if dtype is None else str(dtype).replace("torch.", "")
