"""scaledet.models: ``Detector(backbone, neck, head)``, its parts, and named presets.

>>> from scaledet.models import build
>>> model = build("fcos-n", num_classes=3)
"""

from scaledet.models.assigners import ATSSAssigner, FCOSAssigner
from scaledet.models.backbones.csp import CSPNet
from scaledet.models.backbones.dilation import dilate_last_stage
from scaledet.models.backbones.mobilenet import MobileNet
from scaledet.models.backbones.snet import SNet
from scaledet.models.box_coders import PointDistanceCoder
from scaledet.models.config import (
    ATSSConfig,
    BackboneConfig,
    CenterNetHeadConfig,
    FCOSAssignerConfig,
    FCOSHeadConfig,
    ModelConfig,
    NeckConfig,
    SimOTAConfig,
    TALConfig,
    YOLOXHeadConfig,
    config_from_dict,
)
from scaledet.models.detector import Detector
from scaledet.models.factory import PRESETS, Preset, Recipe, build, build_from_config, preset
from scaledet.models.heads.centernet import CenterNetHead
from scaledet.models.heads.dense import NMS_METHODS, DenseHead, PostProcess, postprocess
from scaledet.models.heads.fcos import FCOSHead
from scaledet.models.heads.yolo import YOLOXHead
from scaledet.models.necks.pan import PAFPN, SPP, SPPF
from scaledet.models.simota import SimOTAAssigner
from scaledet.models.tal import TaskAlignedAssigner

__all__ = [
    "NMS_METHODS",
    "PRESETS",
    "SPP",
    "SPPF",
    "ATSSAssigner",
    "ATSSConfig",
    "BackboneConfig",
    "CenterNetHeadConfig",
    "FCOSAssignerConfig",
    "FCOSHeadConfig",
    "Preset",
    "Recipe",
    "SimOTAConfig",
    "TALConfig",
    "YOLOXHeadConfig",
    "preset",
    "CSPNet",
    "CenterNetHead",
    "DenseHead",
    "Detector",
    "FCOSAssigner",
    "FCOSHead",
    "MobileNet",
    "ModelConfig",
    "NeckConfig",
    "PAFPN",
    "PointDistanceCoder",
    "SNet",
    "SimOTAAssigner",
    "PostProcess",
    "TaskAlignedAssigner",
    "YOLOXHead",
    "build",
    "build_from_config",
    "config_from_dict",
    "dilate_last_stage",
    "postprocess",
]
