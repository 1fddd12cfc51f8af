"""``scaledet eval``: COCO bbox evaluation of a results json against a ground-truth json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scaledet.evaluation.coco import evaluate_coco


def eval_command(args: argparse.Namespace) -> int:
    """Print the 12 COCO stats (pycocotools' layout) and the per-category AP table.

    ``args.gt``/``args.dt``: json paths; ``args.json_out``: write ``{stats, per_category}``;
    ``args.plots``: folder for precision-recall PNGs. Malformed input raises ``ValueError``
    naming the file (the CLI prints it and exits 2).
    """
    result = evaluate_coco(args.gt, args.dt)
    print(result.summary())
    print()
    print(result.per_category_table())
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"\nwrote {out}")
    if args.plots:
        from scaledet.evaluation.plots import plot_pr_curves

        paths = plot_pr_curves(result, args.plots)
        print(f"wrote {len(paths)} precision-recall plots to {args.plots}")
    return 0
