"""scaledet.data: datasets in COCO / YOLO / VOC, validation, the synthetic dataset, transforms."""

from scaledet.data.coco import read_coco, to_coco_dict, write_coco_json
from scaledet.data.images import ImageReadError, image_size, read_image
from scaledet.data.io import available_splits, load_dataset
from scaledet.data.records import DetectionDataset, DetectionRecord, LabelProblem
from scaledet.data.synth import make_synthetic_dataset

__all__ = [
    "DetectionDataset", "DetectionRecord", "ImageReadError", "LabelProblem", "available_splits",
    "image_size", "load_dataset", "make_synthetic_dataset", "read_coco", "read_image",
    "to_coco_dict", "write_coco_json",
]
