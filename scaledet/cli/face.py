"""Handlers of ``scaledet face train | verify`` (arguments are declared in cli/__init__.py).

``verify`` works on already aligned crops (LFW's ``NAME/NAME_NNNN.ext`` layout under
``--root``, as ``scaledet data synth --task face-identities`` writes them); detecting and aligning
faces in unaligned photos first is not wired in yet.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scaledet.cli import CLIError


def _embedding(args: argparse.Namespace):
    from scaledet.faces.embedding import EmbeddingConfig

    small = ((2, 64, 2, 2), (4, 128, 1, 2), (2, 128, 2, 1), (4, 128, 1, 2), (2, 128, 1, 1))
    if args.arch == "mobilefacenet":
        return EmbeddingConfig(input_size=args.imgsz, embedding_dim=args.embedding_dim)
    return EmbeddingConfig(input_size=args.imgsz, embedding_dim=args.embedding_dim, width=0.5,
                           stages=small, head_channels=256)


def train_command(args: argparse.Namespace) -> int:
    from scaledet.engine.face_fit import FaceTrainSettings, fit_face
    from scaledet.faces.recognizer import MarginRecipe

    if args.epochs is None and args.time is None:
        args.time = 10.0
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.exist_ok:
        raise CLIError(f"{out} is not empty; pass --exist-ok to overwrite or choose --out")
    settings = FaceTrainSettings(
        data=args.data, out=str(out), embedding=_embedding(args),
        recipe=MarginRecipe(loss=args.loss, scale=args.scale, margin=args.margin,
                            warmup=args.margin_warmup, ramp=args.margin_ramp),
        epochs=args.epochs, time_minutes=args.time, batch=args.batch,
        lr=args.lr, seed=args.seed, device=args.device, pairs=args.pairs,
        verify_root=args.verify_root)
    start = time.perf_counter()
    summary = fit_face(settings)
    metrics = summary.get("metrics") or {}
    acc = metrics.get("verification_accuracy")
    what = f"verification accuracy {acc:.4f}" if acc is not None else "no pairs to validate on"
    print(f"trained {args.loss} on {summary['identities']} identities: {summary['epoch']} "
          f"epochs, {summary['step']} steps in {time.perf_counter() - start:.0f} s; {what}; "
          f"weights {summary['weights']}")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    import torch

    from scaledet.engine.face_fit import embedding_scorer, evaluate_pairs
    from scaledet.faces.recognizer import load_face_embedder
    from scaledet.faces.verification import roc_curve
    from scaledet.plots.roc import plot_roc

    embedder = load_face_embedder(args.weights).to(torch.device(args.device))
    size = embedder.cfg.input_size
    start = time.perf_counter()
    report, scores, same = evaluate_pairs(embedding_scorer(embedder), args.pairs, args.root,
                                          size, args.device, batch=args.batch)
    seconds = time.perf_counter() - start
    p = report.protocol
    print(f"{len(scores)} pairs ({report.num_same} same, {report.num_different} different), "
          f"{len(p.thresholds)} folds, crops at {size} px, {seconds:.1f} s")
    print(f"accuracy {p.accuracy:.4f} +- {p.std:.4f}  (thresholds "
          f"{p.thresholds.min():.4f} to {p.thresholds.max():.4f})")
    print(f"ROC AUC {report.auc:.4f}")
    for t in report.tar:
        note = "" if t.resolved else (f"  (only {report.num_different} different pairs: this "
                                      "is TAR at FAR 0)")
        print(f"TAR {t.tar:.4f} @ FAR {t.far:g}  (threshold {t.threshold:.4f}){note}")
    out = Path(args.out)
    fpr, tpr, _ = roc_curve(scores, same)
    path = plot_roc({Path(args.weights).name: (fpr, tpr)}, out / "roc.png", report.tar)
    (out / "verification.json").write_text(json.dumps(
        {**report.as_dict(), "fold_accuracies": p.fold_accuracies.tolist(),
         "thresholds": p.thresholds.tolist()}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} and {out / 'verification.json'}")
    return 0
