"""scaledet.evaluation: COCO bbox evaluation (pycocotools-exact, numpy), segmentation metrics,
precision-recall plots.

The COCO evaluator needs only numpy; the segmentation metrics (torch) load on first use.
"""

from scaledet.evaluation.coco import (
    METRIC_NAMES,
    STAT_NAMES,
    COCOEvalResult,
    COCOEvaluator,
    evaluate_coco,
    format_coco_stats,
    load_ground_truth,
)

__all__ = [
    "METRIC_NAMES",
    "DetectionValidator",
    "ConfusionMatrix",
    "STAT_NAMES",
    "COCOEvalResult",
    "COCOEvaluator",
    "evaluate_coco",
    "format_coco_stats",
    "load_ground_truth",
    "SegmentationMetrics",
    "metrics_from_confusion",
    "evaluate_wider",
    "landmark_nme",
]


def __getattr__(name: str):
    if name == "DetectionValidator":
        from scaledet.evaluation.validator import DetectionValidator

        return DetectionValidator
    if name == "ConfusionMatrix":
        from scaledet.evaluation.confusion import ConfusionMatrix

        return ConfusionMatrix
    if name in ("evaluate_wider", "landmark_nme"):
        from scaledet.evaluation import wider_face

        return getattr(wider_face, name)
    if name in ("SegmentationMetrics", "metrics_from_confusion"):
        from scaledet.evaluation import segmentation

        return getattr(segmentation, name)
    raise AttributeError(f"module 'scaledet.evaluation' has no attribute {name!r}")
