"""``scaledet eval``: COCO bbox evaluation of a results json against a ground-truth json,
(``--iou-type keypoints``) COCO keypoint (OKS) evaluation, (``--seg``) semantic segmentation
metrics of a folder of label PNGs against another, and (``--wider``) the WIDER FACE protocol."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaledet.cli import CLIError
from scaledet.evaluation.coco import COCOEvaluator


def eval_command(args: argparse.Namespace) -> int:
    """Print the 12 COCO stats (pycocotools' layout) and the per-category AP table.

    ``args.gt``/``args.dt``: json paths; ``args.json_out``: write ``{stats, per_category}``;
    ``args.plots``: folder for precision-recall PNGs. Malformed input raises ``ValueError``
    naming the file (the CLI prints it and exits 2). With ``args.seg`` this is
    :func:`seg_eval_command`.

    Detections with a ``file_name`` (``scaledet predict`` writes one) are placed on the ground
    truth's images by file name (:func:`~scaledet.evaluation.coco.match_images`); stderr says
    how many were re-mapped that way or left out, and warns when no detection is on an
    annotated image (a mismatch that would otherwise score a silent 0).
    """
    if getattr(args, "wider", False):
        return wider_eval_command(args)
    if getattr(args, "wider_lists", None) is not None:
        raise CLIError("--wider-lists is for --wider")
    if getattr(args, "seg", False):
        if getattr(args, "iou_type", "bbox") != "bbox" or getattr(args, "sigmas", None):
            raise CLIError("--iou-type and --sigmas are for COCO json evaluation, not --seg")
        return seg_eval_command(args)
    if getattr(args, "iou_type", "bbox") == "keypoints":
        return keypoint_eval_command(args)
    if getattr(args, "sigmas", None):
        raise CLIError("--sigmas is for --iou-type keypoints")
    if args.dt is None:
        raise CLIError("--dt is required (a COCO results json), or use --seg for label PNGs")
    if getattr(args, "pred", None) is not None or getattr(args, "num_classes", None):
        raise CLIError("--pred and --num-classes are for --seg")
    result = _evaluate_and_report(COCOEvaluator(args.gt), args)
    if args.plots:
        from scaledet.plots.pr import plot_pr_curves

        paths = plot_pr_curves(result, args.plots)
        print(f"wrote {len(paths)} precision-recall plots to {args.plots}")
    return 0


def keypoint_eval_command(args: argparse.Namespace) -> int:
    """Print the 10 OKS stats (pycocotools' keypoint layout) and the per-category AP table.

    ``args.gt``/``args.dt``: json paths (results carry ``keypoints``); ``args.sigmas``: comma-
    separated per-keypoint OKS sigmas (needed for K != 17 unless the ground truth's category has
    ``sigmas``); ``args.json_out``: write ``{stats, metrics, per_category}``. Detections are
    placed on the images as for boxes (by ``file_name`` where it names one).
    """
    if args.dt is None:
        raise CLIError("--dt is required (a COCO keypoint results json)")
    if args.plots is not None:
        raise CLIError("--plots draws box precision-recall curves; not for --iou-type keypoints")
    if getattr(args, "pred", None) is not None or getattr(args, "num_classes", None):
        raise CLIError("--pred and --num-classes are for --seg")
    from scaledet.evaluation.keypoints import KeypointEvaluator

    _evaluate_and_report(KeypointEvaluator(args.gt, _sigmas(args.sigmas)), args)
    return 0


def _evaluate_and_report(evaluator, args: argparse.Namespace):
    """Add ``args.dt`` to a box or keypoint evaluator (image-matching notes on stderr), print
    the summary and per-category table, write ``args.json_out``; returns the result."""
    match = evaluator.add_results(args.dt)
    for line in match.notes(args.gt):
        print(line, file=sys.stderr)
    warning = match.warning(args.gt)
    if warning:
        print(warning, file=sys.stderr)
    result = evaluator.compute()
    print(result.summary())
    print()
    print(result.per_category_table())
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"\nwrote {out}")
    return result


def _sigmas(text: str | None) -> list[float] | None:
    """``"0.026,0.025,..."`` as floats (None stays None)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--sigmas must be comma-separated numbers, got {text!r}") from None


def seg_eval_command(args: argparse.Namespace) -> int:
    """Print the problems (missing, unreadable or mis-sized predictions), PA, MPA, MIoU, FWIoU
    and the per-class IoU table of the label PNGs in ``args.pred`` against ``args.gt``.

    ``args.json_out``: also write metrics, per-class rows and problems as json. Returns 1 when no
    image could be scored, else 0; bad folders and out-of-range pixel values raise (one line).
    """
    if args.pred is None or args.num_classes is None:
        raise CLIError("--seg needs --pred DIR and --num-classes K")
    if args.dt is not None or args.plots is not None:
        raise CLIError("--dt and --plots are for box evaluation, not --seg")
    from scaledet.evaluation.segmentation import evaluate_label_folders  # torch: load on use

    result = evaluate_label_folders(args.gt, args.pred, args.num_classes, args.ignore_index)
    print(f"{result.num_images} ground-truth label images in {args.gt}, predictions in "
          f"{args.pred}; {args.num_classes} classes, ignore index {args.ignore_index}")
    report = result.problems_report()
    if report:
        print(report)
    if result.num_scored:
        print()
        print(result.summary())
        print()
        print(result.class_table())
    else:
        print("no image could be scored")
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"\nwrote {out}")
    return 0 if result.num_scored else 1


def wider_eval_command(args: argparse.Namespace) -> int:
    """Print the WIDER FACE AP on the easy / medium / hard lists (and where the lists came
    from) of the detection files in ``args.dt`` against the ground truth ``args.gt``.

    The keep lists are the official ``wider_*_val.mat`` of ``args.wider_lists``, else of the
    ground truth's folder when it holds them, else derived by face size (said on stdout: not
    the official numbers). ``args.json_out``: write ``{easy, medium, hard, lists, num_faces}``.
    """
    if args.dt is None:
        raise CLIError("--wider needs --dt DIR (a folder of event/name.txt detection files)")
    if (getattr(args, "seg", False) or getattr(args, "plots", None) is not None
            or getattr(args, "pred", None) is not None or getattr(args, "num_classes", None)):
        raise CLIError("--seg, --plots, --pred and --num-classes are not for --wider")
    if getattr(args, "iou_type", "bbox") != "bbox" or getattr(args, "sigmas", None):
        raise CLIError("--iou-type and --sigmas are not for --wider")
    from scaledet.evaluation.wider_face import (
        derive_setting_lists,
        evaluate_wider,
        read_wider_setting_lists,
        wider_ground_truth,
    )

    gt = wider_ground_truth(args.gt)
    lists_dir = getattr(args, "wider_lists", None)
    gt_dir = Path(args.gt) if Path(args.gt).is_dir() else Path(args.gt).parent
    if lists_dir is None and (gt_dir / "wider_easy_val.mat").is_file():
        lists_dir = gt_dir
    if lists_dir is not None:
        lists = read_wider_setting_lists(lists_dir)
        source = f"official lists in {lists_dir}"
    else:
        lists = derive_setting_lists(gt)
        source = ("lists derived by face height (easy >= 50, medium >= 30, hard >= 10 px, valid "
                  "faces): not the official numbers")
    aps = evaluate_wider(gt, args.dt, lists)
    num_faces = {s: sum(len(table.get(k, ())) for k in gt) for s, table in lists.items()}
    print(f"WIDER FACE: {len(gt)} images, detections in {args.dt}; {source}")
    for setting, ap in aps.items():
        print(f"{setting.capitalize():<7} AP: {ap:.4f}   ({num_faces[setting]} faces)")
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**aps, "lists": source, "num_faces": num_faces}, indent=2)
                       + "\n")
        print(f"\nwrote {out}")
    return 0
