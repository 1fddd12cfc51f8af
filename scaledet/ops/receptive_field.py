"""Theoretical receptive field, jump (effective stride) and start of every layer of a CNN.

The recursion (Araujo et al., "Computing receptive fields of convolutional neural networks",
Distill 2019), per axis, for a layer with kernel k, stride s, padding p, dilation d
(effective kernel ``k_eff = d (k - 1) + 1``)::

    rf_out    = rf_in + (k_eff - 1) * jump_in
    jump_out  = jump_in * s
    start_out = start_in + ((k_eff - 1) / 2 - p) * jump_in

starting from ``rf = 1, jump = 1, start = 0.5`` on the input image. ``start`` is the centre of
the receptive field of output position 0 in continuous pixel coordinates (pixel i covers
``[i, i + 1)``), so position i of a layer is centred at ``start + i * jump``. torchvision has no
such tool.

For an ``nn.Module`` a dummy forward pass is traced at the tensor level (a
``TorchFunctionMode``): conv2d, max/avg pooling, adaptive pooling, padding and interpolation
update the field; every other op (ReLU, BatchNorm, add, cat, ...) gives its output the union of
its inputs' fields. So branches (residual blocks, FPN top-down paths, concatenations) are
handled: the field of a tensor that several paths feed is the smallest window containing every
path's field, i.e. the max over paths. Interpolation is modelled as sampling (nearest: the same
field, bilinear: one more input position), adaptive pooling as a pool of kernel
``in - (out - 1) * floor(in / out)`` and stride ``floor(in / out)``; transposed convolutions and
other spatial ops are not modelled (treated as element-wise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

Pair = tuple[int, int]


@dataclass(frozen=True)
class RFLayer:
    """One row of :func:`receptive_field`; every field is ``(height_axis, width_axis)``.

    ``rf`` (pixels), ``jump`` (input pixels between neighbouring outputs) and ``start`` (centre
    of output position 0's field, input pixels) are ints unless an interpolation made the jump
    fractional. ``output_size`` is the layer's output height and width.
    """

    name: str
    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    rf: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    output_size: Pair


@dataclass(frozen=True)
class _Field:
    rf: tuple[float, float] = (1, 1)
    jump: tuple[float, float] = (1, 1)
    start: tuple[float, float] = (0.5, 0.5)


def _pair(value, name: str = "value") -> Pair:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    if isinstance(value, Sequence) and len(value) == 1 and isinstance(value[0], int):
        return (value[0], value[0])
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def _apply(field: _Field, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> _Field:
    rf, jump, start = [], [], []
    for a in range(2):
        k_eff = dilation[a] * (kernel[a] - 1) + 1
        rf.append(field.rf[a] + (k_eff - 1) * field.jump[a])
        start.append(field.start[a] + ((k_eff - 1) / 2 - padding[a]) * field.jump[a])
        jump.append(field.jump[a] * stride[a])
    return _Field(tuple(rf), tuple(jump), tuple(_tidy(s) for s in start))


def _tidy(x: float) -> float:
    """1.0 -> 1 so integral values print as ints."""
    return int(x) if float(x).is_integer() else x


def _union(fields: list[_Field]) -> _Field:
    """Smallest field containing all of ``fields`` (the max over paths)."""
    if len(fields) == 1:
        return fields[0]
    rf, start = [], []
    for a in range(2):
        lo = min(f.start[a] - f.rf[a] / 2 for f in fields)
        hi = max(f.start[a] + f.rf[a] / 2 for f in fields)
        rf.append(_tidy(hi - lo))
        start.append(_tidy((lo + hi) / 2))
    jump = tuple(max(f.jump[a] for f in fields) for a in range(2))
    return _Field(tuple(rf), jump, tuple(start))


def receptive_field(model_or_layers: nn.Module | Sequence, input_size: int | Pair,
                    in_channels: int | None = None) -> list[RFLayer]:
    """Per-layer theoretical receptive field of a CNN.

    Args:
        model_or_layers: an ``nn.Module`` whose forward takes one ``(1, C, H, W)`` image tensor
            (traced with one dummy forward pass of zeros in eval mode under ``no_grad``;
            training flags are restored), a list of modules (run in sequence), or
            a list of ``(kernel, stride, padding[, dilation])`` specs (ints or ``(h, w)`` pairs).
        input_size: input image size, ``int`` or ``(height, width)`` pixels.
        in_channels: channels of the dummy input (default: the first Conv2d's ``in_channels``).

    Returns:
        One :class:`RFLayer` per conv/pool/interpolation call in execution order (modules
        called twice, like a head shared across FPN levels, give rows ``name#1``, ``name#2``).
        For a module, the final rows ``output``, ``output[i]`` or ``output[key]`` give the field
        of each output tensor (e.g. each FPN level).
    """
    size = _pair(input_size, "input_size")
    if isinstance(model_or_layers, nn.Module):
        return _trace(model_or_layers, size, in_channels)
    if isinstance(model_or_layers, Sequence) and model_or_layers and all(
            isinstance(m, nn.Module) for m in model_or_layers):
        return _trace(nn.Sequential(*model_or_layers), size, in_channels)
    if isinstance(model_or_layers, Sequence) and not isinstance(model_or_layers, str):
        return _from_specs(model_or_layers, size)
    raise ValueError("model_or_layers must be an nn.Module or a list of "
                     f"(kernel, stride, padding[, dilation]) specs, got {type(model_or_layers)}")


def _from_specs(specs: Sequence, size: Pair) -> list[RFLayer]:
    rows, field = [], _Field()
    for i, spec in enumerate(specs):
        if not isinstance(spec, Sequence) or len(spec) not in (3, 4):
            raise ValueError(f"layer {i} must be (kernel, stride, padding[, dilation]), "
                             f"got {spec!r}")
        kernel, stride, padding = (_pair(v, f"layer {i}") for v in spec[:3])
        dilation = _pair(spec[3], f"layer {i}") if len(spec) == 4 else (1, 1)
        size = tuple((size[a] + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1)
                     // stride[a] + 1 for a in range(2))
        if min(size) < 1:
            raise ValueError(f"layer {i} {spec!r}: the output would be empty ({size})")
        field = _apply(field, kernel, stride, padding, dilation)
        rows.append(RFLayer(f"layer{i}", kernel, stride, padding, dilation, field.rf,
                            field.jump, field.start, size))
    return rows


def _trace(model: nn.Module, size: Pair, in_channels: int | None) -> list[RFLayer]:
    param = next(model.parameters(), None)
    if in_channels is None:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        in_channels = conv.in_channels if conv is not None else 3
    x = torch.zeros(1, in_channels, *size, device=param.device if param is not None else None,
                    dtype=param.dtype if param is not None else None)
    tracer = _Tracer(x)
    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_pre_hook(tracer.enter) for m in model.modules()]
    handles += [m.register_forward_hook(tracer.leave) for m in model.modules()]
    tracer.names = {m: n for n, m in model.named_modules()}
    try:
        model.eval()
        with torch.no_grad(), tracer:
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
    return tracer.rows + tracer.output_rows(out)


def _tensors(obj) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


class _Tracer(TorchFunctionMode):
    """Attaches a field to every tensor derived from the dummy input."""

    def __init__(self, x: Tensor):
        super().__init__()
        self.fields: dict[int, tuple[Tensor, _Field]] = {id(x): (x, _Field())}  # keeps ids alive
        self.rows: list[RFLayer] = []
        self.stack: list[str] = []
        self.calls: dict[str, int] = {}
        self.names: dict[nn.Module, str] = {}

    def enter(self, module, args):
        name = self.names.get(module, type(module).__name__)
        self.stack.append((name, next(module.children(), None) is None))

    def leave(self, module, args, out):
        self.stack.pop()

    def field(self, t: Tensor) -> _Field | None:
        entry = self.fields.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [f for t in _tensors((args, kwargs)) if (f := self.field(t)) is not None]
        if not inputs:
            return out
        field = _union(inputs)
        first = args[0] if args else None
        if isinstance(first, Tensor) and first.dim() == 4 and self.field(first) is not None:
            field = self.spatial(func, args, kwargs, self.field(first), first, out) or field
        for t in _tensors(out):
            self.fields[id(t)] = (t, field)
        return out

    def spatial(self, func, args, kwargs, field, x, out) -> _Field | None:
        """The field after a spatial op (conv, pool, pad, interpolate); None for other ops."""
        name = getattr(func, "__name__", "")
        params = _layer_params(name, args, kwargs, x, out)
        if params is None:
            return None
        if params == "interpolate":
            return self.interpolate(args, kwargs, field, x, out)
        if params == "pad":  # (left, right, top, bottom): output 0 sits `top`/`left` before input 0
            pad = _arg(args, kwargs, 1, "pad")
            left, top = pad[0], (pad[2] if len(pad) >= 4 else 0)
            return _Field(field.rf, field.jump, (field.start[0] - top * field.jump[0],
                                                 field.start[1] - left * field.jump[1]))
        new = _apply(field, *params)
        self.record(name, params, new, out)
        return new

    def interpolate(self, args, kwargs, field, x, out) -> _Field:
        mode = _arg(args, kwargs, 3, "mode", "nearest")
        rf, jump, start = [], [], []
        for a in range(2):
            factor = out.shape[2 + a] / x.shape[2 + a]
            jump.append(_tidy(field.jump[a] / factor))
            if mode == "nearest":
                rf.append(field.rf[a])
                start.append(field.start[a])
            else:  # output 0 samples between inputs 0 and 1 (align_corners=False)
                rf.append(_tidy(field.rf[a] + field.jump[a]))
                start.append(_tidy(field.start[a] + (0.5 / factor - 0.5) * field.jump[a]))
        new = _Field(tuple(rf), tuple(jump), tuple(start))
        self.record(f"interpolate_{mode}", ((1, 1), (1, 1), (0, 0), (1, 1)), new, out)
        return new

    def record(self, op: str, params, field: _Field, out: Tensor) -> None:
        # a leaf module's own op is named after the module; a functional call inside a
        # composite module's forward (F.interpolate in an FPN) after the module and the op
        module, leaf = self.stack[-1] if self.stack else ("", False)
        name = module if leaf and module else f"{module}.{op}" if module else op
        count = self.calls[name] = self.calls.get(name, 0) + 1
        if count == 2:  # rename the first call too
            self.rows = [r if r.name != name else _renamed(r, f"{name}#1") for r in self.rows]
        label = f"{name}#{count}" if count > 1 else name
        kernel, stride, padding, dilation = params
        self.rows.append(RFLayer(label, kernel, stride, padding, dilation, field.rf, field.jump,
                                 field.start, (int(out.shape[-2]), int(out.shape[-1]))))

    def output_rows(self, out) -> list[RFLayer]:
        if isinstance(out, Tensor):
            named = [("output", out)]
        elif isinstance(out, dict):
            named = [(f"output[{k!r}]", v) for k, v in out.items()]
        elif isinstance(out, (list, tuple)):
            named = [(f"output[{i}]", v) for i, v in enumerate(out)]
        else:
            named = []
        rows = []
        for name, t in named:
            field = self.field(t) if isinstance(t, Tensor) and t.dim() == 4 else None
            if field is not None:
                rows.append(RFLayer(name, (1, 1), (1, 1), (0, 0), (1, 1), field.rf, field.jump,
                                    field.start, (int(t.shape[-2]), int(t.shape[-1]))))
        return rows


def _renamed(row: RFLayer, name: str) -> RFLayer:
    return RFLayer(name, row.kernel, row.stride, row.padding, row.dilation, row.rf, row.jump,
                   row.start, row.output_size)


def _layer_params(name: str, args, kwargs, x: Tensor, out):
    """(kernel, stride, padding, dilation) of a spatial op, "pad"/"interpolate", or None."""
    if name == "conv2d":
        weight = _arg(args, kwargs, 1, "weight")
        kernel = (int(weight.shape[-2]), int(weight.shape[-1]))
        stride = _pair(_arg(args, kwargs, 3, "stride", 1))
        dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
        padding = _arg(args, kwargs, 4, "padding", 0)
        if isinstance(padding, str):  # "valid" or "same" (stride 1; extra pad goes right/bottom)
            padding = (0, 0) if padding == "valid" else tuple(
                (dilation[a] * (kernel[a] - 1)) // 2 for a in range(2))
        return kernel, stride, _pair(padding), dilation
    if name in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        kernel = _pair(_arg(args, kwargs, 1, "kernel_size"))
        stride = _arg(args, kwargs, 2, "stride", None)
        stride = kernel if stride is None or stride == [] else _pair(stride)
        padding = _pair(_arg(args, kwargs, 3, "padding", 0))
        dilation = _pair(_arg(args, kwargs, 4, "dilation", 1)) if "max" in name else (1, 1)
        return kernel, stride, padding, dilation
    if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
                "_adaptive_max_pool2d"):
        result = out[0] if isinstance(out, tuple) else out
        size_in, size_out = x.shape[-2:], result.shape[-2:]
        stride = tuple(max(1, size_in[a] // size_out[a]) for a in range(2))
        kernel = tuple(size_in[a] - (size_out[a] - 1) * stride[a] for a in range(2))
        return kernel, stride, (0, 0), (1, 1)
    if name == "pad":
        return "pad"
    if name == "interpolate":
        return "interpolate"
    return None


def receptive_field_table(rows: list[RFLayer]) -> str:
    """The rows as an aligned text table (one line per layer), for printing."""
    header = f"{'layer':<32} {'kernel':>7} {'stride':>6} {'pad':>4} {'dil':>4} " \
             f"{'rf':>7} {'jump':>6} {'start':>7} {'out':>9}"
    lines = [header]
    for r in rows:
        def sq(v):
            return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"
        lines.append(f"{r.name[:32]:<32} {sq(r.kernel):>7} {sq(r.stride):>6} {sq(r.padding):>4} "
                     f"{sq(r.dilation):>4} {sq(r.rf):>7} {sq(r.jump):>6} {sq(r.start):>7} "
                     f"{r.output_size[0]}x{r.output_size[1]:<5}")
    return "\n".join(lines)

