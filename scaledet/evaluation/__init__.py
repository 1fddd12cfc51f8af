"""scaledet.evaluation: COCO bbox evaluation (pycocotools-exact, numpy), segmentation metrics,
precision-recall plots."""

from scaledet.evaluation.coco import (
    STAT_NAMES,
    COCOEvalResult,
    COCOEvaluator,
    evaluate_coco,
    format_coco_stats,
    load_ground_truth,
)

__all__ = [
    "STAT_NAMES",
    "COCOEvalResult",
    "COCOEvaluator",
    "evaluate_coco",
    "format_coco_stats",
    "load_ground_truth",
]
