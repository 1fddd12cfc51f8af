"""Handlers of ``scaledet data synth | check | convert`` (arguments are declared in cli.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def synth_command(args: argparse.Namespace) -> int:
    from scaledet.data.synth import make_synthetic_dataset

    start = time.perf_counter()
    if getattr(args, "real_faces", 0.0) and args.task != "faces":
        raise ValueError(f"--real-faces mixes LFW faces into --task faces, not --task "
                         f"{args.task}")
    if args.task in ("faces", "face-identities", "real-faces"):
        return _synth_faces(args, start)
    imgsz = 320 if args.imgsz is None else args.imgsz
    out = make_synthetic_dataset(args.out, n_train=args.train, n_val=args.val, seed=args.seed,
                                 imgsz=imgsz, format=args.format, task=args.task)
    what = f"{args.format}, keypoints" if args.task == "keypoints" else args.format
    print(f"wrote {args.train} train + {args.val} val images ({imgsz} px, {what}) "
          f"to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _synth_faces(args: argparse.Namespace, start: float) -> int:
    from scaledet.data.synth_faces import make_face_dataset, make_face_identities

    if args.format != "coco":
        raise ValueError(f"--task {args.task} writes COCO / image folders only, not "
                         f"--format {args.format}")
    real = getattr(args, "real_faces", 0.0)
    if args.task == "real-faces":
        from scaledet.data.real_faces import LFW_TEST, make_real_face_dataset

        imgsz = 320 if args.imgsz is None else args.imgsz
        n = getattr(args, "test", 300)
        out = make_real_face_dataset(args.out, n, seed=args.seed, imgsz=imgsz)
        print(f"wrote {n} test images of LFW faces {LFW_TEST[0]}-{LFW_TEST[-1]} ({imgsz} px, "
              f"coco, no landmarks) to {out} in {time.perf_counter() - start:.1f} s "
              f"(score: scaledet val --weights W --data {out} --split test)")
        return 0
    if args.task == "faces":
        imgsz = 320 if args.imgsz is None else args.imgsz
        if imgsz < 64:
            raise ValueError(f"--imgsz must be at least 64, got {imgsz}")
        if not 0.0 <= real <= 1.0:
            raise ValueError(f"--real-faces must be a fraction in [0, 1], got {real}")
        out = make_face_dataset(args.out, {"train": args.train, "val": args.val},
                                seed=args.seed, imgsz=imgsz, real_faces=real)
        mixed = f", {real:g} of the faces real (LFW)" if real else ""
        print(f"wrote {args.train} train + {args.val} val face images ({imgsz} px, coco, 5 "
              f"landmarks{mixed}) to {out} in {time.perf_counter() - start:.1f} s")
        return 0
    size = 112 if args.imgsz is None else args.imgsz
    scenes = getattr(args, "scenes", None)
    per_verify = getattr(args, "verify_per_identity", 10)
    out = make_face_identities(args.out, identities=args.identities,
                               per_identity=args.per_identity,
                               verify_identities=args.verify_identities,
                               verify_per_identity=per_verify,
                               pairs_per_fold=args.pairs_per_fold, seed=args.seed, size=size,
                               scenes=scenes)
    photos = ("" if scenes is None else
              f", their unaligned {scenes} px photos in {out / 'verify_scenes'}")
    print(f"wrote {args.identities} x {args.per_identity} training crops, "
          f"{args.verify_identities} x {per_verify} verification crops ({size} px, "
          f"aligned){photos} and {out / 'pairs.txt'} ({20 * args.pairs_per_fold} pairs) to "
          f"{out} in {time.perf_counter() - start:.1f} s")
    return 0


def check_command(args: argparse.Namespace) -> int:
    from scaledet.data.check import check_dataset, format_report

    report = check_dataset(args.dataset)
    print(format_report(report))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if args.plots:
        from scaledet.data.io import available_splits, load_dataset
        from scaledet.plots.labels import plot_labels

        for split in available_splits(args.dataset):
            try:
                dataset = load_dataset(args.dataset, split)
            except (ValueError, OSError) as e:  # the report above says what is wrong
                print(f"no plot of {split}: {e}")
                continue
            path = plot_labels(dataset, Path(args.plots) / f"labels_{split}.png", args.imgsz)
            print(f"wrote {path}")
    return 1 if report["num_errors"] else 0


def convert_command(args: argparse.Namespace) -> int:
    from scaledet.data.io import convert_dataset

    start = time.perf_counter()
    counts = convert_dataset(args.src, args.dst, args.to, copy_images=args.copy_images)
    splits = ", ".join(f"{split}: {n} images" for split, n in counts.items())
    how = "copied" if args.copy_images else "linked"
    print(f"converted {args.src} -> {args.dst} ({args.to}; {splits}; images {how}) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
