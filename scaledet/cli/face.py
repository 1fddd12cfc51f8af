"""Handlers of ``scaledet face train | verify`` (arguments are declared in cli/__init__.py).

``verify`` works on already aligned crops (LFW's ``NAME/NAME_NNNN.ext`` layout under
``--root``, as ``scaledet data synth --task face-identities`` writes them), or with
``--detector`` on unaligned photos in that layout (``--scenes`` of the synthetic set): each photo's
face is detected, aligned and embedded by :class:`scaledet.inference.faces.FacePipeline`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scaledet.cli import CLIError


def _embedding(args: argparse.Namespace):
    from scaledet.faces.embedding import embedding_config

    return embedding_config(args.arch, args.imgsz, args.embedding_dim)


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
    if getattr(args, "detector", None):
        return _verify_photos(args)
    if getattr(args, "pick", None) is not None or getattr(args, "conf", None) is not None:
        raise CLIError("--pick and --conf choose the face a detector finds: they need "
                       "--detector")
    import torch

    from scaledet.engine.face_fit import embedding_scorer, evaluate_pairs
    from scaledet.faces.recognizer import load_face_embedder

    embedder = load_face_embedder(args.weights).to(torch.device(args.device))
    size = embedder.cfg.input_size
    start = time.perf_counter()
    report, scores, same = evaluate_pairs(embedding_scorer(embedder), args.pairs, args.root,
                                          size, args.device, batch=args.batch)
    seconds = time.perf_counter() - start
    print(f"{len(scores)} pairs ({report.num_same} same, {report.num_different} different), "
          f"{len(report.protocol.thresholds)} folds, crops at {size} px, {seconds:.1f} s")
    _report(args, report, scores, same, {})
    return 0


def _verify_photos(args: argparse.Namespace) -> int:
    """``--detector``: detect, align and embed the face of every photo, then score the pairs;
    photos without a face are named and their pairs scored -1."""
    from scaledet.inference.faces import MIN_SCORE, FacePipeline, verify_pairs

    args.pick = args.pick or "score"
    args.conf = 0.3 if args.conf is None else args.conf
    pipeline = FacePipeline(args.detector, args.weights, device=args.device, conf=args.conf,
                            pick=args.pick)
    start = time.perf_counter()
    result = verify_pairs(pipeline, args.pairs, args.root)
    seconds = time.perf_counter() - start
    report, lat = result.report, result.latency_ms
    print(f"{len(result.scores)} pairs ({report.num_same} same, {report.num_different} "
          f"different), {len(report.protocol.thresholds)} folds, {result.images} photos: "
          f"detect ({args.pick} face, conf {args.conf}), align, embed at "
          f"{pipeline.embedder.cfg.input_size} px, {seconds:.1f} s")
    if result.failures:
        print(f"no face in {len(result.failures)} of {result.images} photos; their "
              f"{result.failed_pairs} pairs score {MIN_SCORE:g}:")
        for path, why in result.failures.items():
            print(f"  {path}: {why}")
    else:
        print(f"a face in every one of the {result.images} photos")
    fmt = {k: ("-" if v is None else f"{v:.2f}") for k, v in lat.items()}
    print(f"latency per face (median ms, batch 1, {args.device}): detect {fmt['detect']}, "
          f"align {fmt['align']}, embed {fmt['embed']}, total {fmt['total']}")
    extra = {"detector": str(args.detector), "pick": args.pick, "conf": args.conf,
             "images": result.images, "failed_images": len(result.failures),
             "failed_pairs": result.failed_pairs, "failures": result.failures,
             "failed_pair_score": MIN_SCORE, "latency_ms": lat}
    _report(args, report, result.scores, result.same, extra)
    return 0


def _report(args: argparse.Namespace, report, scores, same, extra: dict) -> None:
    """Print the protocol's numbers, write ``roc.png`` and ``verification.json`` (with
    ``extra``) to ``args.out``."""
    from scaledet.faces.verification import roc_curve
    from scaledet.plots.roc import plot_roc

    p = report.protocol
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
         "thresholds": p.thresholds.tolist(), **extra}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} and {out / 'verification.json'}")
