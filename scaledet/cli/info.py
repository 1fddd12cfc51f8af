"""Handler of ``scaledet info``."""

from __future__ import annotations

import argparse

from scaledet.models.factory import PRESETS, build
from scaledet.models.info import (
    count_flops,
    count_parameters,
    format_info,
    level_info,
    side_text,
)


def info_command(args: argparse.Namespace) -> int:
    """``scaledet info [--model PRESET] [--imgsz N] [--num-classes C] [--layers]``; without
    ``--model``, a one-line summary of every preset."""
    if args.imgsz < 32:
        raise ValueError(f"--imgsz must be >= 32, got {args.imgsz}")
    if args.model is not None:
        print(format_info(build(args.model, num_classes=args.num_classes), args.imgsz,
                          layers=args.layers))
        return 0
    print(f"{'preset':<14} {'params (M)':>10} {'GFLOPs':>8}  strides (receptive field px) at "
          f"{args.imgsz} px")
    for name in PRESETS:
        model = build(name, num_classes=args.num_classes)
        levels = ", ".join(f"{side_text(lv.stride)} ({side_text(lv.receptive_field)})"
                           for lv in level_info(model, args.imgsz))
        print(f"{name:<14} {count_parameters(model) / 1e6:>10.3f} "
              f"{count_flops(model, args.imgsz) / 1e9:>8.3f}  {levels}")
    return 0
