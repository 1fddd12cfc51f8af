"""Handlers of ``scaledet predict`` and ``scaledet export``: command-line options to a
:class:`~scaledet.inference.predictor.Predictor` and :func:`~scaledet.inference.stream.predict_stream`,
or to :func:`~scaledet.inference.export.export_onnx`."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaledet.data.images import collect_images
from scaledet.inference.predictor import Predictor
from scaledet.inference.stream import predict_stream


def predict_command(args: argparse.Namespace) -> int:
    files = collect_images(args.source)
    predictor = predictor_from_args(args)
    out = Path(args.out)
    output = Path(args.parquet or args.json_out or out / "predictions.json")
    summary = predict_stream(predictor, files, output, parquet=bool(args.parquet),
                             resume=args.resume, errors=out / "errors.txt",
                             images_dir=None if args.no_images else out)
    print(f"{summary['images']} images ({summary['skipped']} already done, {summary['errors']} "
          f"unreadable), {summary['boxes']} detections (conf >= {predictor.conf:g}), "
          f"{summary['images_per_s']:.1f} images/s")
    print(f"{'Parquet dataset' if args.parquet else 'COCO results'}: {output}")
    if summary["errors"]:
        print(f"unreadable images listed in {out / 'errors.txt'}")
    return 0


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    """A :class:`Predictor` with the ``--tta`` / ``--slice`` / ``--nms`` ... options."""
    from scaledet.inference.slicing import Slicing
    from scaledet.inference.tta import TTA

    tta = slicing = None
    merge = getattr(args, "merge", None)
    if args.tta and args.slice:
        raise ValueError("--tta and --slice cannot be combined; choose one")
    if args.tta:
        if merge not in (None, "wbf", "nms"):
            raise ValueError(f"--merge {merge}: TTA merges with 'wbf' or 'nms'")
        tta = TTA.parse(args.tta, merge=merge or "wbf")
    elif args.slice:
        if merge not in (None, "nmm", "nms"):
            raise ValueError(f"--merge {merge}: slicing merges with 'nmm' or 'nms'")
        slicing = Slicing(tile=args.slice, overlap=args.overlap, full_image=args.full,
                          merge=merge or "nmm")
    elif merge is not None:
        raise ValueError("--merge only applies with --tta or --slice")
    return Predictor(args.weights, device=args.device, conf=args.conf, imgsz=args.imgsz,
                     batch_size=args.batch, nms=args.nms, iou=args.iou, max_det=args.max_det,
                     tta=tta, slicing=slicing)


def export_command(args: argparse.Namespace) -> int:
    """``scaledet export --weights W --format onnx [--dynamic] [--nms] ...``"""
    from scaledet.inference.export import export_onnx, report_parity
    from scaledet.models.checkpoint import model_from_weights

    if args.format != "onnx":
        raise ValueError(f"--format: only 'onnx' is supported, got {args.format!r}")
    model, meta = model_from_weights(args.weights, "cpu")
    model.fuse()  # BatchNorm folded into the convs: a smaller, faster graph
    imgsz = int(args.imgsz or meta.get("imgsz", 320))
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(".onnx")
    pp = model.postprocess
    if args.nms and pp.nms != "hard":
        print(f"note: the checkpoint uses {pp.nms} NMS; the ONNX graph uses hard NMS")
    export_onnx(model, out, imgsz=imgsz, batch=args.batch, dynamic=args.dynamic, nms=args.nms,
                opset=args.opset, conf=args.conf if args.conf is not None else pp.score_thresh,
                iou=args.iou if args.iou is not None else pp.nms_iou, max_det=pp.max_det,
                metadata={"class_names": meta.get("class_names", []),
                          "category_ids": meta.get("category_ids", []),
                          "weights": Path(args.weights).name})
    print(f"wrote {out} (opset {args.opset}, {'dynamic' if args.dynamic else 'fixed'} shape "
          f"{args.batch}x3x{imgsz}x{imgsz}{', with NMS' if args.nms else ''})")
    if not args.nms:
        report_parity(model, out, imgsz, args.batch)
    return 0
