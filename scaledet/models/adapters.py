"""Adapting a trained detector: loading its weights into a model for new classes, and
parameter-efficient fine-tuning (LoRA, bottleneck adapters, prefix tuning, head only).

Starting from trained weights (:func:`load_pretrained`)
    The new model is built from the base checkpoint's config with the new class count. Every
    tensor of the checkpoint whose name and shape match loads; the *class layers* (the tensors
    whose shape depends on ``num_classes``, found by building the config once more with one
    more class, e.g. FCOS's ``head.cls_pred``, RT-DETR's class heads and denoising label
    embedding) keep the fresh initialisation of the new model (prior-probability bias
    included) when the class set differs. Any other tensor that is missing or has another
    shape means the architectures differ: a ``ValueError`` lists them.

Adapter kinds (:func:`apply_adapters`; the base weights are frozen in every kind)
    ``lora``
        ``W + (alpha / r) B A`` on every dense convolution (``1 x 1`` and ``k x k``, the
        kernel seen as a ``(C_out, C_in k k)`` matrix) and every linear layer, attention
        projections included (:class:`LoRAConv2d`, :class:`LoRALinear`). ``A`` is
        Kaiming-uniform, ``B`` zero, so training starts exactly at the base model.
        Depthwise convolutions (``groups == C``) are left out: their kernel is a
        ``(C, 1, k, k)`` tensor, i.e. a ``(C, k k)`` matrix of rank at most ``k k`` (9), and a
        rank-``r`` update costs ``r (C + k k)`` parameters against the ``9 C`` of the kernel
        itself, so it saves nothing and constrains a layer that is already tiny. Other
        grouped convolutions are left out as well (none of the presets has one).
        The update is applied to the weight inside the layer's forward (one convolution, as
        in the merged model), so :func:`merge_lora` gives the same outputs to float rounding.
    ``adapter``
        A bottleneck block (``1 x 1`` down to ``r`` channels, SiLU, ``1 x 1`` up, zero-init,
        residual: :class:`BottleneckAdapter`) on every output level of the backbone and of
        the neck, applied by forward hooks so the base modules and their state-dict names
        stay as they are. Zero-init up-projection: training starts exactly at the base model.
    ``prefix``
        ``r`` learned key and value vectors prepended, after the projections, to the keys
        and values of every :class:`~scaledet.nn.attention.MultiheadAttention`
        (:class:`PrefixAttention`: RT-DETR's encoder and decoder self-attention). The
        prefixes take a share of every softmax, so unlike LoRA and adapters it does not start
        exactly at the base model. A model without such layers is an error.
    ``head``
        Only ``model.head`` trains (with its BatchNorms in train mode): the linear-probe
        baseline.

    In every kind the rebuilt class layers train in full.

BatchNorm
    Every BatchNorm of the frozen part becomes a :class:`FrozenBatchNorm2d`: eval mode for
    good (``train()`` does not switch it back), so its running statistics stay the base
    model's and its affine parameters are frozen. The frozen layers after it were trained on
    exactly those statistics; re-estimating them on a small new dataset (with batches a
    fraction of the original's) would shift every feature the adapters are meant to correct
    only slightly, and the adapted checkpoint would have to store them all.

Checkpoints (:func:`checkpoint_state`)
    An adapted model records its :class:`AdapterConfig` and the names of what it trains
    (``model.adapter_config``, ``model.trained_keys``, kept by ``copy.deepcopy``); its
    checkpoint holds only those tensors (adapter parameters, rebuilt class layers, and the
    parameters and running statistics of BatchNorms that train), and refers to its base file
    by path and SHA-256 (:func:`scaledet.models.checkpoint.model_from_weights`).

Written here rather than taken from ``peft``: what is needed is small (two layer subclasses,
one attention subclass, a hook), ``peft`` is a large dependency built around
``transformers`` whose LoRA for convolutions treats ``k x k`` kernels and grouped ones in
its own way, and its layers are wrappers that rename every state-dict key, where these
subclasses keep the base names, merge into plain ``nn.Conv2d`` / ``nn.Linear`` modules, and
export to ONNX with the TorchScript exporter as the rest of the model does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.nn.attention import MultiheadAttention, _as_4d, _rope_4d
from scaledet.nn.rope import apply_rope

ADAPTER_KINDS = ("lora", "adapter", "prefix", "head")


LORA_ALPHA = 8.0
"""Default LoRA ``alpha`` (scale ``alpha / rank``: 1 at the default rank 8)."""


@dataclass(frozen=True)
class AdapterConfig:
    """How a model is adapted.

    Attributes:
        kind: one of :data:`ADAPTER_KINDS`.
        rank: LoRA rank ``r``, adapter bottleneck width, or prefix length (unused by
            ``head``).
        alpha: LoRA scale numerator: the update is ``(alpha / rank) B A`` (None:
            :data:`LORA_ALPHA`). Fixed while the rank changes, as the LoRA paper sets it: under
            Adam every entry of ``A`` and ``B`` moves about as fast whatever the rank, so the
            product ``B A`` grows with ``r`` and ``1 / r`` keeps the update's size, and the
            learning rate's meaning, the same at every rank.
        full: names of modules trained in full (the rebuilt class layers).
    """

    kind: str
    rank: int = 8
    alpha: float | None = None
    full: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.alpha is None:
            object.__setattr__(self, "alpha", LORA_ALPHA)
        if self.kind not in ADAPTER_KINDS:
            raise ValueError(f"adapter must be one of {', '.join(ADAPTER_KINDS)}, "
                             f"got {self.kind!r}")
        if int(self.rank) < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        object.__setattr__(self, "full", tuple(self.full))

    @property
    def scaling(self) -> float:
        return float(self.alpha) / self.rank

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if kwargs.get("alpha") is None:  # written before alpha was stored: it meant 2 rank
            kwargs["alpha"] = 2.0 * int(kwargs.get("rank", 8))
        return cls(**kwargs)


# ---- layers -----------------------------------------------------------------------------------

class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode: ``train()`` leaves it normalising with its
    running statistics, which therefore never change. Same state-dict names."""

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


def _lora_params(module: nn.Module, out_features: int, fan_in: int, rank: int) -> None:
    """``lora_A (r, fan_in)`` Kaiming-uniform (as ``nn.Linear`` initialises its weight) and
    ``lora_B (out, r)`` zero, on the module's device and dtype."""
    w = module.weight
    module.lora_A = nn.Parameter(torch.empty(rank, fan_in, device=w.device, dtype=w.dtype))
    module.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=w.device, dtype=w.dtype))
    nn.init.kaiming_uniform_(module.lora_A, a=math.sqrt(5))


class LoRAConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose kernel is ``W + scaling * (B A).view_as(W)``; ``A (r, C_in k k)``,
    ``B (C_out, r)``. Built from a dense conv by :meth:`wrap` (sharing its parameters);
    :meth:`merged` gives the plain conv."""

    lora_A: nn.Parameter
    lora_B: nn.Parameter
    scaling: float

    @classmethod
    def wrap(cls, conv: nn.Conv2d, rank: int, scaling: float) -> LoRAConv2d:
        with torch.device("meta"):
            new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                      conv.padding_mode)
        new.weight, new.bias = conv.weight, conv.bias
        _lora_params(new, conv.out_channels, conv.weight[0].numel(), rank)
        new.scaling = float(scaling)
        new.train(conv.training)
        return new

    def delta_weight(self) -> Tensor:
        """The update ``scaling * B A`` in the kernel's shape ``(C_out, C_in, k, k)``."""
        return (self.lora_B @ self.lora_A).view(self.weight.shape) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight + self.delta_weight(), self.bias)

    def merged(self) -> nn.Conv2d:
        with torch.device("meta"):
            conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                             self.padding, self.dilation, self.groups, self.bias is not None,
                             self.padding_mode)
        with torch.no_grad():
            conv.weight = nn.Parameter(self.weight + self.delta_weight(),
                                       self.weight.requires_grad)
        conv.bias = self.bias
        return conv.train(self.training)


class LoRALinear(nn.Linear):
    """``nn.Linear`` with weight ``W + scaling * B A``; ``A (r, in)``, ``B (out, r)``."""

    lora_A: nn.Parameter
    lora_B: nn.Parameter
    scaling: float

    @classmethod
    def wrap(cls, linear: nn.Linear, rank: int, scaling: float) -> LoRALinear:
        with torch.device("meta"):
            new = cls(linear.in_features, linear.out_features, linear.bias is not None)
        new.weight, new.bias = linear.weight, linear.bias
        _lora_params(new, linear.out_features, linear.in_features, rank)
        new.scaling = float(scaling)
        new.train(linear.training)
        return new

    def delta_weight(self) -> Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight + self.delta_weight(), self.bias)

    def merged(self) -> nn.Linear:
        with torch.device("meta"):
            linear = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        with torch.no_grad():
            linear.weight = nn.Parameter(self.weight + self.delta_weight(),
                                         self.weight.requires_grad)
        linear.bias = self.bias
        return linear.train(self.training)


class BottleneckAdapter(nn.Module):
    """``x + up(silu(down(x)))``, ``(B, C, H, W) -> (B, C, H, W)``, through ``rank``
    channels; ``up`` starts at zero, so the block starts as the identity."""

    def __init__(self, channels: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, rank, 1)
        self.act = nn.SiLU()
        self.up = nn.Conv2d(rank, channels, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(self.act(self.down(x)))


class FeatureAdapters(nn.ModuleList):
    """One :class:`BottleneckAdapter` per feature level; :meth:`hook` is a forward hook for a
    module that returns a list of ``(B, C_l, H_l, W_l)`` maps (a backbone or a neck)."""

    def __init__(self, channels: Iterable[int], rank: int) -> None:
        super().__init__(BottleneckAdapter(c, rank) for c in channels)

    def hook(self, module: nn.Module, inputs: Any, output: list[Tensor]) -> list[Tensor]:
        return [adapter(f) for adapter, f in zip(self, output, strict=True)]


class PrefixAttention(MultiheadAttention):
    """:class:`~scaledet.nn.attention.MultiheadAttention` with ``r`` learned key and value
    vectors, ``prefix_k`` and ``prefix_v`` ``(r, C)``, prepended to the projected keys and
    values (before the heads split; RoPE is not applied to them: they have no position).
    Every query may attend them, whatever the masks say of the other keys; a causal mask
    applies to the other keys only. Same state-dict names as the base layer plus the two
    prefixes."""

    prefix_k: nn.Parameter
    prefix_v: nn.Parameter

    @classmethod
    def wrap(cls, attn: MultiheadAttention, length: int) -> PrefixAttention:
        with torch.device("meta"):
            new = cls(attn.dim, attn.num_heads, dropout=attn.dropout,
                      bias=attn.q_proj.bias is not None)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(new, name, getattr(attn, name))
        w = attn.k_proj.weight
        new.prefix_k = nn.Parameter(torch.randn(length, attn.dim, device=w.device,
                                                dtype=w.dtype) * 0.02)
        new.prefix_v = nn.Parameter(torch.randn(length, attn.dim, device=w.device,
                                                dtype=w.dtype) * 0.02)
        new.train(attn.training)
        return new

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                causal: bool = False, rope_q: tuple[Tensor, Tensor] | None = None,
                rope_k: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """As :meth:`MultiheadAttention.forward`; ``(B, Nq, C)`` -> ``(B, Nq, C)``."""
        key = query if key is None else key
        value = key if value is None else value
        b = query.shape[0]
        q = self._heads(self.q_proj(query))  # (B, H, Nq, d)
        k = self._heads(self.k_proj(key))  # (B, H, Nk, d)
        v = self._heads(self.v_proj(value))
        if rope_q is not None:
            q = apply_rope(q, _rope_4d(rope_q[0]), _rope_4d(rope_q[1]))
        if rope_k is not None:
            k = apply_rope(k, _rope_4d(rope_k[0]), _rope_4d(rope_k[1]))
        nq, nk, r = q.shape[-2], k.shape[-2], self.prefix_k.shape[0]
        pk = self._heads(self.prefix_k.to(k.dtype).expand(b, r, self.dim))  # (B, H, r, d)
        pv = self._heads(self.prefix_v.to(v.dtype).expand(b, r, self.dim))
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        if causal:
            future = torch.ones(nq, nk, dtype=torch.bool, device=q.device).triu(1)
            if attn_mask is None:
                attn_mask = future
            elif attn_mask.dtype == torch.bool:
                attn_mask = _as_4d(attn_mask, "attn_mask") | future
            else:
                attn_mask = _as_4d(attn_mask, "attn_mask").masked_fill(future, float("-inf"))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (r, 0), value=False)
        if attn_mask is not None:
            attn_mask = _as_4d(attn_mask, "attn_mask")
            attn_mask = F.pad(attn_mask, (r, 0), value=False if attn_mask.dtype == torch.bool
                              else 0.0)
        mask = self._mask(nq, nk + r, q.device, q.dtype, key_padding_mask, attn_mask, False)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            scale=1.0 / math.sqrt(self.head_dim))  # (B, H, Nq, d)
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, self.dim))


# ---- applying and merging ---------------------------------------------------------------------

def _swap(model: nn.Module, pick: Callable[[str, nn.Module], bool],
          make: Callable[[nn.Module], nn.Module]) -> list[str]:
    """Replace every module ``m`` (at name ``n``) with ``pick(n, m)`` by ``make(m)``, at every
    place it is registered (a module shared by two parents is made once). Returns the names
    replaced."""
    made: dict[int, nn.Module] = {}
    names: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            name = f"{prefix}{child_name}"
            if id(child) in made or pick(name, child):
                if id(child) not in made:
                    made[id(child)] = make(child)
                    names.append(name)
                setattr(parent, child_name, made[id(child)])
            else:
                visit(child, name + ".")

    visit(model, "")
    return names


def _inside(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _feature_channels(model: nn.Module) -> tuple[list[int], list[int]]:
    """Channels of each output level of ``model.backbone`` and ``model.neck``, from one
    forward of a small blank image (eval mode, no grad; the mode is restored)."""
    side = 2 * int(getattr(model, "size_divisor", 32))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = model.preprocess(torch.zeros(1, 3, side, side, device=device))
            feats = model.backbone(x)
            outs = model.neck(feats)
    finally:
        model.train(was_training)
    return [f.shape[1] for f in feats], [f.shape[1] for f in outs]


def apply_adapters(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """Adapt ``model`` (a :class:`~scaledet.models.detector.Detector`) in place as ``cfg``
    says (see the module docstring): freeze it, turn the frozen BatchNorms into
    :class:`FrozenBatchNorm2d`, add the trainable parts, unfreeze ``cfg.full``; record
    ``model.adapter_config`` and ``model.trained_keys``. Returns ``model``."""
    if getattr(model, "adapter_config", None) is not None:
        raise ValueError("the model is adapted already; merge or load its base first")
    names = dict(model.named_modules())
    unknown = [n for n in cfg.full if n not in names]
    if unknown:
        raise ValueError(f"adapter: no modules named {unknown} in the model")
    trained = list(cfg.full) + (["head"] if cfg.kind == "head" else [])
    for p in model.parameters():
        p.requires_grad_(False)
    _swap(model, lambda n, m: type(m) is nn.BatchNorm2d and not _inside(n, trained),
          _frozen_bn)
    if cfg.kind == "lora":
        def dense(n: str, m: nn.Module) -> bool:
            if _inside(n, trained):
                return False  # exact types: depthwise and LoRA layers are subclasses
            return (type(m) is nn.Conv2d and m.groups == 1) or type(m) is nn.Linear

        def lora(m: nn.Module) -> nn.Module:
            kind = LoRAConv2d if isinstance(m, nn.Conv2d) else LoRALinear
            return kind.wrap(m, cfg.rank, cfg.scaling)

        if not _swap(model, dense, lora):
            raise ValueError("adapter lora: the model has no dense convolution or linear layer")
    elif cfg.kind == "adapter":
        back, neck = _feature_channels(model)
        model.adapters = nn.ModuleDict({"backbone": FeatureAdapters(back, cfg.rank),
                                        "neck": FeatureAdapters(neck, cfg.rank)})
        model.adapters.to(next(model.parameters()).device)
        _hook_adapters(model)
    elif cfg.kind == "prefix":
        found = _swap(model, lambda n, m: type(m) is MultiheadAttention and not _inside(n, trained),
                      lambda m: PrefixAttention.wrap(m, cfg.rank))
        if not found:
            name = getattr(getattr(model, "config", None), "name", type(model).__name__)
            raise ValueError(f"adapter prefix: {name} has no attention layers to prefix "
                             "(prefix tuning needs an attention-based preset such as rtdetr-n)")
    for name in trained:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    model.adapter_config = cfg
    model.trained_keys = _trained_keys(model)
    return model


def _frozen_bn(bn: nn.Module) -> FrozenBatchNorm2d:
    with torch.device("meta"):
        new = FrozenBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                                bn.track_running_stats)
    new.weight, new.bias = bn.weight, bn.bias
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(new, name, getattr(bn, name))
    return new.eval()


def _hook_adapters(model: nn.Module) -> None:
    """Run ``model.adapters`` on the outputs of ``model.backbone`` and ``model.neck``."""
    model.backbone.register_forward_hook(model.adapters["backbone"].hook)
    model.neck.register_forward_hook(model.adapters["neck"].hook)


def _trained_keys(model: nn.Module) -> tuple[str, ...]:
    """State-dict names of the trainable parameters and of the running statistics of the
    BatchNorms that train."""
    keys = [n for n, p in model.named_parameters() if p.requires_grad]
    for name, m in model.named_modules():
        if (isinstance(m, nn.modules.batchnorm._BatchNorm)
                and not isinstance(m, FrozenBatchNorm2d)
                and any(p.requires_grad for p in m.parameters(recurse=False))):
            keys += [f"{name}.{b}" for b, t in m.named_buffers(recurse=False) if t is not None]
    return tuple(sorted(set(keys)))


def checkpoint_state(model: nn.Module) -> dict[str, Tensor]:
    """What a checkpoint of ``model`` holds: its whole state dict, or for an adapted model
    only the tensors it trains (``model.trained_keys``)."""
    state = model.state_dict()
    keys = getattr(model, "trained_keys", None)
    return state if keys is None else {k: state[k] for k in keys}


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its layer, in place: plain ``nn.Conv2d`` / ``nn.Linear``
    modules with the same outputs to float rounding, and no extra cost at inference. A model
    adapted with ``lora`` is a plain model afterwards (``adapter_config`` and ``trained_keys``
    removed). Returns the number of layers merged."""
    merged = _swap(model, lambda n, m: isinstance(m, (LoRAConv2d, LoRALinear)),
                   lambda m: m.merged())
    cfg = getattr(model, "adapter_config", None)
    if cfg is not None and cfg.kind == "lora":
        del model.adapter_config, model.trained_keys
    return len(merged)


# ---- starting from trained weights --------------------------------------------------------------

@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: state-dict names loaded, rebuilt (class layers kept
    at their fresh initialisation) and skipped (in the checkpoint, not in the model)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def rebuilt_modules(self) -> tuple[str, ...]:
        """The modules owning the rebuilt tensors (trained in full when adapting)."""
        return tuple(sorted({k.rpartition(".")[0] for k in self.rebuilt}))

    def line(self) -> str:
        def some(keys: list[str]) -> str:
            return f" ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''})" if keys else ""

        return (f"weights {self.source}: loaded {len(self.loaded)} tensors, rebuilt "
                f"{len(self.rebuilt)} for the new classes{some(self.rebuilt)}, skipped "
                f"{len(self.skipped)}{some(self.skipped)}")


def class_dependent_keys(model: nn.Module) -> set[str]:
    """State-dict names of ``model`` whose shape depends on the class count: those that
    change when its config is built with one class more (on the meta device where the
    model's constructor allows it, else on the CPU; the random state is left as it was).
    Empty for a model without a ``config``."""
    from scaledet.models.factory import build_from_config

    cfg = getattr(model, "config", None)
    if cfg is None:
        return set()
    cfg = dataclasses.replace(cfg, num_classes=cfg.num_classes + 1)
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                probe = build_from_config(cfg)
        except (RuntimeError, NotImplementedError):  # a constructor that reads a value
            probe = build_from_config(cfg)
    ref = model.state_dict()
    return {k for k, v in probe.state_dict().items()
            if k in ref and tuple(v.shape) != tuple(ref[k].shape)}


def _is_adapter_tensor(name: str) -> bool:
    """Whether the state-dict name ``name`` is a tensor :func:`apply_adapters` adds."""
    leaf = name.rsplit(".", 1)[-1]
    return (name.startswith("adapters.") or leaf in ("prefix_k", "prefix_v")
            or leaf.startswith("lora_"))


def load_pretrained(model: nn.Module, state: dict[str, Tensor], *, source: str,
                    same_classes: bool = True) -> LoadReport:
    """Load the trained ``state`` into ``model`` (in place) for fine-tuning.

    Class layers (:func:`class_dependent_keys`) keep the model's fresh initialisation when
    their shapes differ or ``same_classes`` is False (another class list of the same
    length); everything else must be in ``state`` with the model's shape, or a
    ``ValueError`` naming ``source`` lists what does not match (another architecture).
    Tensors of ``state`` the model has no place for are skipped and reported, except adapter
    tensors (``adapters.*``, ``prefix_k`` / ``prefix_v``, unmerged ``lora_*``): dropping them
    would silently fine-tune the base instead of the adapted model, so they are a
    ``ValueError`` naming ``source``."""
    own = model.state_dict()
    dropped = [k for k in state if k not in own and _is_adapter_tensor(k)]
    if dropped:
        raise ValueError(f"{source}: {len(dropped)} adapter tensors ({', '.join(dropped[:3])}"
                         f"{', ...' if len(dropped) > 3 else ''}) have no place in the model "
                         "and would be dropped; start from the base model it was adapted from, "
                         "or from a LoRA checkpoint merged into plain weights")
    class_keys = class_dependent_keys(model)
    missing = [k for k in own if k not in state]
    reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    bad = [k for k in missing + reshaped if k not in class_keys]
    if bad:
        parts = []
        miss = [k for k in missing if k in bad]
        if miss:
            parts.append(f"{len(miss)} tensors of the model are not in it ({', '.join(miss[:4])}"
                         f"{', ...' if len(miss) > 4 else ''})")
        diff = [k for k in reshaped if k in bad]
        if diff:
            parts.append(f"{len(diff)} have another shape (" + ", ".join(
                f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
                for k in diff[:3]) + (", ..." if len(diff) > 3 else "") + ")")
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise ValueError(f"{source}: the checkpoint's architecture does not match the model "
                         f"({name}): {'; '.join(parts)}")
    report = LoadReport(source=source)
    report.rebuilt = sorted(k for k in class_keys if k in own and (
        not same_classes or k not in state or tuple(state[k].shape) != tuple(own[k].shape)))
    load = {k: v for k, v in state.items() if k in own and k not in report.rebuilt}
    model.load_state_dict(load, strict=False)
    report.loaded = sorted(load)
    report.skipped = sorted(k for k in state if k not in own)
    return report

