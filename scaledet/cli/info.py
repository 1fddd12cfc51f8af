"""Handler of ``scaledet info``."""

from __future__ import annotations

import argparse
import sys

from scaledet.models.factory import POSE_PRESETS, PRESETS, build
from scaledet.models.info import (
    count_flops,
    count_parameters,
    count_pose_flops,
    format_info,
    format_pose_info,
    level_info,
    pose_head_text,
    side_text,
)
from scaledet.models.sizes import check_imgsz, model_stride


def info_command(args: argparse.Namespace) -> int:
    """``scaledet info [--model PRESET] [--imgsz N] [--num-classes C] [--layers]``; without
    ``--model``, a one-line summary of every preset. ``--imgsz`` is rounded up to a multiple of
    the largest stride (with a note on stderr), and the output names the size used.
    ``--weights W``: the checkpoint's model, with its trainable and total parameters. Pose
    presets (listed after the detectors) are measured on their own crop size, not ``--imgsz``."""
    if args.weights is not None:
        return _weights_info(args)
    if args.model in POSE_PRESETS:
        _pose_only_flags(args)
        print(format_pose_info(build(args.model)))
        return 0
    names = list(PRESETS) if args.model is None else [args.model]
    models = {name: build(name, num_classes=args.num_classes) for name in names}
    imgsz, note = check_imgsz(args.imgsz, max(model_stride(m) for m in models.values()))
    if note:
        print(note, file=sys.stderr)
    if args.model is not None:
        print(format_info(models[args.model], imgsz, layers=args.layers))
        return 0
    print(f"{'preset':<14} {'params (M)':>10} {'GFLOPs':>8}  strides (receptive field px) at "
          f"{imgsz} px")
    for name, model in models.items():
        levels = ", ".join(f"{side_text(lv.stride)} ({side_text(lv.receptive_field)})"
                           for lv in level_info(model, imgsz))
        print(f"{name:<14} {count_parameters(model) / 1e6:>10.3f} "
              f"{count_flops(model, imgsz) / 1e9:>8.3f}  {levels}")
    print(f"\n{'pose preset':<14} {'params (M)':>10} {'GFLOPs':>8}  per person crop (top-down "
          "pose, 17 COCO keypoints)")
    for name in POSE_PRESETS:
        model = build(name)
        h, w = model.input_size
        print(f"{name:<14} {count_parameters(model) / 1e6:>10.3f} "
              f"{count_pose_flops(model) / 1e9:>8.3f}  {h}x{w} crop, {pose_head_text(model)}")
    return 0


def _pose_only_flags(args: argparse.Namespace) -> None:
    """A pose model runs on its fixed crop size with its joints: say so for the detector-only
    flags that were changed."""
    if args.imgsz != 320 or args.num_classes != 80 or args.layers:
        print("note: --imgsz, --num-classes and --layers apply to detectors; a pose model is "
              "measured on its own crop size", file=sys.stderr)


def _weights_info(args: argparse.Namespace) -> int:
    """``scaledet info --weights W``: the model of a checkpoint (an adapted one on its base,
    adapters unmerged) and how many of its parameters train."""
    from scaledet.models.checkpoint import model_from_weights

    if args.model is not None:
        raise ValueError("--model and --weights: give one (the checkpoint names its model)")
    model, meta = model_from_weights(args.weights, "cpu", merge=False)
    if meta.get("task") == "pose":
        _pose_only_flags(args)
        print(format_pose_info(model))
    else:
        imgsz, note = check_imgsz(args.imgsz, model_stride(model))
        if note:
            print(note, file=sys.stderr)
        print(format_info(model, imgsz, layers=args.layers))
    total, trainable = count_parameters(model), count_parameters(model, trainable=True)
    adapter = meta.get("adapter")
    what = (f"adapter {adapter['kind']} rank {adapter['rank']}" if adapter else "every parameter")
    print(f"trainable   {trainable / 1e6:.3f} M of {total / 1e6:.3f} M "
          f"({100 * trainable / max(total, 1):.2f}%; {what})")
    if meta.get("base_weights"):
        ref = meta["base_weights"]
        digest = f"{ref['sha256'][:16]}..." if ref.get("sha256") else "not recorded"
        print(f"base        {ref.get('path', '?')} (SHA-256 {digest})")
    return 0
