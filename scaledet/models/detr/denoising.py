"""Contrastive denoising queries (DN-DETR, Li et al. 2022; DINO, Zhang et al. 2023).

During training, noised copies of the ground truths are fed to the decoder beside the
matching queries; they must be reconstructed (positives: a little box noise, possibly a wrong
label) or rejected (negatives: more box noise), which gives the decoder a stable one-to-one
target from the first step instead of the Hungarian matching's shifting one. An attention mask
keeps the groups from seeing each other and the matching queries from seeing any of them (the
answers would leak).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scaledet.ops import box_convert


@dataclass
class DenoisingQueries:
    """The denoising part of the decoder's input.

    Attributes:
        labels: ``(B, D)`` int64 (possibly flipped) class of each query; ``num_classes`` marks
            padding.
        boxes: ``(B, D, 4)`` noised boxes, normalised ``cxcywh``.
        attn_mask: ``(D + Q, D + Q)`` bool, True where a query may NOT attend (the denoising
            queries come first, then the ``Q`` matching queries).
        indices: per image ``(query_index, gt_index)`` of the positives (every group).
        groups: number of groups; each holds ``2 * max_objects`` queries (positives, then
            negatives).
    """

    labels: Tensor
    boxes: Tensor
    attn_mask: Tensor
    indices: list[tuple[Tensor, Tensor]]
    groups: int


def make_denoising_queries(targets: Sequence[dict], num_classes: int, num_queries: int,
                           num_denoising: int, label_noise: float = 0.5, box_noise: float = 1.0,
                           generator: torch.Generator | None = None) -> DenoisingQueries | None:
    """Build the denoising groups of a batch.

    Args:
        targets: per image ``boxes (N_i, 4)`` normalised ``cxcywh``, ``labels (N_i,)``.
        num_classes: foreground classes (the padding label is ``num_classes``).
        num_queries: the number ``Q`` of matching queries that follow.
        num_denoising: budget of denoising queries; ``num_denoising // max_i N_i`` groups (at
            least one) of ``2 max_i N_i`` queries each.
        label_noise: a positive's label is replaced by a random class with probability
            ``label_noise / 2`` (DINO's rate; unlike DINO, negatives keep their true label:
            they must be rejected for their box alone).
        box_noise: corners move by up to ``box_noise`` times half the box's width / height:
            positives by a fraction in ``[0, 1)`` of that, negatives in ``[1, 2)``.

    Returns:
        :class:`DenoisingQueries`, or ``None`` when no image has an object.
    """
    counts = [len(t["labels"]) for t in targets]
    most = max(counts, default=0)
    if most == 0 or num_denoising <= 0:
        return None
    device = targets[0]["boxes"].device
    groups = max(1, num_denoising // most)
    b, per_group = len(targets), 2 * most
    d = groups * per_group
    labels = torch.full((b, d), num_classes, dtype=torch.int64, device=device)
    boxes = torch.zeros(b, d, 4, device=device)
    indices = []
    for i, t in enumerate(targets):
        n = counts[i]
        slots = torch.arange(groups, device=device)[:, None] * per_group  # (G, 1)
        pos = (slots + torch.arange(n, device=device)[None]).flatten()  # (G*n,)
        neg = pos + most
        gt_labels = t["labels"].long().repeat(groups)
        flip = _rand((groups * n,), generator, device) < label_noise * 0.5
        random_labels = _randint(num_classes, (groups * n,), generator, device)
        labels[i, pos] = torch.where(flip, random_labels, gt_labels)
        labels[i, neg] = gt_labels
        gt = t["boxes"].float().repeat(groups, 1)  # (G*n, 4)
        boxes[i, pos] = _jitter(gt, box_noise, 0.0, generator)
        boxes[i, neg] = _jitter(gt, box_noise, 1.0, generator)
        indices.append((pos, torch.arange(n, device=device).repeat(groups)))
    mask = torch.zeros(d + num_queries, d + num_queries, dtype=torch.bool, device=device)
    mask[d:, :d] = True  # matching queries never see the answers
    for g in range(groups):
        lo, hi = g * per_group, (g + 1) * per_group
        mask[lo:hi, :lo] = True
        mask[lo:hi, hi:d] = True
    return DenoisingQueries(labels, boxes, mask, indices, groups)


def _jitter(cxcywh: Tensor, scale: float, base: float, generator: torch.Generator | None
            ) -> Tensor:
    """Move each corner by ``sign * (base + U[0, 1)) * scale * half the box side``."""
    xyxy = box_convert(cxcywh, "cxcywh", "xyxy")
    half = torch.cat([cxcywh[:, 2:], cxcywh[:, 2:]], dim=1) * 0.5 * scale
    sign = _rand(xyxy.shape, generator, xyxy.device).round() * 2 - 1
    amount = _rand(xyxy.shape, generator, xyxy.device) + base
    xyxy = (xyxy + sign * amount * half).clamp(0.0, 1.0)
    out = box_convert(xyxy, "xyxy", "cxcywh")
    return out.clamp(min=1e-4)  # a degenerate noised box keeps a tiny positive size


def _rand(shape, generator, device) -> Tensor:
    return torch.rand(shape, generator=generator, device=device)


def _randint(high: int, shape, generator, device) -> Tensor:
    return torch.randint(0, high, shape, generator=generator, device=device)
