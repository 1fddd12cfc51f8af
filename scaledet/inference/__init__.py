"""scaledet.inference: the predictor API, test-time scale tools, export and streaming writers.

>>> import scaledet
>>> predictor = scaledet.load("best.safetensors", tta=TTA(scales=(0.75, 1, 1.5), flip=True))
>>> results = predictor(["a.jpg", "b.png"])
"""

from scaledet.inference.faces import FacePipeline
from scaledet.inference.merge import greedy_nmm, nms_merge, weighted_boxes_fusion
from scaledet.inference.pose import PoseEstimator
from scaledet.inference.predictor import Predictor
from scaledet.inference.results import Result
from scaledet.inference.slicing import Slicing
from scaledet.inference.tta import TTA
from scaledet.plots.draw import draw_detections, save_annotated

__all__ = ["TTA", "FacePipeline", "PoseEstimator", "Predictor", "Result", "Slicing", "draw_detections",
           "greedy_nmm", "nms_merge", "save_annotated", "weighted_boxes_fusion"]
