"""The training loop: optimizer + warm-up/cosine schedule, EMA, gradient clipping, mixed precision,
a wall-clock budget, periodic validation with the best checkpoint kept, resume, NaN guard.

The trainer knows nothing about detection: the model returns a dict of scalar losses in train mode
(``losses["loss"]`` is the total), the loader yields ``(images, targets)`` and may have
``set_epoch(e)``, and validation is a callable ``evaluate(model) -> {"mAP": ..., ...}``.

Inside a ``torch.distributed`` process group (:func:`scaledet.engine.distributed.launch`) every
rank runs the same loop on its shard of each batch with the model in ``DistributedDataParallel``;
the ranks agree on the clock and on skipping non-finite steps at every step, and only rank 0
validates and writes files (the others wait for it at the end of each epoch). Only rank 0 reads
them too: on resume it sends the state to the others, whose machines may not have the files.

Output folder::

    OUT/weights/last.safetensors (+ .json)   EMA weights after the latest epoch
    OUT/weights/best.safetensors (+ .json)   EMA weights with the best validation mAP
    OUT/weights/last.state.pt                 resume state (optimizer, EMA, scaler, RNG, counters)
    OUT/metrics.csv                           one row per epoch (mAP columns filled when evaluated)
    OUT/plots/*.png                           losses, mAP over time, PR curves, confusion matrix,
                                              labels (objects per class and size)
    OUT/plots/train_batch.jpg                 the first training batch with its boxes
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from scaledet.engine import distributed
from scaledet.engine.checkpoint import load_train_state, save_train_state
from scaledet.engine.ema import ModelEMA
from scaledet.engine.metrics_log import ROW_KEYS, MetricsLog
from scaledet.engine.optim import build_optimizer, enable_grad_checkpointing
from scaledet.engine.runtime import StopRequest, rng_state, seed_everything, set_rng_state
from scaledet.engine.schedule import WarmupCosine
from scaledet.evaluation.coco import METRIC_NAMES
from scaledet.models.adapters import checkpoint_state
from scaledet.models.checkpoint import save_weights, to_jsonable
from scaledet.ops.device import resolve_amp, resolve_device


class TrainingDiverged(RuntimeError):
    """Raised after ``max_bad_steps`` consecutive non-finite losses or gradients."""


@dataclass
class TrainConfig:
    """Everything that controls a run besides the model and data.

    Training stops at ``epochs`` or after ``time_minutes`` of wall clock, whichever comes first
    (at least one must be set). ``amp``: "off", "bf16", "fp16" (CUDA only) or "auto" (CUDA: bf16
    where supported else fp16; CPU: bf16 if the CPU has bf16 instructions, else off;
    :func:`scaledet.engine.fit.fit` times both on the model instead). ``weight_decay=None`` picks
    0.05 for AdamW and 5e-4 for SGD. ``grad_clip`` is the max global L2 norm (0 disables).
    ``eval_interval`` is in epochs (0: only at the end); periodic evaluations are also kept
    ``eval_min_minutes`` apart. ``close_mosaic``: the final fraction of the run is trained
    without mosaic (for loaders with ``set_mosaic``; 0 disables). ``progressive_imgsz``
    (pixels, 0 = off): progressive resizing, training on images of that side until
    ``progressive_until`` of the run, then at the loader's size (for loaders with
    ``set_imgsz``; smaller images early make those steps cheaper). The EMA decay ramps as
    ``ema_decay * (1 - exp(-step / ema_tau))`` (see :class:`ModelEMA`), so the window is
    ``~1 / (1 - decay)`` steps: with ``ema_tau`` 600 it is ~15 steps at step 1,500 and ~200 at
    step 3,000, so a run of a few thousand steps averages mostly its last, low-learning-rate
    steps (YOLOv5's tau 2000 suits runs ten times longer). ``ema_window`` > 0 replaces the ramp with
    the power-function EMA (:class:`ModelEMA`), which always averages the last
    ``ema_window * step`` steps.
    """

    epochs: int | None = None
    time_minutes: float | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float | None = None
    momentum: float = 0.9
    warmup_iters: int = 50
    min_lr_ratio: float = 0.05
    ema: bool = True
    ema_decay: float = 0.9998
    ema_tau: float = 600.0
    ema_window: float = 0.0
    grad_clip: float = 10.0
    amp: str = "off"
    grad_ckpt: bool = False
    eval_interval: int = 1
    eval_min_minutes: float = 0.0
    close_mosaic: float = 0.15
    progressive_imgsz: int = 0
    progressive_until: float = 0.7
    max_bad_steps: int = 20
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        if self.epochs is None and self.time_minutes is None:
            raise ValueError("set --epochs or --time (minutes)")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.time_minutes is not None and not self.time_minutes > 0:
            raise ValueError(f"--time must be > 0 minutes, got {self.time_minutes}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"--optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.amp not in ("off", "bf16", "fp16", "auto"):
            raise ValueError(f"--amp must be off, bf16, fp16 or auto, got {self.amp!r}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.progressive_imgsz and self.progressive_imgsz < 8:
            raise ValueError(f"progressive_imgsz must be 0 (off) or >= 8 pixels, got "
                             f"{self.progressive_imgsz}")
        if not 0.0 <= self.progressive_until <= 1.0:
            raise ValueError(f"progressive_until must be in [0, 1], got {self.progressive_until}")


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
             for k, v in t.items()} for t in targets]


# ---- the trainer ----------------------------------------------------------------------------

class Trainer:
    """Trains ``model`` on ``train_loader`` and writes checkpoints, metrics and plots to ``out``.

    Args:
        model: returns a dict of scalar losses in train mode, ``"loss"`` being the total.
        train_loader: iterable of ``(images (B, 3, H, W), targets list[dict])`` with ``len()``.
        cfg: the run's settings.
        out: output folder (see the module docstring for its layout).
        evaluate: ``evaluate(model) -> dict`` with at least ``"mAP"``; the model passed is the
            EMA model in eval mode. None: no validation, ``best`` is the last.
        meta: JSON-safe metadata stored in every checkpoint (model preset/config, class names...).
        metric_names: the keys of ``evaluate``'s dict that ``metrics.csv`` keeps, in order
            (None: the 12 COCO box metrics).
    """

    def __init__(self, model: nn.Module, train_loader: Iterable, cfg: TrainConfig,
                 out: str | Path, evaluate: Callable[[nn.Module], dict] | None = None,
                 meta: dict[str, Any] | None = None,
                 metric_names: Sequence[str] | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.out = Path(out)
        self.weights_dir = self.out / "weights"
        self.metrics_log = MetricsLog(self.out / "metrics.csv", metric_names or METRIC_NAMES)
        self.loader = train_loader
        self.steps_per_epoch = len(train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError("the training loader is empty (no images, or batch larger than the "
                             "dataset with drop_last)")
        self.evaluate = evaluate
        self.meta = dict(meta or {})
        seed_everything(cfg.seed)
        self.model = model.to(self.device)
        self.world, self.is_main = distributed.world_size(), distributed.is_main()
        # only rank 0 validates and saves, so only it keeps the EMA
        self.ema = (ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau, cfg.ema_window)
                    if cfg.ema and self.is_main else None)
        if cfg.grad_ckpt:  # after the EMA copy, so the copy keeps its plain forward
            enable_grad_checkpointing(self.model)
        # data parallel (scaledet.engine.distributed): every rank trains; rank 0 also validates
        # and writes checkpoints, metrics and plots
        self.train_model = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # a model whose loss leaves some parameters out (a pose head reads one neck level)
            # says so; DDP then looks for them at every step instead of waiting for their grads
            unused = bool(getattr(self.model, "has_unused_parameters", False))
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=unused)
            # A 1x1 conv's weight gradient in channels-last has strides (C, 1, C, C), its bucket
            # (C, 1, 1, 1): the same memory order, but DDP warns "may impair performance".
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
        self.optimizer = build_optimizer(self.model, cfg)
        for g in self.optimizer.param_groups:
            g["initial_lr"] = g["lr"]
        self.schedule = WarmupCosine(cfg.warmup_iters, min_ratio=cfg.min_lr_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.epoch = 0
        self.step = 0
        self.bad_steps = 0
        self.skipped_steps = 0
        self.best_map = -1.0
        self.last_eval_at = -math.inf
        self.last_metrics: dict[str, float] = {}
        self.last_eval_result: Any = None  # evaluate()'s optional "_result" (for PR plots)
        self.last_confusion: Any = None  # and "_confusion" (a ConfusionMatrix)
        self.history: list[float] = []  # total loss per step (nan where skipped)
        self._elapsed_before = 0.0
        self._t0 = time.monotonic()
        self._clock: float | None = None  # with several ranks: the elapsed time all agree on
        self._mosaic_closed = False
        self._small_imgsz = False
        self._stop = StopRequest()  # replaced by an active one during fit()
        self._stop_all = False
        self.interrupted = False
        self._epoch_batches = 0  # batches of the current epoch trained so far
        self._resume_batches = 0  # where a resumed, interrupted epoch starts

    # ---- public ----------------------------------------------------------------------------
    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def elapsed(self) -> float:
        """Seconds of training so far, including earlier sessions of a resumed run.

        With several ranks this is the slowest rank's clock at the latest step's forward pass, so
        that every rank takes the same time-based decisions (learning rate, when to stop)."""
        if self._clock is not None:
            return self._clock
        return self._elapsed_before + time.monotonic() - self._t0

    def progress(self) -> float:
        """Fraction of the run done, in [0, 1]: the larger of steps/total and time/budget."""
        p = 0.0
        if self.cfg.epochs is not None:
            p = self.step / (self.cfg.epochs * self.steps_per_epoch)
        if self.cfg.time_minutes is not None:
            p = max(p, self.elapsed() / (60.0 * self.cfg.time_minutes))
        return min(p, 1.0)

    def finished(self) -> bool:
        if self.cfg.epochs is not None and self.epoch >= self.cfg.epochs:
            return True
        return self._time_up()

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train until the epoch count or the time budget is reached; returns a summary."""
        if resume:
            self.load_state(self.weights_dir / "last.state.pt")
        self._t0 = time.monotonic()
        if self.finished():
            self._log(f"nothing to do: the run in {self.out} already finished "
                      f"(epoch {self.epoch}, {self._elapsed_before / 60:.1f} min)")
        message = ("{signal}: stopping after this step and saving a resumable state "
                   "(press Ctrl-C again to stop at once, without saving)") if self.is_main else None
        with StopRequest(message) as self._stop:
            while not self.finished():
                row = self._train_epoch()
                if self.interrupted:
                    self._save_interrupted()
                    break
                self.epoch += 1
                self._epoch_batches = 0
                self._end_of_epoch(row, final=self.finished())
                if self._stop_agreed() and not self.finished():  # stopped on an epoch's last step
                    self.interrupted = True
                    self._log(f"stopped after epoch {self.epoch}: its state is saved in "
                              f"{self.weights_dir / 'last.state.pt'}")
                    break
        if self.cfg.plots and self.is_main and not self.interrupted:
            self._write_plots()
        return {"epoch": self.epoch, "step": self.step, "elapsed_s": self.elapsed(),
                "best_map": self.best_map, "metrics": self.last_metrics,
                "skipped_steps": self.skipped_steps, "interrupted": self.interrupted,
                "epoch_batches": self._epoch_batches}

    def _log(self, msg: str) -> None:
        if self.is_main:
            tqdm.write(msg)

    # ---- one epoch ---------------------------------------------------------------------------
    def _stop_agreed(self) -> bool:
        """Whether a stop was requested (Ctrl-C / SIGTERM); with several ranks, on any rank at
        this step (agreed in the step's all-reduce, so all ranks stop at the same step)."""
        return self._stop_all if self.world > 1 else self._stop.requested

    def _save_interrupted(self) -> None:
        """Save weights and the resume state at the step reached, mid-epoch."""
        if self.is_main:
            meta = {**self.checkpoint_meta(), "interrupted": True}
            save_weights(self.weights_dir / "last.safetensors",
                         checkpoint_state(self.eval_model), meta)
            save_train_state(self.weights_dir / "last.state.pt", self.state_dict())
            self._log(f"stopped at epoch {self.epoch + 1}, batch {self._epoch_batches}/"
                      f"{self.steps_per_epoch} (step {self.step}): saved "
                      f"{self.weights_dir / 'last.state.pt'} and last.safetensors")
        distributed.barrier()

    def _time_up(self) -> bool:
        t = self.cfg.time_minutes
        return t is not None and self.elapsed() >= 60.0 * t

    def _train_epoch(self) -> dict[str, float]:
        self.model.train()
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(self.epoch)
        self._maybe_close_mosaic()
        self._maybe_resize()
        sums: dict[str, float] = {}
        n_ok, n_images, t_start = 0, 0, time.monotonic()
        total = f"/{self.cfg.epochs}" if self.cfg.epochs else ""
        start, self._resume_batches = self._resume_batches, 0
        batches: Iterable = self.loader
        if start:  # an interrupted epoch: its first batches were trained before the stop
            if hasattr(self.loader, "set_start_batch"):
                self.loader.set_start_batch(start)
            else:  # load and drop them: the rest of the epoch may differ from an uninterrupted run
                self._log(f"epoch {self.epoch + 1}: the loader cannot start at batch {start}; "
                          "skipping the batches trained before the stop")
                batches = itertools.islice(self.loader, start, None)
        self._epoch_batches = start
        bar = tqdm(batches, total=self.steps_per_epoch, initial=start,
                   desc=f"epoch {self.epoch + 1}{total}",
                   disable=not (self.cfg.progress and self.is_main), mininterval=1.0,
                   dynamic_ncols=True)
        for images, targets in bar:
            if self.step == 0 and self.cfg.plots and self.is_main:
                self._plot_first_batch(images, targets)
            losses = self._train_step(images, targets)
            n_images += len(images) * self.world  # images/s of the whole run, all ranks
            if losses is not None:
                n_ok += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
            ips = n_images / max(time.monotonic() - t_start, 1e-9)
            bar.set_postfix_str(self._postfix(sums, n_ok, ips), refresh=False)
            self._epoch_batches += 1
            if self._stop_agreed() and self._epoch_batches < self.steps_per_epoch:
                self.interrupted = True  # mid-epoch; on its last step the epoch ends first
                break
            if self._time_up():
                break
        bar.close()
        row = {k: v / max(n_ok, 1) for k, v in sums.items()}
        row["images_per_s"] = n_images / max(time.monotonic() - t_start, 1e-9)
        return row

    def _epoch_end_progress(self) -> float:
        """Estimated progress at the end of the coming epoch (time: last epoch's duration)."""
        p = 0.0
        if self.cfg.epochs is not None:
            p = (self.epoch + 1) / self.cfg.epochs
        if self.cfg.time_minutes is not None:
            elapsed = self.elapsed()
            per_epoch = elapsed / self.epoch if self.epoch else 0.0
            p = max(p, (elapsed + per_epoch) / (60.0 * self.cfg.time_minutes))
        return p

    def _maybe_close_mosaic(self) -> None:
        """Train the final ``close_mosaic`` fraction on un-mosaicked images (YOLOX, YOLOv8)."""
        if self.cfg.close_mosaic <= 0 or self._mosaic_closed or not hasattr(self.loader,
                                                                            "set_mosaic"):
            return
        if self._epoch_end_progress() > 1.0 - self.cfg.close_mosaic:
            self.loader.set_mosaic(0.0)
            self._mosaic_closed = True
            self._log(f"epoch {self.epoch + 1}: mosaic off for the rest of the run")

    def _maybe_resize(self) -> None:
        """Progressive resizing: ``progressive_imgsz`` images until ``progressive_until`` of the
        run, then the loader's own size (for loaders with ``set_imgsz``)."""
        if not self.cfg.progressive_imgsz or not hasattr(self.loader, "set_imgsz"):
            return
        small = self._epoch_end_progress() <= self.cfg.progressive_until
        if small != self._small_imgsz:
            self.loader.set_imgsz(self.cfg.progressive_imgsz if small else None)
            self._small_imgsz = small
            if not small:
                self._log(f"epoch {self.epoch + 1}: full-size images for the rest of the run")

    def _postfix(self, sums: dict[str, float], n: int, ips: float) -> str:
        terms = " ".join(f"{k}={v / max(n, 1):.3f}" for k, v in sums.items())
        return f"{terms} lr={self.optimizer.param_groups[0]['lr']:.2e} {ips:.1f}img/s"

    def _set_lr(self) -> None:
        f = self.schedule.lr_factor(self.step, self.progress())
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def _train_step(self, images: torch.Tensor, targets: list[dict]) -> dict[str, float] | None:
        """One optimizer step; returns the loss terms as floats, or None if the step was skipped.

        With several ranks the loss terms are rank 0's (its share of the batch)."""
        images = images.to(self.device, non_blocking=True)
        targets = _to_device(targets, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            losses = self.train_model(images, targets)
        loss = losses["loss"]
        bad = not torch.isfinite(loss)
        if self.world > 1:  # one all-reduce per step: the ranks agree on the clock (lr, when to
            self._clock = None  # stop) and skip together, or the gradient all-reduce would hang
            self._clock, worst, stop = distributed.all_reduce_max(
                [self.elapsed(), float(bad), float(self._stop.requested)], self.device)
            bad, self._stop_all = worst > 0, stop > 0
        self._set_lr()
        self.step += 1
        if bad:
            return self._skip_step("loss")
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            if not self.scaler.is_enabled() and not torch.isfinite(norm):
                return self._skip_step("gradient")
        self.scaler.step(self.optimizer)  # with fp16 this itself skips steps with inf gradients
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.bad_steps = 0
        out = {k: float(v.detach()) for k, v in losses.items()}
        self.history.append(out["loss"])
        return out

    def _skip_step(self, what: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_steps += 1
        self.history.append(float("nan"))
        self._log(f"step {self.step}: non-finite {what}, step skipped "
                   f"({self.bad_steps} in a row)")
        if self.bad_steps >= self.cfg.max_bad_steps:
            raise TrainingDiverged(
                f"training stopped at step {self.step}: {self.bad_steps} consecutive steps with "
                f"a non-finite {what}; lower the learning rate (--lr) or check the data")
        return None

    # ---- end of epoch: validate, log, checkpoint ---------------------------------------------
    def _should_eval(self, final: bool) -> bool:
        if self.evaluate is None:
            return False
        if final:
            return True
        every = self.cfg.eval_interval
        if every <= 0 or self.epoch % every:
            return False
        return self.elapsed() - self.last_eval_at >= 60.0 * self.cfg.eval_min_minutes

    def _end_of_epoch(self, row: dict[str, float], final: bool) -> None:
        if self.is_main:
            self._validate_and_save(row, final)
        distributed.barrier()

    def _validate_and_save(self, row: dict[str, float], final: bool) -> None:
        row = {"epoch": self.epoch, "step": self.step, "elapsed_s": round(self.elapsed(), 2),
               "lr": self.optimizer.param_groups[0]["lr"], **row}
        loss_keys = [k for k in row if k not in ROW_KEYS]
        metrics = self._run_eval() if self._should_eval(final) else {}
        row.update(metrics)
        self.metrics_log.append(row, loss_keys)
        improved = bool(metrics) and metrics["mAP"] > self.best_map
        if improved:
            self.best_map = float(metrics["mAP"])
        self._save(best=improved or (self.evaluate is None))
        self._print_epoch(row, metrics)

    def _run_eval(self) -> dict[str, float]:
        model = self.eval_model
        was_training = model.training
        model.eval()
        with torch.no_grad(), distributed.all_cores():  # the other ranks wait in a barrier
            metrics = self.evaluate(model)
        model.train(was_training)
        if "mAP" not in metrics:
            raise ValueError("evaluate(model) must return a dict with an 'mAP' entry")
        self.last_eval_at = self.elapsed()
        self.last_eval_result = metrics.get("_result")
        self.last_confusion = metrics.get("_confusion")
        self.last_metrics = {k: v for k, v in metrics.items() if not k.startswith("_")}
        return self.last_metrics

    def _print_epoch(self, row: dict[str, Any], metrics: dict[str, float]) -> None:
        msg = f"epoch {self.epoch}: loss {row.get('loss', float('nan')):.4f}"
        if metrics:
            msg += (f"  mAP {metrics['mAP']:.4f}  mAP50 {metrics.get('mAP50', float('nan')):.4f}"
                    f"  (best {self.best_map:.4f})")
        msg += f"  {row['images_per_s']:.1f} img/s  {row['elapsed_s'] / 60:.1f} min"
        tqdm.write(msg)

    # ---- checkpoints ---------------------------------------------------------------------------
    def checkpoint_meta(self) -> dict[str, Any]:
        return {**self.meta, "epoch": self.epoch, "step": self.step,
                "best_map": self.best_map, "metrics": self.last_metrics,
                "train_config": asdict(self.cfg)}

    def _save(self, best: bool) -> None:
        meta = self.checkpoint_meta()
        weights = checkpoint_state(self.eval_model)  # an adapted model: what it trains
        save_weights(self.weights_dir / "last.safetensors", weights, meta)
        if best:
            save_weights(self.weights_dir / "best.safetensors", weights, meta)
        save_train_state(self.weights_dir / "last.state.pt", self.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """Everything ``--resume`` needs, as tensors/numbers/strings/lists/dicts only."""
        return {"model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "step": self.step, "elapsed_s": self.elapsed(),
                "best_map": self.best_map, "last_eval_at": self.last_eval_at,
                "last_metrics": self.last_metrics, "skipped_steps": self.skipped_steps,
                "history": list(self.history), "rng": rng_state(),
                "epoch_batches": self._epoch_batches,
                "config": to_jsonable(asdict(self.cfg))}

    def load_state(self, path: str | Path) -> None:
        """Continue from the resume state in ``path``. With several ranks, rank 0 reads it and
        sends it to the others: every rank continues from the same state, also where their
        machines do not share a filesystem."""
        state = distributed.on_rank0(load_train_state, path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self._elapsed_before = float(state["elapsed_s"])
        self.best_map = float(state["best_map"])
        self.last_eval_at = float(state["last_eval_at"])
        self.last_metrics = dict(state["last_metrics"])
        self.skipped_steps = int(state["skipped_steps"])
        self.history = list(state["history"])
        self._resume_batches = int(state.get("epoch_batches", 0))
        set_rng_state(state["rng"])
        if self.is_main:
            self.metrics_log.truncate(self.epoch)
        part = f" + {self._resume_batches} batches" if self._resume_batches else ""
        self._log(f"resumed from {path}: epoch {self.epoch}{part}, step {self.step}, "
                   f"{self._elapsed_before / 60:.1f} min done")

    def _plot_first_batch(self, images: torch.Tensor, targets: list[dict]) -> None:
        from scaledet.plots.draw import plot_train_batch

        names = self.meta.get("class_names") or []
        try:
            plot_train_batch(images, targets, list(names), self.out / "plots" / "train_batch.jpg",
                             skeleton=self.meta.get("skeleton"),
                             keypoint_names=self.meta.get("keypoint_names"))
        except Exception as e:  # a plot must never stop a training
            tqdm.write(f"warning: could not write plots/train_batch.jpg: {e}")

    def _write_plots(self) -> None:
        from scaledet.plots.confusion import plot_confusion
        from scaledet.plots.pr import plot_pr
        from scaledet.plots.training import plot_metrics

        try:
            plot_metrics(self.out / "metrics.csv", self.out / "plots")
            if self.last_eval_result is not None:
                plot_pr(self.last_eval_result, self.out / "plots")
            if self.last_confusion is not None:
                plot_confusion(self.last_confusion, self.out / "plots" / "confusion_matrix.png",
                               self.meta.get("class_names"))
        except Exception as e:  # a plotting problem must not lose a finished run
            tqdm.write(f"warning: could not write plots: {e}")
