"""``scaledet info``: parameters, FLOPs, and the theoretical receptive field and stride of every
output level of a model preset; for a top-down pose model, parameters and FLOPs per person crop
(:func:`format_pose_info`, at the model's ``(H, W)`` crop size rather than a square ``imgsz``).

FLOPs are counted, not estimated: one forward of :meth:`Detector.predict_raw` (network and box
decoding, no NMS) on a single ``imgsz x imgsz`` image under
``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-add of
convolutions and matrix products (the convention behind "8.7 GFLOPs" for YOLOv8n at 640 px) and
ignores element-wise ops. Receptive fields come from :func:`scaledet.ops.receptive_field`,
traced through the whole detector up to each level's predictions (classification and
regression together).

Every function here takes ``imgsz`` through :func:`~scaledet.models.sizes.check_imgsz`: a side
that is not a multiple of the model's largest stride is measured at the next multiple (the size
the detector pads it to anyway), and :func:`format_info` prints that size, not the one asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from scaledet.models.detector import Detector
from scaledet.models.keypoints.heads import HeatmapHead
from scaledet.models.keypoints.pose import PoseModel
from scaledet.models.sizes import check_imgsz, model_stride
from scaledet.ops import RFLayer, receptive_field, receptive_field_table


@dataclass(frozen=True)
class LevelInfo:
    """One output level: ``stride`` (input pixels between neighbouring locations),
    ``receptive_field`` (pixels) and map ``size``, each ``(height, width)``."""

    stride: tuple[float, float]
    receptive_field: tuple[float, float]
    size: tuple[int, int]


class _LevelPredictions(nn.Module):
    """``images -> [cls_l.sum(1) + reg_l.sum(1) for each level]``: one map per level whose
    receptive field is the union of both branches'. For a set-prediction head (whose output is
    not per-level maps) the levels are the neck's features it attends to."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> list[Tensor]:
        feats = self.model.features(images)
        out = self.model.head(feats)
        if len(out) != 2:
            return [f.sum(1, keepdim=True) for f in feats]
        cls_maps, reg_maps = out
        return [c.sum(1, keepdim=True) + r.sum(1, keepdim=True)
                for c, r in zip(cls_maps, reg_maps)]


def count_parameters(model: nn.Module, trainable: bool = False) -> int:
    """Parameters of ``model`` (shared ones once); ``trainable``: only those with
    ``requires_grad`` (an adapted model's adapter and rebuilt layers)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def input_side(model: Detector, imgsz: int) -> int:
    """The side the model actually runs for ``imgsz``: rounded up to a multiple of its largest
    stride (``ValueError`` below 1)."""
    return check_imgsz(imgsz, model_stride(model)).imgsz


def count_flops(model: Detector, imgsz: int) -> int:
    """FLOPs of ``model.predict_raw`` on one ``(1, 3, imgsz, imgsz)`` image (eval mode, no
    grad; the training flag is restored), ``imgsz`` as :func:`input_side` rounds it."""
    imgsz = input_side(model, imgsz)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.predict_raw(torch.zeros(1, 3, imgsz, imgsz, device=model.pixel_mean.device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def layer_fields(model: Detector, imgsz: int) -> list[RFLayer]:
    """Every conv/pool/interpolation of the detector, then one ``output[i]`` row per level, at
    ``imgsz`` as :func:`input_side` rounds it."""
    return receptive_field(_LevelPredictions(model), input_side(model, imgsz), in_channels=3)


def level_info(model: Detector, imgsz: int) -> list[LevelInfo]:
    """Receptive field, stride and size of each output level, finest first."""
    return [LevelInfo(r.jump, r.rf, r.output_size)
            for r in layer_fields(model, imgsz) if r.name.startswith("output")]


def side_text(v: tuple) -> str:
    return f"{v[0]:g}" if v[0] == v[1] else f"{v[0]:g}x{v[1]:g}"


def format_info(model: Detector, imgsz: int, *, layers: bool = False) -> str:
    """The text ``scaledet info`` prints for one model, at ``imgsz`` as :func:`input_side`
    rounds it (the size the header names)."""
    imgsz = input_side(model, imgsz)
    name = model.config.name if model.config is not None else type(model.head).__name__
    lines = [f"{name}: {model.head.num_classes} classes, {imgsz}x{imgsz} input",
             f"parameters  {count_parameters(model) / 1e6:.3f} M",
             f"FLOPs       {count_flops(model, imgsz) / 1e9:.3f} G (network + box decoding, "
             "no NMS; 2 per multiply-add)", "",
             f"{'level':>5} {'stride':>7} {'receptive field':>16} {'map':>9}"]
    rows = layer_fields(model, imgsz)
    outputs = [r for r in rows if r.name.startswith("output")]
    for i, r in enumerate(outputs):
        lines.append(f"{i:>5} {side_text(r.jump):>7} {side_text(r.rf):>16} "
                     f"{r.output_size[0]}x{r.output_size[1]:<5}")
    if layers:
        lines += ["", receptive_field_table(rows)]
    return "\n".join(lines)




# ---- pose models ---------------------------------------------------------------------------


def count_pose_flops(model: PoseModel) -> int:
    """FLOPs of a pose model's eval forward on one ``(1, 3, H, W)`` crop (``input_size``):
    network and decoding (DARK's blur convolutions count; RLE's flow never runs), flip test
    included when configured (eval mode, no grad; the training flag is restored)."""
    h, w = model.input_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, h, w, device=model.pixel_mean.device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def pose_head_text(model: PoseModel) -> str:
    """``"heatmaps 32x24 (stride 4), DARK decoding"`` or ``"RLE regression (stride-32 level
    pooled to 4x3)"``: what the head predicts, for ``scaledet info``."""
    h, w = model.input_size
    if isinstance(model.head, HeatmapHead):
        s = model.heatmap_stride
        return (f"heatmaps {round(h / s)}x{round(w / s)} (stride {s:g}), "
                f"{'DARK' if model.decode == 'dark' else 'arg-max + quarter offset'} decoding")
    ph, pw = model.head.pool
    return f"RLE regression (stride-{model.strides[-1]} level pooled to {ph}x{pw})"


def format_pose_info(model: PoseModel) -> str:
    """The text ``scaledet info`` prints for a top-down pose model: joints, crop size,
    parameters (the RLE flow's apart: they train but never run at inference) and FLOPs per
    crop."""
    h, w = model.input_size
    name = model.config.name if model.config is not None else type(model.head).__name__
    total = count_parameters(model)
    flow = getattr(model.head, "flow", None)
    flow_params = count_parameters(flow) if flow is not None else 0
    lines = [f"{name}: {model.num_keypoints} keypoints, {h}x{w} person crops (top-down pose)",
             f"parameters  {total / 1e6:.3f} M" + (
                 f" ({flow_params / 1e6:.3f} M of them the RLE flow, used only in training)"
                 if flow_params else ""),
             f"FLOPs       {count_pose_flops(model) / 1e9:.3f} G per crop (network + decoding"
             f"{', flip test' if model.flip_test else ''}; 2 per multiply-add)",
             f"head        {pose_head_text(model)}"]
    return "\n".join(lines)
