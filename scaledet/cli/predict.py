"""Handlers of ``scaledet predict`` and ``scaledet export``: command-line options to a
:class:`~scaledet.inference.predictor.Predictor` and :func:`~scaledet.inference.stream.predict_stream`,
or to :func:`~scaledet.inference.export.export_onnx`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from scaledet.data.images import collect_images
from scaledet.inference.predictor import Predictor
from scaledet.inference.stream import predict_stream
from scaledet.models.options import describe_inference
from scaledet.models.sizes import check_imgsz, model_stride


def predict_command(args: argparse.Namespace) -> int:
    """Predict over ``args.source`` into the COCO-results json (``--json``, default
    ``OUT/predictions.json`` unless ``--parquet`` is given), the Parquet dataset (``--parquet``)
    or both, and annotated images in ``OUT``; then print every place written to. With
    ``--engine ray``, on a Ray cluster into the Parquet dataset (:func:`ray_predict_command`)."""
    if args.engine == "ray":
        return ray_predict_command(args)
    if args.address is not None or args.workers is not None:
        raise ValueError("--address and --workers apply to --engine ray")
    files = collect_images(args.source)
    out = Path(args.out)
    parquet = Path(args.parquet) if args.parquet else None
    json_out = Path(args.json_out) if args.json_out else None
    if json_out is None and parquet is None:
        json_out = out / "predictions.json"
    image_ids = None
    if getattr(args, "gt", None):
        image_ids, note = ground_truth_ids(files, args.gt)
        print(note)
    predictor = predictor_from_args(args)
    note = describe_inference(predictor.model)
    if note:
        print(f"inference: {note}")
    images_dir = None if args.no_images else out
    summary = predict_stream(predictor, files, json_out, parquet=parquet, resume=args.resume,
                             errors=out / "errors.txt", images_dir=images_dir,
                             image_ids=image_ids)
    poses = f", {summary['poses']} with keypoints" if predictor.pose is not None else ""
    print(f"{summary['images']} images ({summary['skipped']} already done, {summary['errors']} "
          f"unreadable), {summary['boxes']} detections (conf >= {predictor.conf:g}){poses}, "
          f"{summary['images_per_s']:.1f} images/s")
    if images_dir is not None:
        print(f"annotated images: {images_dir}{os.sep} ({summary['annotated']} written)")
    if json_out is not None:
        print(f"COCO results: {json_out}")
    if parquet is not None:
        print(f"Parquet dataset: {parquet}{os.sep}")
    if summary["errors_file"] is not None:
        print(f"unreadable images listed in {summary['errors_file']}")
    return 0


def ray_predict_command(args: argparse.Namespace) -> int:
    """``scaledet predict --engine ray``: the sources (images, folders, .txt / .parquet
    listings) on a Ray cluster into the ``--parquet`` dataset, unreadable images listed in
    ``OUT/errors.txt`` (:func:`scaledet.integrations.ray.predict`)."""
    from scaledet.integrations.ray import import_ray, predict

    import_ray()  # the install hint comes before anything else is checked or loaded
    if not args.parquet:
        raise ValueError("--engine ray writes a Parquet dataset: give --parquet OUT.parquet")
    if args.json_out or getattr(args, "gt", None):
        raise ValueError("--json and --gt apply to the local engine; --engine ray writes "
                         "--parquet only")
    options = predictor_options(args)
    summary = predict(args.source, args.weights, args.parquet,
                      errors=Path(args.out) / "errors.txt", address=args.address,
                      workers=args.workers, resume=args.resume, **options)
    print(f"{summary['images']} images ({summary['skipped']} already done, {summary['errors']} "
          f"unreadable), {summary['boxes']} detections (conf >= {args.conf:g}), "
          f"{summary['images_per_s']:.1f} images/s on {summary['workers']} Ray workers")
    print(f"Parquet dataset: {args.parquet}{os.sep}")
    if summary["errors_file"] is not None:
        print(f"unreadable images listed in {summary['errors_file']}")
    return 0


def pose_export_command(args: argparse.Namespace, model: Any, meta: dict[str, Any]) -> int:
    """``scaledet export --weights POSE``: the pose model as ONNX, ``crops (B, 3, H, W) ->
    keypoints (B, K, 2), scores (B, K)`` with a free batch
    (:func:`~scaledet.inference.export.export_pose_onnx`), checked with onnxruntime on two
    batch sizes. Returns 1 when the outputs differ."""
    from scaledet.inference.export import check_pose_parity, export_pose_onnx

    if args.nms or args.conf is not None or args.iou is not None:
        raise ValueError(f"--nms / --conf / --iou: {args.weights} is a pose model (joints of "
                         "person crops); there is nothing to suppress")
    h, w = model.input_size
    if args.imgsz is not None and args.imgsz != h:
        raise ValueError(f"--imgsz {args.imgsz}: {args.weights} is a pose model trained on "
                         f"{h}x{w} crops; its input size is fixed (leave --imgsz out)")
    model.fuse()
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(".onnx")
    export_pose_onnx(model, out, batch=args.batch, opset=args.opset,
                     metadata={"keypoint_names": meta.get("keypoint_names") or [],
                               "skeleton": meta.get("skeleton") or [],
                               "class_names": meta.get("class_names", []),
                               "category_ids": meta.get("category_ids", []),
                               "weights": Path(args.weights).name})
    where = "" if args.out else " (beside the weights; --out to choose)"
    print(f"wrote {out.resolve()}{where}: opset {args.opset}, pose model, crops Bx3x{h}x{w} "
          f"(dynamic batch) -> keypoints Bx{model.num_keypoints}x2, scores "
          f"Bx{model.num_keypoints}")
    checks = check_pose_parity(model, out, batches=tuple(sorted({args.batch, args.batch + 1})))
    return _report_parity(checks)


def _report_parity(checks) -> int:
    """Print the ONNX-vs-PyTorch checks; exit status 1 when one of them failed."""
    for check in checks:
        print(check.text)
    if not all(check.ok for check in checks):
        print("warning: the ONNX model's outputs differ from PyTorch's (MISMATCH above)",
              file=sys.stderr)
        return 1
    return 0


def ground_truth_ids(files: list[Path], gt_path: str) -> tuple[list[int], str]:
    """The image id of each file in the COCO ground truth ``gt_path``, matched by file name
    (:func:`~scaledet.evaluation.coco.match_file_names`); files it does not hold get ids above
    its largest. Also a line saying how many matched."""
    from scaledet.evaluation.coco import load_ground_truth, match_file_names

    gt = load_ground_truth(gt_path)
    found, _ = match_file_names([str(f) for f in files], gt)
    first_extra = next_id = int(gt.image_ids.max()) + 1 if len(gt.image_ids) else 1
    ids: list[int] = []
    used: set[int] = set()
    for image_id in found.tolist():
        if image_id < 0 or image_id in used:  # not in it, ambiguous, or a second file of it
            image_id, next_id = next_id, next_id + 1
        used.add(image_id)
        ids.append(image_id)
    extra = next_id - first_extra
    if extra == len(files):
        raise ValueError(f"--gt {gt_path}: none of the {len(files)} images is one of its images "
                         "by file name")
    note = (f"image ids of {gt_path}: {len(files) - extra} of {len(files)} images matched by "
            "file name")
    if extra:
        note += f"; the other {extra} are not in it, numbered from {first_extra}"
    return ids, note


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    """A :class:`Predictor` with the ``--tta`` / ``--slice`` / ``--nms`` ... options."""
    return Predictor(args.weights, **predictor_options(args))


def predictor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Predictor` keywords of ``--device`` / ``--conf`` / ``--tta`` / ``--slice`` /
    ``--nms`` / ``--set`` ... (everything but the weights), as every engine builds its
    predictors."""
    from scaledet.cli.train import parse_assignments
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
    pose_weights = getattr(args, "pose_weights", None)
    pose_classes = getattr(args, "pose_classes", None)
    if pose_classes and not pose_weights:
        raise ValueError("--pose-classes applies with --pose-weights")
    options = {"device": args.device, "conf": args.conf, "imgsz": args.imgsz,
               "batch_size": args.batch, "nms": args.nms, "iou": args.iou,
               "max_det": args.max_det, "tta": tta, "slicing": slicing}
    model_options = parse_assignments(getattr(args, "set", None), "--set")
    if model_options:
        options["model_options"] = model_options
    if pose_weights:
        options["pose_weights"] = pose_weights
        if pose_classes:
            options["pose_classes"] = [c.strip() for c in pose_classes.split(",") if c.strip()]
    return options


def export_command(args: argparse.Namespace) -> int:
    """``scaledet export --weights W --format onnx [--dynamic] [--nms] ...``: write the ONNX
    file (default: beside the weights), print where it went and how its outputs compare with
    PyTorch's for this variant (:func:`~scaledet.inference.export.check_parity`). Returns 1
    when they differ. An adapted checkpoint is loaded onto its base with LoRA merged into
    plain weights. ``--format safetensors``: one standalone checkpoint instead
    (:func:`~scaledet.models.checkpoint.save_standalone`; default ``W.standalone.safetensors``).
    A pose checkpoint: :func:`pose_export_command`."""

    from scaledet.inference.export import check_parity, export_onnx, import_onnx
    from scaledet.models.checkpoint import model_from_weights, save_standalone

    if args.format == "safetensors":
        out = Path(args.out) if args.out else Path(args.weights).with_suffix(
            ".standalone.safetensors")
        print(f"wrote {save_standalone(args.weights, out).resolve()} (standalone)")
        return 0
    if args.format != "onnx":
        raise ValueError(f"--format: only 'onnx' and 'safetensors' are supported, got "
                         f"{args.format!r}")
    import_onnx()  # a missing package is said before anything is loaded
    model, meta = model_from_weights(args.weights, "cpu")
    if meta.get("task") == "pose":
        return pose_export_command(args, model, meta)
    model.fuse()  # BatchNorm folded into the convs: a smaller, faster graph
    imgsz, note = check_imgsz(meta.get("imgsz", 320) if args.imgsz is None else args.imgsz,
                              model_stride(model))
    if note:
        print(note, file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(".onnx")
    pp = model.postprocess
    if args.nms and pp.nms != "hard":
        print(f"note: the checkpoint uses {pp.nms} NMS; the ONNX graph uses hard NMS")
    conf = args.conf if args.conf is not None else pp.score_thresh
    iou = args.iou if args.iou is not None else pp.nms_iou
    export_onnx(model, out, imgsz=imgsz, batch=args.batch, dynamic=args.dynamic, nms=args.nms,
                opset=args.opset, conf=conf, iou=iou, max_det=pp.max_det,
                metadata={"class_names": meta.get("class_names", []),
                          "category_ids": meta.get("category_ids", []),
                          "weights": Path(args.weights).name})
    where = "" if args.out else " (beside the weights; --out to choose)"
    print(f"wrote {out.resolve()}{where}: opset {args.opset}, "
          f"{'dynamic' if args.dynamic else 'fixed'} shape {args.batch}x3x{imgsz}x{imgsz}"
          f"{', with NMS' if args.nms else ''}")
    checks = check_parity(model, out, imgsz=imgsz, batch=args.batch, dynamic=args.dynamic,
                          nms=args.nms, conf=conf, iou=iou, max_det=pp.max_det)
    return _report_parity(checks)
