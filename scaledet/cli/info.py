"""Handler of ``scaledet info``."""

from __future__ import annotations

import argparse
import sys

from scaledet.models.factory import PRESETS, build
from scaledet.models.info import (
    count_flops,
    count_parameters,
    format_info,
    level_info,
    side_text,
)
from scaledet.models.sizes import check_imgsz, model_stride


def info_command(args: argparse.Namespace) -> int:
    """``scaledet info [--model PRESET] [--imgsz N] [--num-classes C] [--layers]``; without
    ``--model``, a one-line summary of every preset. ``--imgsz`` is rounded up to a multiple of
    the largest stride (with a note on stderr), and the output names the size used.
    ``--weights W``: the checkpoint's model, with its trainable and total parameters."""
    if args.weights is not None:
        return _weights_info(args)
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
    return 0


def _weights_info(args: argparse.Namespace) -> int:
    """``scaledet info --weights W``: the model of a checkpoint (an adapted one on its base,
    adapters unmerged) and how many of its parameters train."""
    from scaledet.models.checkpoint import model_from_weights

    if args.model is not None:
        raise ValueError("--model and --weights: give one (the checkpoint names its model)")
    model, meta = model_from_weights(args.weights, "cpu", merge=False)
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
