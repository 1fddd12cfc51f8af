"""FCOS head with a keypoint branch: every box also gets ``K`` keypoints (RetinaFace's five
face landmarks, SCRFD's keypoint head, YOLO-pose's joints), for any ``K``.

Per location, a ``1x1`` (``3x3`` when the tower is dense) conv on the regression tower predicts
``K`` offsets ``(dx, dy)`` of the keypoints from the location's centre, in units of the level's
stride (:class:`~scaledet.models.box_coders.PointOffsetCoder`, RetinaFace / SCRFD), and ``K``
visibility logits. The branch trains on exactly the positive locations the box assigner picked,
each on the keypoints of its own object:

* offsets: smooth-L1 (``beta = 1/9`` stride) on the keypoints labelled visible (``v > 0``
  after the augmentations; a point moved out of the image has ``v = 0``), summed over x and y
  and averaged over the visible keypoints of the batch. Smooth-L1 as RetinaFace and SCRFD
  rather than YOLO-pose's OKS loss, because OKS needs a per-keypoint sigma table that exists
  for COCO's 17 joints but not for an arbitrary ``K`` (nor a standard one for face landmarks);
  stride units already make the target's scale follow the object's size, since the assigner
  puts an object on the level whose stride suits it.
* visibility: binary cross-entropy of the logits against ``v > 0``, on the positives whose
  object has at least one labelled keypoint (objects with none, e.g. faces too small to be
  labelled, are not evidence of invisible points).

At inference a detection's keypoints are the decoded offsets of the location it came from,
``(x, y)`` input pixels, with ``sigmoid(visibility)`` as each point's score; they follow the
box through NMS and top-k (:func:`~scaledet.models.heads.dense.postprocess`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.models.box_coders import PointOffsetCoder
from scaledet.models.heads.dense import flatten_levels
from scaledet.models.heads.fcos import FCOSHead, Positives

SMOOTH_L1_BETA = 1.0 / 9.0
"""Where the offset loss turns from quadratic to linear, in strides (SCRFD's)."""


def pad_keypoints(targets: Sequence[dict], num_keypoints: int, num_objects: int,
                  device: torch.device) -> Tensor:
    """``(B, N, K, 3)`` float32 ``x, y, v`` of every image's objects padded to ``num_objects``
    (the ``N`` of :func:`~scaledet.models.heads.dense.pad_targets`); images without
    ``keypoints`` and the padding get ``v = 0``."""
    out = torch.zeros(len(targets), num_objects, num_keypoints, 3, device=device)
    for i, t in enumerate(targets):
        kp = t.get("keypoints")
        if kp is None or not len(kp):
            continue
        if kp.shape[1:] != (num_keypoints, 3):
            raise ValueError(f"targets[{i}]['keypoints'] must be (N, {num_keypoints}, 3), got "
                             f"{tuple(kp.shape)}")
        out[i, : len(kp)] = kp.to(device=device, dtype=torch.float32)
    return out


class KeypointFCOSHead(FCOSHead):
    """:class:`~scaledet.models.heads.fcos.FCOSHead` plus ``num_keypoints`` keypoints per box
    (see the module docstring).

    Args:
        num_keypoints: ``K >= 1``.
        keypoint_loss_weight: weight of the offset loss (``loss_kpt``).
        visibility_loss_weight: weight of the visibility loss (``loss_kpt_vis``).
        **fcos_args: the arguments of :class:`~scaledet.models.heads.fcos.FCOSHead`.
    """

    def __init__(self, *, num_keypoints: int, keypoint_loss_weight: float = 0.1,
                 visibility_loss_weight: float = 0.5, **fcos_args) -> None:
        super().__init__(**fcos_args)
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        self.num_keypoints = int(num_keypoints)
        self.keypoint_loss_weight = keypoint_loss_weight
        self.visibility_loss_weight = visibility_loss_weight
        r = self.reg_pred
        # 2K offsets (x, y interleaved per keypoint), then K visibility logits.
        self.kpt_pred = nn.Conv2d(r.in_channels, 3 * self.num_keypoints, r.kernel_size,
                                  padding=r.padding)
        nn.init.normal_(self.kpt_pred.weight, std=0.01)
        nn.init.zeros_(self.kpt_pred.bias)
        self.kpt_coder = PointOffsetCoder()

    def forward(self, feats: Sequence[Tensor]
                ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level: class logits and box regression as :meth:`FCOSHead.forward`, and
        keypoint maps ``(B, 3K, H_l, W_l)``: ``(dx_1, dy_1, ..., dx_K, dy_K)`` in strides,
        then ``K`` visibility logits."""
        cls_maps, reg_maps, kpt_maps = [], [], []
        for i, f in enumerate(feats):
            reg_feat = self.reg_tower(f, i)
            cls_maps.append(self.cls_pred(self.cls_tower(f, i)))
            reg_maps.append(self.reg_pred(reg_feat) * self.scales[i])
            kpt_maps.append(self.kpt_pred(reg_feat))
        return cls_maps, reg_maps, kpt_maps

    def decode_keypoints(self, points: Tensor, strides: Tensor, kpt: Tensor) -> Tensor:
        """``(B, P, 3K)`` flattened keypoint maps -> ``(B, P, K, 3)`` float32 rows ``x, y``
        (input pixels) and the visibility probability."""
        k = self.num_keypoints
        kpt = kpt.float()
        offsets = kpt[..., : 2 * k].unflatten(-1, (k, 2))  # (B, P, K, 2) strides
        xy = self.kpt_coder.decode(points, offsets, strides)  # (B, P, K, 2) pixels
        return torch.cat([xy, kpt[..., 2 * k:, None].sigmoid()], dim=-1)

    def predict(self, cls_maps: list[Tensor], reg_maps: list[Tensor], kpt_maps: list[Tensor]
                ) -> tuple[Tensor, Tensor, list[int], Tensor]:
        """:meth:`DenseHead.predict`'s ``boxes (B, P, 4)``, ``scores (B, P, C)``, locations per
        level, and ``keypoints (B, P, K, 3)`` (:meth:`decode_keypoints`). Exportable."""
        boxes, scores, sizes = super().predict(cls_maps, reg_maps)
        points, strides, _ = self.points(cls_maps)
        return boxes, scores, sizes, self.decode_keypoints(points, strides,
                                                           flatten_levels(kpt_maps))

    def loss(self, cls_maps: list[Tensor], reg_maps: list[Tensor], kpt_maps: list[Tensor],
             targets: list[dict]) -> dict[str, Tensor]:
        """:meth:`FCOSHead.loss`'s losses plus ``loss_kpt`` and ``loss_kpt_vis``. ``targets``
        may hold ``keypoints (N, K, 3)`` (x, y input pixels, v); images without them train
        no keypoint."""
        kpt = flatten_levels(kpt_maps).float()  # (B, P, 3K)
        out, pos = self.dense_losses(cls_maps, reg_maps, targets)
        if pos is None:  # diverged: NaN everywhere
            out["loss_kpt"] = out["loss_kpt_vis"] = out["loss_box"]
        else:
            points, strides, _ = self.points(cls_maps)
            out.update(self.keypoint_losses(kpt, points, strides, pos, targets))
        out["loss"] = sum(out.values())
        return out

    def keypoint_losses(self, kpt: Tensor, points: Tensor, strides: Tensor, pos: Positives,
                        targets: list[dict]) -> dict[str, Tensor]:
        """Offset and visibility losses of the positives ``pos`` (module docstring).

        Args:
            kpt: ``(B, P, 3K)`` flattened keypoint maps.
            points, strides: ``(P, 2)`` location centres and ``(P,)`` strides, pixels.
        """
        k = self.num_keypoints
        num_objects = max(1, max(len(t["boxes"]) for t in targets))
        gt = pad_keypoints(targets, k, num_objects, kpt.device)  # (B, N, K, 3)
        gt = gt[pos.image, pos.object]  # (M, K, 3)
        visible = gt[..., 2] > 0  # (M, K)
        pred = kpt[pos.image, pos.location]  # (M, 3K)
        offsets = pred[:, : 2 * k].unflatten(-1, (k, 2))  # (M, K, 2) strides
        target = self.kpt_coder.encode(points[pos.location], gt[..., :2],
                                       strides[pos.location])  # (M, K, 2) strides
        err = F.smooth_l1_loss(offsets, target, beta=SMOOTH_L1_BETA, reduction="none").sum(-1)
        loss_kpt = torch.where(visible, err, 0.0).sum() / visible.sum().clamp(min=1)
        labelled = visible.any(dim=1)  # (M,) objects with at least one labelled keypoint
        vis = F.binary_cross_entropy_with_logits(pred[:, 2 * k:], visible.float(),
                                                 reduction="none")  # (M, K)
        loss_vis = (vis * labelled[:, None]).sum() / (labelled.sum() * k).clamp(min=1)
        keep_graph = 0.0 * kpt.sum()  # every output in the graph when there is no positive
        return {"loss_kpt": self.keypoint_loss_weight * loss_kpt + keep_graph,
                "loss_kpt_vis": self.visibility_loss_weight * loss_vis}
