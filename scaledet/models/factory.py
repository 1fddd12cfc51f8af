"""Named presets, and building a model from its typed config.

A preset is an architecture (a :class:`~scaledet.models.config.ModelConfig`) plus a training
:class:`Recipe`. ``build("fcos-n", num_classes=C)`` returns a
:class:`~scaledet.models.detector.Detector` whose ``config`` fully describes it;
``build_from_config(dataclasses.asdict(model.config))`` rebuilds the same model (checkpoints
store that dict next to the weights, and :func:`upgrade_config` converts the form older
checkpoints stored).

Other models need no table edit: compose ``Detector(MyBackbone(...), MyNeck(...), MyHead(...))``
directly.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scaledet.models.backbones.csp import CSPNet
from scaledet.models.backbones.dilation import dilate_last_stage
from scaledet.models.backbones.mobilenet import MobileNet
from scaledet.models.backbones.snet import SNet
from scaledet.models.config import (
    ATSSConfig,
    BackboneConfig,
    CenterNetHeadConfig,
    DiffusionDetHeadConfig,
    FCOSHeadConfig,
    ModelConfig,
    NeckConfig,
    RTDETRHeadConfig,
    SimOTAConfig,
    YOLOXHeadConfig,
    apply_overrides,
    config_from_dict,
)
from scaledet.models.detector import Detector
from scaledet.models.detr.encoder import AIFI, HybridEncoder
from scaledet.models.heads.dense import PostProcess
from scaledet.models.keypoints.config import (
    HeatmapHeadConfig,
    PoseConfig,
    RLEHeadConfig,
    is_pose_config,
    pose_config_from_dict,
)
from scaledet.models.keypoints.pose import PoseModel
from scaledet.models.necks.pan import PAFPN

BACKBONES = {"csp": CSPNet, "snet": SNet, "mobilenet": MobileNet}


@dataclass(frozen=True)
class Recipe:
    """How a preset is trained by default (``scaledet train`` options override each field).

    Attributes:
        lr: peak AdamW learning rate (after warm-up; cosine decay to the end of the run).
        warmup_iters: linear warm-up steps.
        mosaic: probability that a training sample is a 4-image mosaic.
        scale_range: random scale jitter of the training images.
    """

    lr: float = 2e-3
    warmup_iters: int = 50
    mosaic: float = 1.0
    scale_range: tuple[float, float] = (0.5, 1.5)


@dataclass(frozen=True)
class Preset:
    """A named architecture and its recipe. ``task``: ``"detect"`` (``config(num_classes)``
    is a :class:`~scaledet.models.config.ModelConfig`) or ``"pose"`` (``config(num_keypoints)``
    is a :class:`~scaledet.models.keypoints.config.PoseConfig`)."""

    name: str
    config: Callable[[int], ModelConfig | PoseConfig]
    recipe: Recipe
    summary: str
    task: str = "detect"


def _fcos_n_head(**overrides: Any) -> FCOSHeadConfig:
    """fcos-n's head: towers with shared convs and a BatchNorm per level (it folds into the
    convs at inference and suits bf16), box sides as Generalized Focal Loss distributions
    trained with distribution focal loss, GIoU weight 1."""
    return FCOSHeadConfig(**{"box_loss_weight": 1.0, "norm": "level_bn", "reg_max": 16,
                             "dfl_weight": 0.5, **overrides})


def fcos_n(num_classes: int = 80) -> ModelConfig:
    """fcos-n, the default: FCOS with VarifocalNet's IoU-aware scores on a small CSP
    backbone and a depthwise PAN + SPPF neck, SiLU activations."""
    return ModelConfig(name="fcos-n", num_classes=num_classes, act="silu", head=_fcos_n_head())


def fcos_s(num_classes: int = 80) -> ModelConfig:
    """fcos-s: fcos-n's head recipe on a wider, deeper backbone and a deeper neck."""
    return ModelConfig(name="fcos-s", num_classes=num_classes, act="silu",
                       backbone=BackboneConfig(widths=(16, 32, 64, 128, 256), depths=(1, 1, 2, 1)),
                       neck=NeckConfig(channels=64, depth=1),
                       head=_fcos_n_head(num_convs=2))


def fcos_m(num_classes: int = 80) -> ModelConfig:
    """fcos-m: the largest preset, fcos-n's head recipe on a wider backbone and a dense (not
    depthwise) neck."""
    return ModelConfig(name="fcos-m", num_classes=num_classes, act="silu",
                       backbone=BackboneConfig(widths=(24, 48, 96, 192, 384), depths=(1, 2, 2, 1)),
                       neck=NeckConfig(channels=96, depth=1, depthwise=False),
                       head=_fcos_n_head(num_convs=2))


def face_n(num_classes: int = 1) -> ModelConfig:
    """face-n: fcos-n with a keypoint branch for five face landmarks per box (RetinaFace /
    SCRFD style, :class:`~scaledet.models.heads.fcos_keypoints.KeypointFCOSHead`), levels at
    strides 8, 16, 32. ATSS with anchors of 4 strides (32 px at stride 8, SCRFD's anchor
    sizes) instead of 8: against a 64-px anchor a 10-px face has an IoU near 0.02 on every
    level, which leaves ATSS's mean + std threshold nothing to separate; smaller anchors keep
    tiny faces on the stride-8 level with a meaningful threshold. Crowds of faces need more
    than the default 100 detections per image (``max_det``, ``--max-det``). Landmark loss
    weight 0.5: the head averages the smooth-L1 over visible landmarks where SCRFD sums the 10
    coordinates of a positive at weight 0.1, so 0.5 is SCRFD's weighting."""
    return ModelConfig(name="face-n", num_classes=num_classes, act="silu",
                       head=_fcos_n_head(num_keypoints=5, keypoint_loss_weight=0.5,
                                         assigner=ATSSConfig(anchor_scale=4.0)))


def centernet_n(num_classes: int = 80) -> ModelConfig:
    """centernet-n: fcos-n's backbone, an FPN down to stride 4 (P2), CenterNet head; top-100
    heatmap peaks, no NMS."""
    return ModelConfig(name="centernet-n", num_classes=num_classes, strides=(4, 8, 16, 32),
                       neck=NeckConfig(channels=64, bottom_up=False),
                       head=CenterNetHeadConfig(),
                       postprocess=PostProcess(nms="none", topk_per_level=100))


def yolo_n(num_classes: int = 80) -> ModelConfig:
    """yolo-n: fcos-n's backbone and neck, YOLOX decoupled head trained with SimOTA."""
    return ModelConfig(name="yolo-n", num_classes=num_classes,
                       head=YOLOXHeadConfig(assigner=SimOTAConfig(center_radius=2.5)))


def rtdetr_n(num_classes: int = 80) -> ModelConfig:
    """rtdetr-n: fcos-n's backbone; a hybrid encoder (softmax self-attention with 2-D RoPE on
    the stride-32 level, then fcos-n's PAN); fcos-n's dense head proposes, its 100 best
    locations seed a 3-layer deformable decoder (width 64) trained with Hungarian matching
    and contrastive denoising. NMS-free."""
    return ModelConfig(name="rtdetr-n", num_classes=num_classes, act="silu",
                       neck=NeckConfig(encoder="softmax"),
                       head=RTDETRHeadConfig(proposals=_fcos_n_head()),
                       postprocess=PostProcess(nms="none", score_thresh=0.0,
                                               topk_per_level=1000))


def detr_n(num_classes: int = 80) -> ModelConfig:
    """detr-n: rtdetr-n's network as a plain (Deformable) DETR: learned queries and
    reference boxes, no query selection, no denoising; the baseline that shows what the
    convergence ideas of rtdetr-n buy."""
    cfg = rtdetr_n(num_classes)
    return dataclasses.replace(cfg, name="detr-n", head=RTDETRHeadConfig(
        query_selection="none", num_denoising=0))


AUX_LOSS_WEIGHT = 16.0
"""Weight of the auxiliary dense head's loss in diffusiondet-n and flowdet-n."""
TRAIN_BOXES = 50
"""Boxes per image in diffusiondet-n's and flowdet-n's training (ground truths + padding)."""


def diffusiondet_n(num_classes: int = 80) -> ModelConfig:
    """diffusiondet-n: fcos-n's backbone and neck; DiffusionDet's head (3 dynamic-interaction
    stages of width 64 on 7x7 RoIs) denoises 100 boxes (50 per image in training: the stages'
    cost grows with the boxes, and on a CPU budget more epochs beat more boxes per image),
    trained with the DDPM cosine schedule
    and the set loss under the paper's dynamic-k matching (several boxes per object: it
    learns far faster than with one-to-one Hungarian matching, see
    ``tests/models/test_diffusiondet.py``); 1 DDIM step with box renewal by default.
    In training, fcos-n's dense head on the same neck (Co-DETR's auxiliary head, not used at
    inference) gives the backbone and neck the dense head's many positives: the stages' few
    matched boxes alone train the features far more slowly. Its loss weighs 16x the stages'
    (summed over 3 stages, their set loss is several times the dense one): the features then
    learn nearly as fast as fcos-n's own, and the stages that read them follow.
    Class-wise NMS at 0.5 as the paper's (it merges the ensemble over steps and the
    duplicates the one-to-many matching trains)."""
    return ModelConfig(name="diffusiondet-n", num_classes=num_classes, act="silu",
                       head=DiffusionDetHeadConfig(matcher="dynamic_k", aux_head=_fcos_n_head(),
                                                   aux_loss_weight=AUX_LOSS_WEIGHT,
                                                   num_train_boxes=TRAIN_BOXES),
                       postprocess=PostProcess(nms_iou=0.5, score_thresh=0.0))


def flowdet_n(num_classes: int = 80) -> ModelConfig:
    """flowdet-n: diffusiondet-n's network trained on straight (rectified-flow) paths from
    noise boxes to objects, sampled with Euler steps."""
    cfg = diffusiondet_n(num_classes)
    return dataclasses.replace(cfg, name="flowdet-n", head=dataclasses.replace(
        cfg.head, objective="flow", sampler="euler"))


def pose_heatmap_n(num_keypoints: int = 17) -> PoseConfig:
    """pose-heatmap-n: fcos-n's backbone and PAN on 128 x 96 person crops, SimpleBaseline's
    heatmap head (one transposed convolution from stride 8 to 4, Gaussian targets of sigma 2
    heatmap pixels), DARK decoding."""
    return PoseConfig(name="pose-heatmap-n", num_keypoints=num_keypoints,
                      head=HeatmapHeadConfig())


def pose_rle_n(num_keypoints: int = 17) -> PoseConfig:
    """pose-rle-n: the same network with RLE's regression head: each joint's position (the
    soft-argmax of a per-joint map on the stride-8 level, ``head.readout=fc`` for RLE's linear
    readout of pooled features) and scale (a 4 x 3 pooled grid, one hidden layer of 256),
    trained with the residual log-likelihood under a RealNVP flow that inference never runs."""
    return PoseConfig(name="pose-rle-n", num_keypoints=num_keypoints,
                      head=RLEHeadConfig(readout="integral"))


POSE_RECIPE = Recipe(lr=5e-3, warmup_iters=100, mosaic=0.0, scale_range=(0.75, 1.25))
"""Top-down pose training: AdamW, random scale of the person window in ``scale_range``,
rotation and mirror (:class:`~scaledet.data.pose.PoseAugment`); no mosaic."""

POSE_PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("pose-heatmap-n", pose_heatmap_n, POSE_RECIPE, "top-down pose, heatmaps + DARK",
           task="pose"),
    Preset("pose-rle-n", pose_rle_n, POSE_RECIPE, "top-down pose, RLE regression",
           task="pose"),
)}
"""Keypoint (pose) models: ``scaledet train --model pose-heatmap-n --data KEYPOINT_DATA``."""

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("fcos-n", fcos_n, Recipe(lr=2e-2), "the default: fastest to train on a CPU"),
    Preset("fcos-s", fcos_s, Recipe(lr=2e-2), "fcos-n wider and deeper"),
    Preset("fcos-m", fcos_m, Recipe(lr=1e-2), "the most accurate, slower"),
    Preset("yolo-n", yolo_n, Recipe(lr=2e-2), "YOLOX head with SimOTA"),
    Preset("rtdetr-n", rtdetr_n, Recipe(lr=2e-2), "RT-DETR-style set prediction, no NMS"),
)}
"""The presets a user is offered (``--help``, ``scaledet info``, the README)."""

EXPERIMENTAL: dict[str, Preset] = {p.name: p for p in (
    Preset("centernet-n", centernet_n, Recipe(lr=2e-2), "CenterNet at stride 4, no NMS"),
    Preset("face-n", face_n, Recipe(lr=2e-2),
           "faces: fcos-n boxes + five landmarks per face (RetinaFace / SCRFD style)"),
    Preset("detr-n", detr_n, Recipe(lr=2e-2), "plain DETR baseline of rtdetr-n"),
    Preset("diffusiondet-n", diffusiondet_n, Recipe(lr=2e-2),
           "DiffusionDet: boxes denoised from noise (DDPM, DDIM sampling)"),
    Preset("flowdet-n", flowdet_n, Recipe(lr=2e-2),
           "diffusiondet-n trained on rectified-flow paths, Euler sampling"),
)}
"""Architectures that build and train, with recipes tuned less than the main presets'
(benchmarks/RESULTS.md has their numbers at short CPU budgets); built by name with a
warning."""


def preset(name: str) -> Preset:
    """The preset ``name`` (or an experimental one, with a warning); a ``ValueError`` listing
    the valid names otherwise."""
    if name in PRESETS:
        return PRESETS[name]
    if name in POSE_PRESETS:
        return POSE_PRESETS[name]
    if name in EXPERIMENTAL:
        warnings.warn(f"{name} is experimental: it trains, but its recipe is tuned less than "
                      "the main presets' (benchmarks/RESULTS.md has its numbers at short CPU "
                      "budgets)", stacklevel=2)
        return EXPERIMENTAL[name]
    raise ValueError(f"unknown model preset {name!r}; valid names: "
                     f"{', '.join([*PRESETS, *POSE_PRESETS])}")


def build(name: str = "fcos-n", *, num_classes: int = 80, num_keypoints: int = 17,
          **overrides: Any) -> Detector | PoseModel:
    """Build the preset ``name`` for ``num_classes`` classes (a pose preset: for
    ``num_keypoints`` joints).

    ``overrides`` replace fields of its :class:`~scaledet.models.config.ModelConfig` with the
    meaning of ``scaledet train --set``: a dict updates a nested config, dotted keys work too,
    e.g. ``build("fcos-n", num_classes=3, head={"assigner": "fcos"})``.
    """
    p = preset(name)
    cfg = p.config(num_keypoints if p.task == "pose" else num_classes)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return build_from_config(cfg)


def build_from_config(cfg: ModelConfig | PoseConfig | dict, *,
                      flip_index: list[int] | None = None) -> Detector | PoseModel:
    """Build the model a :class:`~scaledet.models.config.ModelConfig` or
    :class:`~scaledet.models.keypoints.config.PoseConfig` (or its ``asdict`` / JSON form,
    current or older) describes. ``flip_index``: a pose model's left/right joint table (for
    ``flip_test``; checkpoints store it beside the config)."""
    if is_pose_config(cfg):
        return build_pose(cfg if isinstance(cfg, PoseConfig) else pose_config_from_dict(cfg),
                          flip_index)
    if isinstance(cfg, dict):
        cfg = config_from_dict(upgrade_config(cfg))
    n = cfg.neck
    backbone, strides = _backbone(cfg)
    neck = PAFPN(in_channels=backbone.out_channels, channels=n.channels, bottom_up=n.bottom_up,
                 sppf_k=n.sppf_k, depth=n.depth, depthwise=n.depthwise, act=cfg.act,
                 strides=strides)
    if n.encoder != "none":
        aifi = AIFI(backbone.out_channels[-1], n.encoder, num_layers=n.encoder_layers,
                    num_heads=n.encoder_heads, ffn=n.encoder_ffn, num_experts=n.encoder_experts)
        neck = HybridEncoder(aifi, neck)
    head = cfg.head.build(num_classes=cfg.num_classes, in_channels=n.channels, strides=strides,
                          act=cfg.act)
    model = Detector(backbone, neck, head, postprocess=dataclasses.replace(cfg.postprocess))
    model.config = cfg
    return model


def build_pose(cfg: PoseConfig, flip_index: list[int] | None = None) -> PoseModel:
    """The :class:`~scaledet.models.keypoints.pose.PoseModel` ``cfg`` describes."""
    n = cfg.neck
    backbone, strides = _backbone(cfg)
    neck = PAFPN(in_channels=backbone.out_channels, channels=n.channels, bottom_up=n.bottom_up,
                 sppf_k=n.sppf_k, depth=n.depth, depthwise=n.depthwise, act=cfg.act,
                 strides=strides)
    head = cfg.head.build(in_channels=n.channels, num_keypoints=cfg.num_keypoints, act=cfg.act)
    extra = ({"sigma": cfg.head.sigma, "decode": cfg.head.decode, "blur": cfg.head.blur}
             if isinstance(cfg.head, HeatmapHeadConfig) else {})
    model = PoseModel(backbone, neck, head, input_size=cfg.input_size, strides=strides,
                      flip_index=flip_index, flip_test=cfg.flip_test, **extra)
    model.config = cfg
    return model


def _backbone(cfg: ModelConfig | PoseConfig):
    """The backbone and its actual output strides."""
    b = cfg.backbone
    if b.kind not in BACKBONES:
        raise ValueError(f"backbone.kind must be one of {tuple(BACKBONES)}, got {b.kind!r}")
    extra = {"depthwise": b.depthwise} if b.kind == "csp" else {}
    backbone = BACKBONES[b.kind](widths=b.widths, depths=b.depths, act=cfg.act,
                                 out_strides=cfg.strides, **extra)
    strides = dilate_last_stage(backbone) if b.dilated else tuple(cfg.strides)
    return backbone, strides


# ---- checkpoints written before the per-head configs -----------------------------------------

_FCOS_FIELDS = ("num_convs", "depthwise", "norm", "box_loss", "box_loss_weight", "vfl_alpha",
                "vfl_gamma", "prior_prob", "reg_max", "dfl_weight", "box_weighting")


def upgrade_config(data: dict) -> dict:
    """A model-config dict in today's form. Checkpoints of format 1 stored one flat head
    config for every head and assigner (and the learning rate with the model); this maps
    each field to the config that now owns it and drops the learning rate, which belongs to
    the recipe. Today's dicts are returned unchanged."""
    head = data.get("head")
    if not isinstance(head, dict) or not isinstance(head.get("assigner", {}), str):
        return data
    data = {k: v for k, v in data.items() if k != "lr"}
    kind = head.get("kind", "fcos")
    if kind == "centernet":
        new = {"kind": "centernet", "depthwise": head.get("depthwise", True),
               "gaussian_alpha": head.get("gaussian_alpha", 0.54),
               "size_loss_weight": head.get("box_loss_weight", 0.1),
               "prior_prob": head.get("prior_prob", 0.1)}
    elif kind == "yolo":
        new = {"kind": "yolox", **{k: head[k] for k in ("num_convs", "depthwise", "box_loss",
                                                        "box_loss_weight", "prior_prob")
                                   if k in head},
               "assigner": {"kind": "simota", "center_radius": head.get("center_radius", 2.5),
                            "candidate_topk": head.get("simota_topk", 10)}}
    else:
        name = head.get("assigner", "atss")
        assigner = {"atss": lambda: {"topk": head.get("atss_topk", 9)},
                    "fcos": lambda: {"center_radius": head.get("center_radius", 1.5),
                                     "bounds": head.get("fcos_bounds", [64.0, 128.0])},
                    "tal": lambda: {"topk": head.get("tal_topk", 13),
                                    "alpha": head.get("tal_alpha", 1.0),
                                    "beta": head.get("tal_beta", 6.0)}}
        if name not in assigner:
            raise ValueError(f"model config: unknown head.assigner {name!r}")
        new = {"kind": "fcos", **{k: head[k] for k in _FCOS_FIELDS if k in head},
               "assigner": {"kind": name, **assigner[name]()}}
    return {**data, "head": new}
