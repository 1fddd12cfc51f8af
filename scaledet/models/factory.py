"""Named presets and the typed config they are built from.

``build("fcos-n", num_classes=C)`` returns a :class:`~scaledet.models.detector.Detector`
whose ``config`` (a :class:`ModelConfig`) fully describes the architecture;
``dataclasses.asdict(model.config)`` is JSON-safe and ``build_from_config(that_dict)`` rebuilds
the same model (checkpoints store it next to the weights).

Presets: ``fcos-n/s/m`` (FCOS + VarifocalNet), ``centernet-n`` (CenterNet at stride 4) and
``yolo-n`` (YOLOX head with SimOTA); ``backbone.kind`` picks CSPNet, SNet or MobileNet and
``backbone.dilated`` makes the last stage atrous. Other models need no table edit: compose
``Detector(MyBackbone(...), MyNeck(...), MyHead(...))`` directly.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from scaledet.models.assigners import ATSSAssigner, FCOSAssigner
from scaledet.models.backbones.csp import CSPNet
from scaledet.models.backbones.dilation import dilate_last_stage
from scaledet.models.backbones.mobilenet import MobileNet
from scaledet.models.backbones.snet import SNet
from scaledet.models.detector import Detector
from scaledet.models.heads.centernet import CenterNetHead
from scaledet.models.heads.dense import PostProcess
from scaledet.models.heads.fcos import FCOSHead
from scaledet.models.heads.yolo import YOLOXHead
from scaledet.models.necks.pan import PAFPN
from scaledet.models.simota import SimOTAAssigner
from scaledet.models.tal import TaskAlignedAssigner

ASSIGNERS = ("atss", "fcos", "tal")
BACKBONES = {"csp": CSPNet, "snet": SNet, "mobilenet": MobileNet}
HEADS = ("fcos", "centernet", "yolo")


@dataclass
class BackboneConfig:
    """Backbone arguments.

    ``kind``: ``"csp"`` (:class:`~scaledet.models.backbones.csp.CSPNet`), ``"snet"``
    (:class:`~scaledet.models.backbones.snet.SNet`) or ``"mobilenet"``
    (:class:`~scaledet.models.backbones.mobilenet.MobileNet`); ``depthwise`` is CSPNet's (the
    other two always are). ``dilated``: atrous last stage, whose level then has stride 16
    (:func:`~scaledet.models.backbones.dilation.dilate_last_stage`).
    """

    widths: tuple[int, ...] = (8, 24, 48, 96, 192)
    depths: tuple[int, ...] = (0, 1, 2, 1)
    depthwise: bool = False
    kind: str = "csp"
    dilated: bool = False


@dataclass
class NeckConfig:
    """:class:`~scaledet.models.necks.pan.PAFPN` arguments."""

    channels: int = 64
    bottom_up: bool = True
    depth: int = 0
    depthwise: bool = True
    sppf_k: int = 5


@dataclass
class HeadConfig:
    """:class:`~scaledet.models.heads.fcos.FCOSHead` arguments and its assigner.

    ``assigner``: ``"atss"`` (``atss_topk`` candidates per level) or ``"fcos"`` (centre
    sampling of ``center_radius`` strides; level ``i`` takes objects whose largest
    point-to-side distance lies between ``fcos_bounds[i-1]`` and ``fcos_bounds[i]`` pixels,
    the first from 0 and the last unbounded).

    ``kind`` picks the head: ``"fcos"`` (:class:`~scaledet.models.heads.fcos.FCOSHead`),
    ``"centernet"`` (:class:`~scaledet.models.heads.centernet.CenterNetHead` on the finest
    level; ``box_loss_weight`` weighs its size L1 loss, ``gaussian_alpha`` its heatmap
    Gaussians) or ``"yolo"`` (:class:`~scaledet.models.heads.yolo.YOLOXHead`; needs
    ``assigner="simota"``, whose centre region is ``center_radius`` strides and dynamic k sums
    ``simota_topk`` IoUs).
    ``assigner="tal"``: task-aligned assignment (TOOD; ``tal_topk`` positives per object,
    alignment ``score^tal_alpha * IoU^tal_beta``).
    ``reg_max``: 0 for FCOS's ``exp`` distances, ``n > 0`` for Generalized Focal Loss's
    distributions over ``n + 1`` bins with distribution focal loss (weight ``dfl_weight``).
    ``box_weighting``: how the box losses weigh the positives (``"iou"``, ``"uniform"``,
    ``"object"``, ``"balanced"``; see :class:`~scaledet.models.heads.fcos.FCOSHead`).
    """

    num_convs: int = 1
    depthwise: bool = True
    norm: str = "gn"
    assigner: str = "atss"
    atss_topk: int = 9
    center_radius: float = 1.5
    fcos_bounds: tuple[float, ...] = (64.0, 128.0)
    box_loss: str = "giou"
    box_loss_weight: float = 0.25
    vfl_alpha: float = 0.75
    vfl_gamma: float = 2.0
    prior_prob: float = 0.01
    kind: str = "fcos"
    gaussian_alpha: float = 0.54
    simota_topk: int = 10
    reg_max: int = 0
    dfl_weight: float = 0.25
    tal_topk: int = 13
    tal_alpha: float = 1.0
    tal_beta: float = 6.0
    box_weighting: str = "iou"


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (architecture and inference settings).

    ``lr`` is the preset's recommended AdamW learning rate (used by the trainer when no
    ``--lr`` is given); it does not affect the architecture.
    """

    name: str = "fcos-n"
    num_classes: int = 80
    strides: tuple[int, ...] = (8, 16, 32)
    act: str = "relu"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    postprocess: PostProcess = field(default_factory=PostProcess)
    lr: float = 2e-3


def _fcos_n_head(**overrides) -> HeadConfig:
    """fcos-n's head recipe (see ``fcos_n``): per-level BatchNorm towers, GFL distributions
    with DFL, GIoU weight 1.0; fcos-s/m only widen or deepen it."""
    return HeadConfig(**{"box_loss_weight": 1.0, "norm": "level_bn", "reg_max": 16,
                         "dfl_weight": 0.5, **overrides})


def fcos_n(num_classes: int = 80) -> ModelConfig:
    """fcos-n, the default: 0.77 M parameters, 0.47 GFLOPs per 320 px image (80 classes;
    ``FlopCounterMode``, 2 per multiply-add; YOLOv8n: 2.2), training step (forward + backward +
    loss) 15 ms per image at batch 16, 320 px, 2 threads of the 2-core dev CPU at load 1.5
    (YOLOv8n: 56 ms, 3.7x; ``benchmarks/bench_models.py``; with ReLU, SiLU adds ~8%); 47-51
    images/s through ``scaledet train --nproc 2`` there (YOLOv8n: 15-16, measured the same way).

    Its recipe is tuned for minute budgets on a CPU: lr 2e-2 (AdamW) came from a sweep of 400
    steps (batch 16, 320 px; ``benchmarks/bench_recipe.py``), where lr 2e-3 reached mAP 0.03 and
    lr 1.6e-2 0.095. The GIoU box-loss weight is 1.0: in 12-minute runs on one core of the dev
    CPU (~1,800 steps, the length that matters, benchmarks/RESULTS.md) weight 1.0 reached mAP
    0.500 against 0.446 for 0.25 (best in the short sweep) and 0.428 for 2.0 (two runs at a
    time, one per core). The head's towers share convs across levels with a BatchNorm per
    level (``norm="level_bn"``) instead of FCOS's GroupNorm: 15 minutes of ``scaledet train``
    on the 2-core dev CPU (2,000 built-in images, box weight 0.25) gave mAP50-95 0.501 at 52
    img/s with bf16 autocast, against 0.471 / 40 img/s (level_bn, fp32) and 0.492 / 40 img/s
    (GroupNorm, fp32). bf16 speeds BatchNorm towers up far more than GroupNorm ones (pinned
    2-core microbenchmark: +32% vs +15% train img/s), and BatchNorm folds into the convs at
    inference (6.8 vs 9.0 ms per 320 px image).
    Box sides are distributions over 17 bins (Generalized Focal Loss, ``reg_max=16``, DFL
    weight 0.5): at a fixed 1,750 steps on one core, mAP50-95 0.545 (DFL weight 0.25) and 0.557
    (0.5) against 0.495 for ``exp`` distances; 15 minutes on 2 cores with mosaic 1.0: 0.629 /
    0.639 (seeds 0 / 1) against 0.598 / 0.578 (0.467 vs 0.450 GFLOPs, about 6% slower step).
    Box losses keep VarifocalNet's IoU weights: ``box_weighting="balanced"`` (every object
    weighs at least 1) won at 1,750 steps (mAP 0.611 vs 0.596) but not in 15-minute runs
    (0.637 / 0.630 vs 0.629 / 0.639, seeds 0 / 1).
    Activations are SiLU: 8% slower training step than ReLU (interleaved, one thread, batch 8:
    191.7 vs 176.8 ms) but 15 minutes on 2 cores reached mAP50-95 0.665 / 0.662 against 0.629
    / 0.639 (seeds 0 / 1) in fewer steps (2,514 / 2,707 vs 2,754 / 2,919).
    """
    return ModelConfig(name="fcos-n", num_classes=num_classes, act="silu", head=_fcos_n_head(),
                       lr=2e-2)


def fcos_s(num_classes: int = 80) -> ModelConfig:
    """fcos-s: fcos-n's recipe, wider and deeper (1.38 M parameters, 0.93 GFLOPs at 320 px,
    80 classes). See benchmarks/RESULTS.md for how it compares at short budgets."""
    return ModelConfig(name="fcos-s", num_classes=num_classes, act="silu",
                       backbone=BackboneConfig(widths=(16, 32, 64, 128, 256), depths=(1, 1, 2, 1)),
                       neck=NeckConfig(channels=64, depth=1),
                       head=_fcos_n_head(num_convs=2), lr=2e-2)


def fcos_m(num_classes: int = 80) -> ModelConfig:
    """fcos-m: the largest preset, fcos-n's recipe on a wider backbone and a dense (not
    depthwise) neck (3.41 M parameters, 2.45 GFLOPs at 320 px, 80 classes: YOLOv8n's cost)."""
    return ModelConfig(name="fcos-m", num_classes=num_classes, act="silu",
                       backbone=BackboneConfig(widths=(24, 48, 96, 192, 384), depths=(1, 2, 2, 1)),
                       neck=NeckConfig(channels=96, depth=1, depthwise=False),
                       head=_fcos_n_head(num_convs=2), lr=1e-2)


def centernet_n(num_classes: int = 80) -> ModelConfig:
    """centernet-n: fcos-n's backbone, an FPN down to stride 4 (P2), CenterNet head; top-100
    heatmap peaks, no NMS."""
    return ModelConfig(name="centernet-n", num_classes=num_classes, strides=(4, 8, 16, 32),
                       neck=NeckConfig(channels=64, bottom_up=False),
                       head=HeadConfig(kind="centernet", box_loss_weight=0.1, prior_prob=0.1),
                       postprocess=PostProcess(nms="none", topk_per_level=100))


def yolo_n(num_classes: int = 80) -> ModelConfig:
    """yolo-n: fcos-n's backbone and neck, YOLOX decoupled head trained with SimOTA."""
    return ModelConfig(name="yolo-n", num_classes=num_classes,
                       head=HeadConfig(kind="yolo", assigner="simota", center_radius=2.5,
                                       box_loss="ciou", box_loss_weight=5.0))


PRESETS: dict[str, Callable[..., ModelConfig]] = {"fcos-n": fcos_n, "fcos-s": fcos_s,
                                                  "fcos-m": fcos_m, "centernet-n": centernet_n,
                                                  "yolo-n": yolo_n}


def build(name: str = "fcos-n", *, num_classes: int = 80, **overrides) -> Detector:
    """Build the preset ``name`` for ``num_classes`` classes.

    ``overrides`` replace fields of the :class:`ModelConfig`; a dict value updates a nested
    config, e.g. ``build("fcos-n", num_classes=3, head={"assigner": "fcos"})``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid names: {', '.join(PRESETS)}")
    cfg = PRESETS[name](num_classes)
    for key, value in overrides.items():
        if key not in {f.name for f in dataclasses.fields(cfg)}:
            raise ValueError(f"unknown ModelConfig field {key!r}")
        current = getattr(cfg, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            value = dataclasses.replace(current, **value)
        setattr(cfg, key, value)
    return build_from_config(cfg)


def build_from_config(cfg: ModelConfig | dict) -> Detector:
    """Build the model a :class:`ModelConfig` (or its ``asdict`` / JSON form) describes."""
    if isinstance(cfg, dict):
        cfg = config_from_dict(cfg)
    n = cfg.neck
    backbone, strides = _backbone(cfg)
    neck = PAFPN(in_channels=backbone.out_channels, channels=n.channels, bottom_up=n.bottom_up,
                 sppf_k=n.sppf_k, depth=n.depth, depthwise=n.depthwise, act=cfg.act,
                 strides=strides)
    head = _head(cfg, strides)
    model = Detector(backbone, neck, head, postprocess=dataclasses.replace(cfg.postprocess))
    model.config = cfg
    return model


def _backbone(cfg: ModelConfig):
    """The backbone and its actual output strides."""
    b = cfg.backbone
    if b.kind not in BACKBONES:
        raise ValueError(f"backbone.kind must be one of {tuple(BACKBONES)}, got {b.kind!r}")
    extra = {"depthwise": b.depthwise} if b.kind == "csp" else {}
    backbone = BACKBONES[b.kind](widths=b.widths, depths=b.depths, act=cfg.act,
                                 out_strides=cfg.strides, **extra)
    strides = dilate_last_stage(backbone) if b.dilated else tuple(cfg.strides)
    return backbone, strides


def _head(cfg: ModelConfig, strides: tuple[int, ...]):
    h, channels = cfg.head, cfg.neck.channels
    if h.kind == "fcos":
        return FCOSHead(num_classes=cfg.num_classes, in_channels=channels, strides=strides,
                        num_convs=h.num_convs, depthwise=h.depthwise, norm=h.norm, act=cfg.act,
                        assigner=_assigner(h), box_loss=h.box_loss,
                        box_loss_weight=h.box_loss_weight, vfl_alpha=h.vfl_alpha,
                        vfl_gamma=h.vfl_gamma, prior_prob=h.prior_prob, reg_max=h.reg_max,
                        dfl_weight=h.dfl_weight, box_weighting=h.box_weighting)
    if h.kind == "centernet":
        return CenterNetHead(num_classes=cfg.num_classes, in_channels=channels,
                             stride=strides[0], depthwise=h.depthwise, act=cfg.act,
                             gaussian_alpha=h.gaussian_alpha, size_loss_weight=h.box_loss_weight,
                             prior_prob=h.prior_prob)
    if h.kind == "yolo":
        if h.assigner != "simota":
            raise ValueError(f"the yolo head needs head.assigner 'simota', got {h.assigner!r}")
        assigner = SimOTAAssigner(center_radius=h.center_radius, candidate_topk=h.simota_topk)
        return YOLOXHead(num_classes=cfg.num_classes, in_channels=channels, strides=strides,
                         num_convs=h.num_convs, depthwise=h.depthwise, act=cfg.act,
                         assigner=assigner, box_loss=h.box_loss,
                         box_loss_weight=h.box_loss_weight, prior_prob=h.prior_prob)
    raise ValueError(f"head.kind must be one of {HEADS}, got {h.kind!r}")


def _assigner(h: HeadConfig):
    if h.assigner == "atss":
        return ATSSAssigner(topk=h.atss_topk)
    if h.assigner == "tal":
        return TaskAlignedAssigner(topk=h.tal_topk, alpha=h.tal_alpha, beta=h.tal_beta)
    if h.assigner == "fcos":
        bounds = [0.0, *h.fcos_bounds, float("inf")]
        return FCOSAssigner(regress_ranges=list(zip(bounds[:-1], bounds[1:])),
                            radius=h.center_radius)
    raise ValueError(f"head.assigner must be one of {ASSIGNERS}, got {h.assigner!r}")


def config_from_dict(data: dict) -> ModelConfig:
    """Inverse of ``dataclasses.asdict`` for :class:`ModelConfig` (lists back to tuples,
    nested dicts back to their dataclasses); unknown keys raise ``ValueError``."""
    return _from_dict(ModelConfig, data, "model config")


def _from_dict(cls: type, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a dict, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; valid: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value, f"{where}.{key}")
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
