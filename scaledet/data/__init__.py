"""scaledet.data: datasets in COCO / YOLO / VOC, validation, the synthetic dataset, transforms."""

from scaledet.data.check import check_dataset
from scaledet.data.coco import read_coco, to_coco_dict, write_coco_json
from scaledet.data.images import ImageReadError, image_size, read_image
from scaledet.data.io import available_splits, convert_dataset, load_dataset
from scaledet.data.records import DetectionDataset, DetectionRecord, LabelProblem
from scaledet.data.synth import make_synthetic_dataset
from scaledet.data.voc import read_voc
from scaledet.data.wider_face import FaceDataset, read_retinaface, read_wider_face
from scaledet.data.yolo import read_yolo, write_yolo_labels, write_yolo_yaml

__all__ = [
    "DetectionDataset", "DetectionRecord", "FaceDataset", "ImageReadError", "LabelProblem",
    "available_splits", "check_dataset", "convert_dataset", "image_size", "load_dataset",
    "make_synthetic_dataset", "read_coco", "read_image", "read_retinaface", "read_voc",
    "read_wider_face", "read_yolo", "to_coco_dict", "write_coco_json", "write_yolo_labels",
    "write_yolo_yaml",
]
