"""Person crops for top-down pose models: one sample per annotated person.

A keypoint dataset (COCO ``person_keypoints``, YOLO pose, ``scaledet data synth --task
keypoints``) becomes a list of *instances*: the people with at least one labelled joint (as
SimpleBaseline, HRNet and mmpose train and evaluate with ground-truth boxes; a person with no
labelled joint is ignored by COCO's OKS evaluation anyway). Each sample is the crop of the
person's box widened to the model's aspect ratio and padded (:func:`crop_person`), warped to
the model's input size, and the joints moved into crop pixels by the same matrix.

Training augmentation (:class:`PoseAugment`, SimpleBaseline's): random scale of the window,
random rotation, mirror (joints swapped by the dataset's left/right table) and colour jitter.

Samples are dicts that :func:`scaledet.data.loader.collate` batches, so the detection loader
(its per-sample seeding, workers, skipped-image accounting and resume) serves pose training
unchanged (:func:`build_pose_loader`)::

    "image":     (3, H, W) uint8 crop
    "keypoints": (K, 3) float32: x, y crop pixels (pixel centres at integers) and v in {0, 1, 2}
    "matrix":    (2, 3) float64 map from original image pixels to crop pixels
    "box":       (4,) float32 xyxy person box in original image pixels
    "image_id", "ann_id", "area": the instance's COCO identity and area

Images are decoded once and kept in RAM when they fit (``cache="auto"``), as the detection
loader does.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from scaledet.data.images import ImageReadError, read_image
from scaledet.data.loader import DetectionLoader, Skipped, default_cache_bytes
from scaledet.data.records import DetectionDataset
from scaledet.data.transforms import Sample, color_jitter
from scaledet.ops.warp import apply_matrix, crop_box, crop_matrix, warp_affine

log = logging.getLogger(__name__)

CROP_FILL = 0
"""Colour of crop pixels outside the image (black, as SimpleBaseline's constant border)."""


@dataclass(frozen=True)
class PoseAugment:
    """Training augmentation of person crops.

    Attributes:
        scale_range: the window is scaled by a factor drawn uniformly here (> 1 zooms out).
        rotation: maximum rotation in degrees (uniform in ``[-rotation, rotation]``),
            applied with probability ``rotation_prob``.
        flip: probability of a mirrored crop (joints swapped left/right).
        hsv: strength of the colour jitter (brightness, contrast, saturation; 0 disables).
        mosaic: always 0 (the detection loader's sampler reads it; crops are never mosaics).
    """

    scale_range: tuple[float, float] = (0.75, 1.25)
    rotation: float = 30.0
    rotation_prob: float = 0.5
    flip: float = 0.5
    hsv: float = 0.2
    mosaic: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        for name in ("rotation_prob", "flip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def crop_person(image: np.ndarray, box, input_size: tuple[int, int], padding: float = 1.25, *,
                scale: float = 1.0, rotation: float = 0.0, flip: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """The crop of a person: ``(crop (H, W, 3) uint8, matrix (2, 3))``.

    ``box`` is xyxy image pixels; the window is the box widened to the crop's aspect ratio
    ``W / H`` and scaled by ``padding`` (then by ``scale``, rotated by ``rotation`` degrees,
    mirrored with ``flip``: :func:`~scaledet.ops.warp.crop_matrix`). ``matrix`` maps image
    pixels to crop pixels; its inverse brings predicted joints back to the image."""
    h, w = input_size
    centre, size = crop_box(box, w / h, padding)
    matrix = crop_matrix(centre, size, (h, w), rotation=rotation, scale=scale, flip=flip)
    return warp_affine(image, matrix, (h, w), fill=CROP_FILL), matrix


def keypoint_instances(dataset: DetectionDataset) -> list[tuple[int, int]]:
    """``(record index, object index)`` of every non-crowd person with a labelled joint."""
    if not dataset.num_keypoints:
        raise ValueError(f"{dataset.source}: not a keypoint dataset (no keypoints in its "
                         "annotations); pose models train on COCO person_keypoints, YOLO pose "
                         "or `scaledet data synth --task keypoints` data")
    out = []
    for r, record in enumerate(dataset.records):
        if record.keypoints is None:
            continue
        for j in range(len(record.boxes)):
            if not record.iscrowd[j] and (record.keypoints[j, :, 2] > 0).any():
                out.append((r, j))
    return out


class PoseCropDataset(Dataset):
    """Person crops of a keypoint dataset (see the module docstring for the sample dict).

    ``ds[i]`` or ``ds[(i, epoch, ...)]`` (the loader's keys) gives instance ``i``'s crop,
    augmented when ``train`` with a generator seeded by ``(seed, epoch, i)``, or a
    :class:`~scaledet.data.loader.Skipped` sentinel for an unreadable image.

    Args:
        dataset: a keypoint dataset.
        input_size: crop ``(H, W)``.
        train: augment (else the plain crop).
        augment: :class:`PoseAugment` (default settings when None).
        padding: box padding of the crop window.
        seed: base seed of the augmentation.
        strict: raise at the first unreadable image instead of skipping it.
        cache: keep decoded images in RAM (``True``, ``False`` or ``"auto"``: when the images
            fit in a quarter of the available memory).
    """

    def __init__(self, dataset: DetectionDataset, input_size: tuple[int, int], train: bool = True,
                 augment: PoseAugment | None = None, padding: float = 1.25, seed: int = 0,
                 strict: bool = False, cache: bool | str = "auto", progress: bool = True) -> None:
        self.dataset = dataset
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.train = train
        self.augment = augment if augment is not None else PoseAugment()
        self.padding = padding
        self.seed = seed
        self.strict = strict
        self.instances = keypoint_instances(dataset)
        self.flip_idx = dataset.flip_index()
        self._cache: dict[int, np.ndarray | Skipped] | None = None
        if cache == "auto":
            pixels = sum(int(r.width) * int(r.height) * 3 for r in dataset.records)
            cache = pixels <= default_cache_bytes()
        if cache:
            used = sorted({r for r, _ in self.instances})
            with ThreadPoolExecutor(2) as pool:
                images = pool.map(self._decode, used)
                self._cache = dict(zip(used, tqdm(images, total=len(used), desc="caching images",
                                                  unit="img", delay=2.0, disable=not progress,
                                                  leave=False)))

    def __len__(self) -> int:
        return len(self.instances)

    def _decode(self, r: int) -> np.ndarray | Skipped:
        path = self.dataset.image_path(self.dataset.records[r])
        try:
            return read_image(path)
        except ImageReadError as e:
            if self.strict:
                raise
            log.warning("skipping image %s: %s", path, e)
            return Skipped(r, str(path), str(e))

    def image(self, r: int) -> np.ndarray | Skipped:
        """Record ``r``'s image (from the cache when cached)."""
        return self._cache[r] if self._cache is not None else self._decode(r)

    def __getitem__(self, key: int | tuple) -> dict | Skipped:
        index, epoch = (key[0], key[1]) if isinstance(key, tuple) else (int(key), 0)
        r, j = self.instances[index]
        image = self.image(r)
        if isinstance(image, Skipped):
            return Skipped(index, image.path, image.reason)
        record = self.dataset.records[r]
        # the image may be smaller than declared (a reduced decode): scale the annotations
        sx, sy = image.shape[1] / record.width, image.shape[0] / record.height
        box = record.boxes[j] * np.array([sx, sy, sx, sy])
        points = record.keypoints[j].astype(np.float64).copy()
        points[:, :2] *= (sx, sy)
        scale, rotation, flip = 1.0, 0.0, False
        rng = None
        if self.train:
            a = self.augment
            rng = np.random.default_rng((self.seed, epoch, index))
            scale = float(rng.uniform(*a.scale_range))
            turn = float(rng.uniform(-a.rotation, a.rotation))
            rotation = turn if rng.random() < a.rotation_prob else 0.0
            flip = bool(rng.random() < a.flip)
        crop, matrix = crop_person(image, box, self.input_size, self.padding, scale=scale,
                                   rotation=rotation, flip=flip)
        xy = apply_matrix(points[:, :2], matrix)
        v = points[:, 2].copy()
        if flip:
            xy, v = xy[self.flip_idx], v[self.flip_idx]
        h, w = self.input_size
        outside = (xy[:, 0] < -0.5) | (xy[:, 0] > w - 0.5) | (xy[:, 1] < -0.5) | (
            xy[:, 1] > h - 0.5)
        v[outside] = 0
        tensor = torch.from_numpy(crop).permute(2, 0, 1).contiguous()
        if rng is not None and self.augment.hsv > 0:
            s = self.augment.hsv
            tensor = color_jitter(Sample(tensor, torch.zeros(0, 4), torch.zeros(0)), rng,
                                  brightness=s, contrast=s, saturation=s).image
        to_image = np.array([[1 / sx, 0, 0], [0, 1 / sy, 0], [0, 0, 1]])  # original pixels
        full = matrix @ to_image
        return {"image": tensor,
                "keypoints": torch.from_numpy(np.concatenate([xy, v[:, None]], 1)).float(),
                "matrix": torch.from_numpy(full),
                "box": torch.as_tensor(record.boxes[j], dtype=torch.float32),
                "image_id": int(record.image_id), "ann_id": int(record.ann_ids[j]),
                "area": float(record.areas[j])}


def build_pose_loader(dataset: DetectionDataset, input_size: tuple[int, int], batch_size: int,
                      train: bool, workers: int = 2, augment: PoseAugment | None = None,
                      padding: float = 1.25, seed: int = 0, strict: bool = False,
                      shard: tuple[int, int] = (0, 1), device=None) -> DetectionLoader:
    """A loader of ``(crops (B, 3, H, W) float32 in [0, 1], targets)`` over the dataset's
    people (shuffled and without the last partial batch when ``train``); ``shard`` and
    ``device`` as :func:`~scaledet.data.loader.build_dataloader`'s."""
    rank, world = shard
    data = PoseCropDataset(dataset, input_size, train, augment, padding, seed, strict,
                           progress=rank == 0)
    if not len(data):
        raise ValueError(f"{dataset.source}: no person with a labelled keypoint")
    dev = torch.device(device) if device is not None else None
    return DetectionLoader(data, batch_size, train, train and len(data) >= batch_size, workers,
                           seed, dev, shard)
