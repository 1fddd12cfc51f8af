"""Fixed-step training of a preset with config overrides, scored by COCO mAP: the loop behind
the fcos-n recipe sweep (lr, box-loss weight, assigner) quoted in ``scaledet/models/factory.py``.

    python benchmarks/bench_recipe.py --data data/synth --steps 400 \\
        --set '{"lr": 2e-2, "head": {"box_loss_weight": 0.25}}'

Plain AdamW (weight decay 0.05 on every parameter), one-cycle schedule (10% warm-up, cosine to
0), gradient clipping at 10, batch 16, the data loader's default augmentation, one worker;
evaluation on the val split with score threshold 0.001. Deliberately not the engine's trainer
(time-based schedule, EMA), so a sweep measures the model and its loss at a fixed number of
steps, independent of the machine's speed. ``--set`` takes ``build`` keyword overrides as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from scaledet.data.io import load_dataset
from scaledet.data.loader import build_dataloader
from scaledet.evaluation.validator import DetectionValidator
from scaledet.models import PRESETS, build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="dataset with train and val splits")
    p.add_argument("--model", default="fcos-n")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--set", default="{}", help="JSON dict of build() overrides")
    p.add_argument("--lr", type=float, default=None, help="peak lr (default: the preset's recipe)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, val = load_dataset(args.data, "train"), load_dataset(args.data, "val")
    model = build(args.model, num_classes=train.num_classes, **json.loads(args.set))
    lr = args.lr or PRESETS[args.model].recipe.lr
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr,
                                                total_steps=args.steps, pct_start=0.1)
    loader = build_dataloader(train, imgsz=320, batch_size=16, train=True, workers=1,
                              seed=args.seed)
    model.train()
    step, start = 0, time.time()
    while step < args.steps:
        for images, targets in loader:
            losses = model(images, targets)
            opt.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(step, f"{time.time() - start:.0f}s",
                      {k: round(v.item(), 3) for k, v in losses.items()}, flush=True)
            if step >= args.steps:
                break
    model.score_thresh = 0.001
    val_loader = build_dataloader(val, imgsz=320, batch_size=16, train=False, workers=0)
    stats = DetectionValidator(val_loader, val).run(model).stats
    print(f"{args.model} {args.set} steps {args.steps}: mAP50-95 {stats[0]:.4f} "
          f"mAP50 {stats[1]:.4f} mAP75 {stats[2]:.4f} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
