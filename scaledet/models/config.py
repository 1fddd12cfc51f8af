"""Typed configs of the dense detectors: one dataclass per part, one per head family.

A :class:`ModelConfig` describes an architecture completely; ``dataclasses.asdict`` of it is
JSON-safe and :func:`config_from_dict` turns that back into the same config (checkpoints store
it beside the weights). Each head config holds only the fields its head uses and builds the
head itself (``config.build(...)``); a head family added later brings its own config class
with a ``kind`` and a ``build``, and adds it to the ``head`` union of :class:`ModelConfig`.

Where a field holds one of several configs (the head, an assigner), the ``kind`` field of the
dict says which one; overriding such a field with a bare kind name (``head.assigner=tal``)
picks that config with its defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from scaledet.models.assigners import ATSSAssigner, FCOSAssigner
from scaledet.models.detr.criterion import SetLossWeights
from scaledet.models.detr.head import RTDETRHead
from scaledet.models.detr.matcher import HungarianMatcher
from scaledet.models.diffusiondet.head import DiffusionDetHead, check_options
from scaledet.models.diffusiondet.matcher import DynamicKMatcher
from scaledet.models.heads.centernet import CenterNetHead
from scaledet.models.heads.dense import PostProcess
from scaledet.models.heads.fcos import BOX_WEIGHTINGS, FCOSHead
from scaledet.models.heads.fcos_keypoints import KeypointFCOSHead
from scaledet.models.heads.yolo import YOLOXHead
from scaledet.models.simota import SimOTAAssigner
from scaledet.models.tal import TaskAlignedAssigner

# ---- parts ------------------------------------------------------------------------------------


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
    """:class:`~scaledet.models.necks.pan.PAFPN` arguments, and the optional transformer
    encoder on the deepest backbone level before it (RT-DETR's hybrid encoder,
    :class:`~scaledet.models.detr.encoder.HybridEncoder`): ``encoder`` is ``"none"``,
    ``"softmax"``, ``"linear"`` or ``"gau"``, with ``encoder_layers`` layers of
    ``encoder_heads`` heads, an ``encoder_ffn`` feed-forward kind and, with
    ``encoder_experts > 1``, a top-2 mixture of that many experts as the feed-forward block
    (``"gau"`` has its own gating instead of heads and a feed-forward block, so it ignores the
    last three). The encoder trains at 0.05 times the learning rate (attention layers need a
    smaller one than convolutions trained from scratch)."""

    channels: int = 64
    bottom_up: bool = True
    depth: int = 0
    depthwise: bool = True
    sppf_k: int = 5
    encoder: str = "none"
    encoder_layers: int = 1
    encoder_heads: int = 4
    encoder_ffn: str = "gelu"
    encoder_experts: int = 0


# ---- assigners ------------------------------------------------------------------------------


@dataclass
class ATSSConfig:
    """:class:`~scaledet.models.assigners.ATSSAssigner`: ``topk`` candidates per level, each
    location's square anchor ``anchor_scale`` strides wide."""

    kind: str = "atss"
    topk: int = 9
    anchor_scale: float = 8.0

    def build(self) -> ATSSAssigner:
        return ATSSAssigner(topk=self.topk, anchor_scale=self.anchor_scale)


@dataclass
class FCOSAssignerConfig:
    """:class:`~scaledet.models.assigners.FCOSAssigner`: centre sampling within
    ``center_radius`` strides; level ``i`` takes objects whose largest point-to-side distance
    lies between ``bounds[i-1]`` and ``bounds[i]`` pixels (the first from 0, the last
    unbounded)."""

    kind: str = "fcos"
    center_radius: float = 1.5
    bounds: tuple[float, ...] = (64.0, 128.0)

    def build(self) -> FCOSAssigner:
        edges = [0.0, *self.bounds, float("inf")]
        return FCOSAssigner(regress_ranges=list(zip(edges[:-1], edges[1:])),
                            radius=self.center_radius)


@dataclass
class TALConfig:
    """:class:`~scaledet.models.tal.TaskAlignedAssigner` (TOOD): ``topk`` positives per
    object by the alignment ``score^alpha * IoU^beta``."""

    kind: str = "tal"
    topk: int = 13
    alpha: float = 1.0
    beta: float = 6.0

    def build(self) -> TaskAlignedAssigner:
        return TaskAlignedAssigner(topk=self.topk, alpha=self.alpha, beta=self.beta)


@dataclass
class SimOTAConfig:
    """:class:`~scaledet.models.simota.SimOTAAssigner` (YOLOX): candidates within
    ``center_radius`` strides of the centre, dynamic k from the sum of the
    ``candidate_topk`` best IoUs."""

    kind: str = "simota"
    center_radius: float = 2.5
    candidate_topk: int = 10
    iou_weight: float = 3.0

    def build(self) -> SimOTAAssigner:
        return SimOTAAssigner(center_radius=self.center_radius,
                              candidate_topk=self.candidate_topk, iou_weight=self.iou_weight)


# ---- heads ----------------------------------------------------------------------------------


@dataclass
class FCOSHeadConfig:
    """:class:`~scaledet.models.heads.fcos.FCOSHead` (FCOS + VarifocalNet scores) and the
    assigner it trains with; the fields are the head's arguments of the same names.
    ``num_keypoints > 0`` adds the keypoint branch
    (:class:`~scaledet.models.heads.fcos_keypoints.KeypointFCOSHead`: that many keypoints per
    box, losses weighted by ``keypoint_loss_weight`` and ``visibility_loss_weight``); 0 is the
    plain detector."""

    kind: str = "fcos"
    num_convs: int = 1
    depthwise: bool = True
    norm: str = "gn"
    assigner: ATSSConfig | FCOSAssignerConfig | TALConfig = field(default_factory=ATSSConfig)
    box_loss: str = "giou"
    box_loss_weight: float = 0.25
    vfl_alpha: float = 0.75
    vfl_gamma: float = 2.0
    prior_prob: float = 0.01
    reg_max: int = 0
    dfl_weight: float = 0.25
    box_weighting: str = "iou"
    num_keypoints: int = 0
    keypoint_loss_weight: float = 0.1
    visibility_loss_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.box_weighting not in BOX_WEIGHTINGS:
            raise ValueError(f"head.box_weighting must be one of {BOX_WEIGHTINGS}, got "
                             f"{self.box_weighting!r}")
        if self.num_keypoints < 0:
            raise ValueError(f"head.num_keypoints must be >= 0, got {self.num_keypoints}")

    def build(self, *, num_classes: int, in_channels: int, strides: tuple[int, ...],
              act: str) -> FCOSHead:
        args = dict(num_classes=num_classes, in_channels=in_channels, strides=strides,
                    num_convs=self.num_convs, depthwise=self.depthwise, norm=self.norm,
                    act=act, assigner=self.assigner.build(), box_loss=self.box_loss,
                    box_loss_weight=self.box_loss_weight, vfl_alpha=self.vfl_alpha,
                    vfl_gamma=self.vfl_gamma, prior_prob=self.prior_prob,
                    reg_max=self.reg_max, dfl_weight=self.dfl_weight,
                    box_weighting=self.box_weighting)
        if self.num_keypoints:
            return KeypointFCOSHead(num_keypoints=self.num_keypoints,
                                    keypoint_loss_weight=self.keypoint_loss_weight,
                                    visibility_loss_weight=self.visibility_loss_weight, **args)
        return FCOSHead(**args)


@dataclass
class CenterNetHeadConfig:
    """:class:`~scaledet.models.heads.centernet.CenterNetHead` on the finest level."""

    kind: str = "centernet"
    depthwise: bool = True
    gaussian_alpha: float = 0.54
    size_loss_weight: float = 0.1
    offset_loss_weight: float = 1.0
    prior_prob: float = 0.1

    def build(self, *, num_classes: int, in_channels: int, strides: tuple[int, ...],
              act: str) -> CenterNetHead:
        return CenterNetHead(num_classes=num_classes, in_channels=in_channels,
                             stride=strides[0], depthwise=self.depthwise, act=act,
                             gaussian_alpha=self.gaussian_alpha,
                             size_loss_weight=self.size_loss_weight,
                             offset_loss_weight=self.offset_loss_weight,
                             prior_prob=self.prior_prob)


@dataclass
class YOLOXHeadConfig:
    """:class:`~scaledet.models.heads.yolo.YOLOXHead` (decoupled head with objectness)
    trained with SimOTA."""

    kind: str = "yolox"
    num_convs: int = 1
    depthwise: bool = True
    assigner: SimOTAConfig = field(default_factory=SimOTAConfig)
    box_loss: str = "ciou"
    box_loss_weight: float = 5.0
    obj_loss_weight: float = 1.0
    prior_prob: float = 0.01

    def build(self, *, num_classes: int, in_channels: int, strides: tuple[int, ...],
              act: str) -> YOLOXHead:
        return YOLOXHead(num_classes=num_classes, in_channels=in_channels, strides=strides,
                         num_convs=self.num_convs, depthwise=self.depthwise, act=act,
                         assigner=self.assigner.build(), box_loss=self.box_loss,
                         box_loss_weight=self.box_loss_weight,
                         obj_loss_weight=self.obj_loss_weight, prior_prob=self.prior_prob)




@dataclass
class RTDETRHeadConfig:
    """:class:`~scaledet.models.detr.head.RTDETRHead`, the set-prediction head; the fields
    are its arguments. ``proposals`` is the dense head of ``query_selection="dense"``;
    ``cost_*`` weigh the Hungarian matcher's costs and ``weight_*`` the set loss."""

    kind: str = "rtdetr"
    hidden_dim: int = 64
    num_heads: int = 4
    num_queries: int = 100
    num_decoder_layers: int = 3
    num_points: int = 4
    ffn_dim: int = 256
    ffn: str = "relu"
    query_selection: str = "dense"
    proposals: FCOSHeadConfig = field(default_factory=FCOSHeadConfig)
    num_denoising: int = 60
    label_noise: float = 0.5
    box_noise: float = 1.0
    cost_class: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0
    weight_vfl: float = 1.0
    weight_l1: float = 5.0
    weight_giou: float = 2.0
    proposal_loss_weight: float = 1.0
    transformer_lr_scale: float = 0.05
    refine_scores: bool = False
    feature_grad_scale: float = 1.0

    def build(self, *, num_classes: int, in_channels: int, strides, act: str) -> RTDETRHead:
        proposals = None
        if self.query_selection == "dense":
            proposals = self.proposals.build(num_classes=num_classes, in_channels=in_channels,
                                             strides=strides, act=act)
        return RTDETRHead(
            num_classes=num_classes, in_channels=in_channels, strides=strides,
            hidden_dim=self.hidden_dim, num_heads=self.num_heads, num_queries=self.num_queries,
            num_decoder_layers=self.num_decoder_layers, num_points=self.num_points,
            ffn_dim=self.ffn_dim, ffn=self.ffn, query_selection=self.query_selection,
            proposal_head=proposals, num_denoising=self.num_denoising,
            label_noise=self.label_noise, box_noise=self.box_noise,
            matcher=HungarianMatcher(self.cost_class, self.cost_l1, self.cost_giou),
            loss_weights=SetLossWeights(self.weight_vfl, self.weight_l1, self.weight_giou),
            proposal_loss_weight=self.proposal_loss_weight,
            transformer_lr_scale=self.transformer_lr_scale, refine_scores=self.refine_scores,
            feature_grad_scale=self.feature_grad_scale)


DIFFUSION_MATCHERS = ("hungarian", "dynamic_k")


@dataclass
class DiffusionDetHeadConfig:
    """:class:`~scaledet.models.diffusiondet.head.DiffusionDetHead`, boxes denoised from noise
    (DiffusionDet; ``objective="flow"``: its rectified-flow variant); the fields are its
    arguments. ``num_boxes``, ``steps``, ``seed``, ``sampler`` (``"ddim"`` for ``ddpm``,
    ``"euler"`` for ``flow``), ``eta``, ``renewal_threshold`` (0: no renewal) and
    ``ensemble`` are inference options; ``cost_*`` weigh the matcher, ``weight_*`` the loss.
    ``matcher``: ``"hungarian"`` (one-to-one) or ``"dynamic_k"`` (the paper's one-to-many
    :class:`~scaledet.models.diffusiondet.matcher.DynamicKMatcher`, summing an object's
    ``dynamic_k_topk`` best IoUs for its number of boxes). ``flow_time``: the flow objective's
    training-time distribution (``"uniform"``, ``"logit_normal"``, ``"cosmap"``; see
    :func:`~scaledet.nn.diffusion.flow_times`). ``aux_loss_weight > 0`` trains the
    dense head ``aux_head`` beside the stages (Co-DETR's auxiliary head; not used at
    inference)."""

    INFERENCE_FIELDS: ClassVar[tuple[str, ...]] = (
        "num_boxes", "steps", "seed", "sampler", "eta", "renewal_threshold", "ensemble")

    kind: str = "diffusiondet"
    objective: str = "ddpm"
    flow_time: str = "uniform"
    hidden_dim: int = 64
    num_heads: int = 4
    num_stages: int = 3
    ffn_dim: int = 256
    dynamic_dim: int = 16
    pooler_size: int = 7
    sampling_ratio: int = 1
    num_train_boxes: int = 100
    signal_scale: float = 2.0
    num_train_steps: int = 1000
    schedule: str = "cosine"
    matcher: str = "hungarian"
    dynamic_k_topk: int = 5
    cost_class: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0
    weight_cls: float = 2.0
    weight_l1: float = 5.0
    weight_giou: float = 2.0
    prior_prob: float = 0.01
    lr_scale: float = 0.05
    num_boxes: int = 100
    steps: int = 1
    seed: int = 0
    sampler: str = "ddim"
    eta: float = 0.0
    renewal_threshold: float = 0.5
    ensemble: bool = True
    aux_head: FCOSHeadConfig = field(default_factory=FCOSHeadConfig)
    aux_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        try:
            check_options(self.objective, self.sampler, self.num_boxes, self.steps, self.eta,
                          self.flow_time)
        except ValueError as e:
            raise ValueError(f"head.{e}") from None
        if self.matcher not in DIFFUSION_MATCHERS:
            raise ValueError(f"head.matcher must be one of {DIFFUSION_MATCHERS}, got "
                             f"{self.matcher!r}")

    def build(self, *, num_classes: int, in_channels: int, strides, act: str
              ) -> DiffusionDetHead:
        return DiffusionDetHead(
            num_classes=num_classes, in_channels=in_channels, strides=strides,
            hidden_dim=self.hidden_dim, num_heads=self.num_heads, num_stages=self.num_stages,
            ffn_dim=self.ffn_dim, dynamic_dim=self.dynamic_dim, pooler_size=self.pooler_size,
            sampling_ratio=self.sampling_ratio,
            objective=self.objective, flow_time=self.flow_time,
            num_train_boxes=self.num_train_boxes,
            signal_scale=self.signal_scale, num_train_steps=self.num_train_steps,
            schedule=self.schedule,
            matcher=self.build_matcher(),
            loss_weights=SetLossWeights(self.weight_cls, self.weight_l1, self.weight_giou),
            prior_prob=self.prior_prob, lr_scale=self.lr_scale, num_boxes=self.num_boxes,
            steps=self.steps, seed=self.seed, sampler=self.sampler, eta=self.eta,
            renewal_threshold=self.renewal_threshold or None, ensemble=self.ensemble,
            aux_head=(self.aux_head.build(num_classes=num_classes, in_channels=self.hidden_dim,
                                          strides=strides, act=act)
                      if self.aux_loss_weight > 0 else None),
            aux_loss_weight=self.aux_loss_weight)

    def build_matcher(self) -> HungarianMatcher | DynamicKMatcher:
        costs = HungarianMatcher(self.cost_class, self.cost_l1, self.cost_giou)
        if self.matcher == "dynamic_k":
            return DynamicKMatcher(costs, candidate_topk=self.dynamic_k_topk)
        return costs


HeadConfig = Union[FCOSHeadConfig, CenterNetHeadConfig, YOLOXHeadConfig,  # noqa: UP007
                   RTDETRHeadConfig, DiffusionDetHeadConfig]
"""Any head family's config (the type of :attr:`ModelConfig.head`)."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model: architecture and inference settings (the training
    recipe is apart: :class:`~scaledet.models.presets.Recipe`)."""

    name: str = "fcos-n"
    num_classes: int = 80
    strides: tuple[int, ...] = (8, 16, 32)
    act: str = "relu"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    head: (FCOSHeadConfig | CenterNetHeadConfig | YOLOXHeadConfig | RTDETRHeadConfig
           | DiffusionDetHeadConfig) = field(default_factory=FCOSHeadConfig)
    postprocess: PostProcess = field(default_factory=PostProcess)


# ---- dicts <-> configs ------------------------------------------------------------------------


def config_from_dict(data: dict) -> ModelConfig:
    """Inverse of ``dataclasses.asdict`` for :class:`ModelConfig` (lists back to tuples,
    nested dicts back to their dataclasses, picked by ``kind`` where a field has several);
    an unknown field or a value of the wrong type raises ``ValueError`` naming it."""
    return from_dict(ModelConfig, data, "model")


def apply_overrides(cfg: Any, overrides: dict[str, Any], where: str = "model") -> Any:
    """A copy of the dataclass ``cfg`` with ``overrides`` applied: ``{"act": "silu", "head":
    {"norm": "gn"}}`` or dotted keys ``{"head.norm": "gn"}``. A dict updates a nested config;
    a bare kind name (``{"head.assigner": "tal"}``) or a dict with another ``kind`` replaces
    it with that config's defaults first. Errors name the field and list the valid ones."""
    merged = _merge(dataclasses.asdict(cfg), nest(overrides), type(cfg), where)
    return from_dict(type(cfg), merged, where)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"head.norm": "gn", "lr": 1}`` -> ``{"head": {"norm": "gn"}, "lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {name} is given both a value and fields")
        if isinstance(value, dict):
            value = nest(value)
        if isinstance(node.get(leaf), dict) and isinstance(value, dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return out


def _choices(hint: Any) -> tuple[type, ...]:
    """The config classes a field may hold (one for a plain dataclass field)."""
    if dataclasses.is_dataclass(hint):
        return (hint,)
    if typing.get_origin(hint) in (Union, types.UnionType):
        return tuple(a for a in typing.get_args(hint) if dataclasses.is_dataclass(a))
    return ()


def _kinded(choices: tuple[type, ...]) -> bool:
    """Whether the ``kind`` field picks the class (heads, assigners), rather than being an
    ordinary field (the backbone's)."""
    return all(hasattr(c, "build") for c in choices)


def _kind_of(cls: type) -> str | None:
    f = {f.name: f for f in dataclasses.fields(cls)}.get("kind")
    return None if f is None else f.default


def _pick(choices: tuple[type, ...], kind: str, where: str) -> type:
    kinds = {_kind_of(c): c for c in choices}
    if kind not in kinds:
        raise ValueError(f"{where}: unknown kind {kind!r}; valid: {sorted(k for k in kinds if k)}")
    return kinds[kind]


def _merge(current: dict, overrides: dict, cls: type, where: str) -> dict:
    """``current`` (an ``asdict`` form of ``cls``) with ``overrides`` merged in; unknown
    fields are passed through for :func:`from_dict` to report."""
    hints = typing.get_type_hints(cls)
    out = dict(current)
    for key, value in overrides.items():
        choices = _choices(hints.get(key))
        if not choices:
            out[key] = value
            continue
        kinded = _kinded(choices)
        if isinstance(value, str) and kinded:
            value = {"kind": value}
        if not isinstance(value, dict):
            raise ValueError(f"{where}.{key} is a section ({' | '.join(c.__name__ for c in choices)})"
                             f"; set its fields, e.g. {key}.FIELD=VALUE")
        base = out.get(key) or {}
        sub = choices[0]
        if kinded:
            kind = value.get("kind", base.get("kind"))
            sub = _pick(choices, kind, f"{where}.{key}")
            if kind != base.get("kind"):
                base = dataclasses.asdict(sub())
        out[key] = _merge(base, value, sub, f"{where}.{key}")
    return out


_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def from_dict(cls: type, data: dict, where: str):
    """The dataclass ``cls`` from its ``asdict`` form, checked field by field."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping of fields, got {type(data).__name__}")
    hints = {k: v for k, v in typing.get_type_hints(cls).items()
             if typing.get_origin(v) is not ClassVar}  # class constants are not fields
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: not a field of {cls.__name__}; valid: "
                         f"{', '.join(sorted(hints))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        choices = _choices(hint)
        if choices:
            sub = choices[0]
            if _kinded(choices):
                kind = value.get("kind") if isinstance(value, dict) else None
                sub = _pick(choices, kind, f"{where}.{key}")
            value = from_dict(sub, value, f"{where}.{key}")
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{where}.{key} must be a list, got {value!r}")
            value = tuple(value)
        else:
            _check_scalar(hint, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def _check_scalar(hint: Any, value: Any, where: str) -> None:
    names = [a.__name__ if isinstance(a, type) else str(a) for a in
             (typing.get_args(hint) or (hint,))]
    allowed = tuple(t for n in names for t in _SCALARS.get(n, ()))
    if "NoneType" in names and value is None:
        return
    if not allowed or (isinstance(value, allowed) and not (
            isinstance(value, bool) and bool not in allowed)):
        return
    raise ValueError(f"{where} must be {' or '.join(n for n in names if n != 'NoneType')}, "
                     f"got {value!r}")
