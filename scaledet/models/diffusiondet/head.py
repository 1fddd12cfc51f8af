"""DiffusionDet (Chen et al., "DiffusionDet: Diffusion Model for Object Detection", ICCV 2023)
as a head of scaledet's :class:`~scaledet.models.detector.Detector`, with a rectified-flow
variant of the same head.

Detection as denoising of a box set. Training: each image's ground truths are padded with
random boxes to ``N`` (:func:`~scaledet.models.diffusiondet.boxes.pad_boxes`), scaled to the
signal range, corrupted to a random noise level, and the head — iterative stages of dynamic
interaction on RoI features of the noisy boxes, conditioned on the noise level
(:mod:`~scaledet.models.diffusiondet.stage`) — predicts the clean boxes and their classes; the
set loss (:mod:`scaledet.models.detr`) is summed over the stages, each matched on its own,
one-to-one (Hungarian) or, as the paper trains, one object to a dynamic number of boxes
(:class:`~scaledet.models.diffusiondet.matcher.DynamicKMatcher`).

- ``objective="ddpm"``: ``x_t ~ q(x_t | x_0)`` with the cosine schedule at an integer
  ``t ~ U{0 .. T-1}``; inference samples with DDIM.
- ``objective="flow"``: the straight path ``x_s = (1 - s) noise + s x_0`` at a path time ``s``
  drawn by :func:`~scaledet.nn.diffusion.flow_times` (``flow_time``: uniform, logit-normal or
  the cosine schedule's mix of noise levels), conditioned on the noise time ``(1 - s) T``;
  inference takes Euler steps along the velocity the predicted ``x_0`` implies.

Inference starts from ``num_boxes`` Gaussian boxes drawn from a generator seeded with
``seed`` (so results are reproducible), takes ``steps`` sampler steps with box renewal
between them and returns the last step's boxes, or with ``ensemble`` every step's boxes
together for the detector's class-wise NMS (the paper's ensemble over steps). ``num_boxes``,
``steps``, ``seed``, ``eta``, ``renewal_threshold`` and ``ensemble`` are plain attributes:
inference options, free to change on a trained model
(:func:`~scaledet.models.options.set_inference_options`, ``--set head.steps=4`` of ``scaledet
predict`` / ``val``). The noise is one draw shared by the images of a batch, so an image's
detections do not depend on the batch it is in.

Boxes: inputs and outputs in xyxy pixels of the padded input; inside, normalised ``cxcywh``
and the signal ``(2 b - 1) signal_scale``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from scaledet.models.detr.criterion import SetLossWeights, mean_over_ranks, set_loss
from scaledet.models.detr.matcher import HungarianMatcher
from scaledet.models.diffusiondet.boxes import (
    box_to_signal,
    pad_boxes,
    signal_to_box,
    to_normalised,
    to_pixels,
)
from scaledet.models.diffusiondet.matcher import DynamicKMatcher
from scaledet.models.diffusiondet.roi import (
    feature_table,
    multiscale_roi_align,
    multiscale_roi_sample,
)
from scaledet.models.diffusiondet.sampler import ddim_boxes, draw_noise, euler_boxes
from scaledet.models.diffusiondet.stage import DenoisingStage, TimeEmbedding
from scaledet.nn.diffusion import FLOW_TIMES, NoiseSchedule, flow_interpolate, flow_times

OBJECTIVES = ("ddpm", "flow")
SAMPLERS = {"ddpm": ("ddim",), "flow": ("euler",)}


class DiffusionDetHead(nn.Module):
    """Box-denoising set head; see the module docstring.

    Args:
        num_classes: foreground classes (sigmoid scores).
        in_channels: channels of every neck level; ``strides``: their strides, finest first.
        hidden_dim: width ``d`` of the proposal features; ``num_heads``: self-attention heads.
        num_stages: iterative refinement stages; ``ffn_dim``, ``dynamic_dim``: their FFN and
            dynamic-interaction widths; ``pooler_size``: ``S`` of the ``S x S`` RoI crops,
            each bin the mean of ``sampling_ratio^2`` bilinear samples (1 by default: small
            objects span few feature cells, so a bin is smaller than a cell, and the RoI
            pooling's cost grows with the samples).
        objective: ``"ddpm"`` or ``"flow"``; ``flow_time``: how the flow objective draws its
            training times (:data:`~scaledet.nn.diffusion.FLOW_TIMES`).
        num_train_boxes: ``N`` of training (ground truths plus padding boxes).
        signal_scale: the box signal's range ``[-scale, scale]``.
        num_train_steps: ``T`` of the DDPM schedule (and the flow's time-embedding scale).
        schedule: the DDPM ``betas`` (``"cosine"`` or ``"linear"``).
        matcher, loss_weights: the training matcher (:class:`HungarianMatcher`, one-to-one,
            by default; :class:`DynamicKMatcher`, one-to-many) and set-loss weights.
        prior_prob: initial foreground probability.
        lr_scale: learning-rate multiplier of the head (read by the optimizer): attention and
            dynamic layers want a fraction of the presets' convolutional rate.
        aux_head: a dense head (:class:`~scaledet.models.heads.fcos.FCOSHead`) trained beside
            the stages with its own one-to-many assignment, as Co-DETR's auxiliary heads: the
            backbone and neck get thousands of positives per image from the first step
            instead of the stages' few, and learn as fast as the dense detector's; it has no
            part in inference. ``aux_loss_weight`` weighs its loss.
        num_boxes, steps, seed, sampler, eta, renewal_threshold, ensemble: inference options
            (``sampler``: ``"ddim"`` for ``ddpm``, ``"euler"`` for ``flow``;
            ``renewal_threshold`` None or 0: no renewal).
    """

    def __init__(self, *, num_classes: int, in_channels: int, strides: Sequence[int],
                 hidden_dim: int = 64, num_heads: int = 4, num_stages: int = 3,
                 ffn_dim: int = 256, dynamic_dim: int = 16, pooler_size: int = 7,
                 sampling_ratio: int = 1,
                 objective: str = "ddpm", flow_time: str = "uniform",
                 num_train_boxes: int = 100,
                 signal_scale: float = 2.0, num_train_steps: int = 1000,
                 schedule: str = "cosine",
                 matcher: HungarianMatcher | DynamicKMatcher | None = None,
                 loss_weights: SetLossWeights | None = None, prior_prob: float = 0.01,
                 lr_scale: float = 0.05, num_boxes: int = 100, steps: int = 1, seed: int = 0,
                 sampler: str = "ddim", eta: float = 0.0,
                 renewal_threshold: float | None = 0.5, ensemble: bool = True,
                 aux_head: nn.Module | None = None, aux_loss_weight: float = 1.0) -> None:
        super().__init__()
        check_options(objective, sampler, num_boxes, steps, eta, flow_time)
        self.num_classes, self.strides = num_classes, tuple(int(s) for s in strides)
        self.objective, self.flow_time = objective, flow_time
        self.num_train_boxes = num_train_boxes
        self.signal_scale = signal_scale
        self.schedule = NoiseSchedule(num_train_steps, schedule)
        self.matcher = matcher or HungarianMatcher()
        self.loss_weights = loss_weights or SetLossWeights()
        self.num_boxes, self.steps, self.seed, self.sampler = num_boxes, steps, seed, sampler
        self.eta, self.renewal_threshold, self.ensemble = eta, renewal_threshold, ensemble
        d = hidden_dim
        self.input_proj = nn.ModuleList(
            nn.Identity() if in_channels == d else nn.Conv2d(in_channels, d, 1)
            for _ in self.strides)
        self.pooler_size, self.sampling_ratio = pooler_size, sampling_ratio
        self.time_embed = TimeEmbedding(d)
        self.stages = nn.ModuleList(
            DenoisingStage(num_classes, d, num_heads, ffn_dim, dynamic_dim, pooler_size,
                           prior_prob) for _ in range(num_stages))
        self.lr_scale = lr_scale
        self.aux_head, self.aux_loss_weight = aux_head, aux_loss_weight
        if aux_head is not None:
            aux_head.lr_scale = 1.0  # convolutions: the presets' full rate

    # ---- the Detector interface: forward -> (loss | predict) --------------------------------

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor]]:
        """The neck levels, projected to ``hidden_dim``: the denoising runs in :meth:`loss`
        (on noised ground truths) and :meth:`predict` (the sampler)."""
        return ([proj(f) for proj, f in zip(self.input_proj, feats)],)

    def loss(self, feats: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        """Set loss of every stage's prediction from noised, padded ground truths.

        ``targets``: per image ``boxes (M, 4)`` xyxy pixels, ``labels (M,)``. Returns
        ``loss_cls`` (varifocal) and ``loss_box`` (L1 + GIoU on normalised ``cxcywh``) summed
        over the stages, and their sum ``loss``. Each stage's terms are divided by its matched
        pairs (the objects, one-to-one; more with the dynamic-k matcher) averaged over the
        data-parallel ranks, at least 1. With an auxiliary dense head, its weighted loss is
        ``loss_aux``, part of ``loss``.
        """
        size = self._input_size(feats)
        norm_targets = [{"boxes": to_normalised(t["boxes"], size), "labels": t["labels"]}
                        for t in targets]
        x0 = box_to_signal(torch.stack([pad_boxes(t["boxes"], self.num_train_boxes)
                                        for t in norm_targets]), self.signal_scale)  # (B, N, 4)
        noise = torch.randn_like(x0)
        b = x0.shape[0]
        if self.objective == "ddpm":
            t = torch.randint(0, self.schedule.num_steps, (b,), device=x0.device)
            x_t, time = self.schedule.q_sample(x0, t, noise), t.float()
        else:
            s = flow_times(b, self.flow_time, device=x0.device)
            x_t, time = flow_interpolate(noise, x0, s)[0], (1 - s) * self.schedule.num_steps
        losses = {"loss_cls": x0.new_zeros(()), "loss_box": x0.new_zeros(())}
        for logits, boxes in self.denoise(feats, x_t, time, size):
            pred = to_normalised(boxes, size)  # (B, N, 4) cxcywh
            indices = self.matcher(logits, pred, norm_targets)
            num_boxes = mean_over_ranks(sum(len(i) for i, _ in indices), x0.device)
            terms = set_loss(logits, pred, norm_targets, indices, num_boxes, self.loss_weights)
            losses["loss_cls"] = losses["loss_cls"] + terms["vfl"]
            losses["loss_box"] = losses["loss_box"] + terms["l1"] + terms["giou"]
        if self.aux_head is not None:
            dense = self.aux_head.loss(*self.aux_head(feats), targets)["loss"]
            losses["loss_aux"] = self.aux_loss_weight * dense
        losses["loss"] = sum(losses.values())
        return losses

    @torch.no_grad()
    def predict(self, feats: list[Tensor]) -> tuple[Tensor, Tensor, list[int]]:
        """Sample boxes from noise (see the module docstring).

        Returns boxes ``(B, P, 4)`` xyxy pixels of the padded input, scores ``(B, P, C)``
        (float32) and the candidate counts: ``P = num_boxes`` (``[num_boxes]``), or with the
        ensemble ``P = steps * num_boxes`` (``[num_boxes] * steps``, one group per step).
        """
        size = self._input_size(feats)
        generator = torch.Generator().manual_seed(int(self.seed))  # on the CPU: same boxes anywhere
        # One draw shared by the images of a batch: an image's detections do not depend on
        # its place in the batch, and a traced graph's noise fits any batch size.
        x = draw_noise((1, self.num_boxes, 4), generator, feats[0].device)
        x = x.expand(feats[0].shape[0], -1, -1)  # (B, N, 4)

        def denoise_last(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            logits, boxes = self.denoise(feats, x, t, size)[-1]
            x0 = box_to_signal(to_normalised(boxes, size), self.signal_scale)
            return logits.float().sigmoid(), boxes.float(), x0.clamp(-self.signal_scale,
                                                                       self.signal_scale)

        check_options(self.objective, self.sampler, self.num_boxes, self.steps, self.eta,
                      self.flow_time)
        if self.sampler == "ddim":
            outs = ddim_boxes(denoise_last, self.schedule, x, self.steps, self.eta,
                              self.renewal_threshold, generator)
        else:
            outs = euler_boxes(denoise_last, self.schedule.num_steps, x, self.steps,
                               self.renewal_threshold, generator)
        if not self.ensemble:
            outs = outs[-1:]
        boxes = torch.cat([o[0] for o in outs], dim=1)
        scores = torch.cat([o[1] for o in outs], dim=1)
        return boxes, scores, [self.num_boxes] * len(outs)

    def describe_inference(self) -> str:
        """How :meth:`predict` samples, in one line, e.g. ``"ddim sampler, 1 step, 100 boxes,
        box renewal at score 0.5, ensemble over steps, noise seed 0"``."""
        renewal = (f"box renewal at score {self.renewal_threshold:g}"
                   if self.renewal_threshold else "no box renewal")
        eta = f" (eta {self.eta:g})" if self.sampler == "ddim" and self.eta else ""
        return (f"{self.sampler} sampler{eta}, {self.steps} step{'s' * (self.steps != 1)}, "
                f"{self.num_boxes} boxes, {renewal}, "
                f"{'ensemble over steps' if self.ensemble else 'last step only'}, "
                f"noise seed {self.seed}")

    # ---- the denoiser -----------------------------------------------------------------------

    def denoise(self, feats: list[Tensor], x: Tensor, time: Tensor, size: Tensor
                ) -> list[tuple[Tensor, Tensor]]:
        """Every stage's prediction for the box signals ``x`` ``(B, N, 4)`` at noise times
        ``time`` ``(B,)``: ``(logits (B, N, C), boxes (B, N, 4) xyxy pixels)`` per stage, each
        stage refining the previous one's (detached) boxes."""
        boxes = to_pixels(signal_to_box(x.float(), self.signal_scale), size)  # (B, N, 4)
        time = self.time_embed(time)  # (B, 4 d)
        table = None if _exporting() else feature_table(feats)  # (B*T, d), read by every stage
        proposals, outs = None, []
        for stage in self.stages:
            roi = self._roi_features(feats, boxes, table)  # (B*N, S*S, d)
            logits, refined, proposals = stage(roi, boxes, proposals, time)
            outs.append((logits, refined))
            boxes = refined.detach()
        return outs

    def _roi_features(self, feats: list[Tensor], boxes: Tensor, table: Tensor | None
                      ) -> Tensor:
        """RoI features ``(B*N, S*S, d)`` of ``boxes`` ``(B, N, 4)`` xyxy pixels: the sparse
        product of :func:`multiscale_roi_sample` over ``table`` (:func:`feature_table` of
        ``feats``), or ``roi_align`` (same numbers) in a graph traced for export, which has no
        sparse operators."""
        if _exporting():
            roi = multiscale_roi_align(feats, boxes, self.strides, self.pooler_size,
                                       self.sampling_ratio)  # (B*N, d, S, S)
            return roi.flatten(2).transpose(1, 2)
        return multiscale_roi_sample(feats, boxes, self.strides, self.pooler_size,
                                     self.sampling_ratio, table)

    def _input_size(self, feats: Sequence[Tensor]) -> Tensor:
        """``(W, H, W, H)`` float32 of the padded input, from the finest level (built from
        the traced shape, so that an exported graph with a free image size follows it)."""
        hw = torch._shape_as_tensor(feats[0])[-2:].to(feats[0].device) * self.strides[0]
        return torch.stack([hw[1], hw[0], hw[1], hw[0]]).float()


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def check_options(objective: str, sampler: str, num_boxes: int, steps: int,
                  eta: float, flow_time: str = "uniform") -> None:
    """``ValueError`` naming the option for an unknown objective or flow-time distribution, a
    sampler that does not fit the objective, or out-of-range inference numbers."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if flow_time not in FLOW_TIMES:
        raise ValueError(f"flow_time must be one of {FLOW_TIMES}, got {flow_time!r}")
    if sampler not in SAMPLERS[objective]:
        raise ValueError(f"sampler must be one of {SAMPLERS[objective]} for objective "
                         f"{objective!r}, got {sampler!r}")
    if num_boxes < 1 or steps < 1:
        raise ValueError(f"num_boxes and steps must be at least 1, got {num_boxes}, {steps}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")


__all__ = ["OBJECTIVES", "SAMPLERS", "DiffusionDetHead", "check_options"]
