"""Batches of letterboxed images and targets for training and evaluation.

The contract (what the engine codes against)::

    loader = build_dataloader(dataset, imgsz=320, batch_size=16, train=True, workers=2,
                              augment=None, seed=0, strict=False, shuffle=None, drop_last=None)
    for images, targets in loader:
        images   # (B, 3, imgsz, imgsz) float32 in [0, 1]
        targets  # list of B dicts:
                 #   "boxes":     (N, 4) float32 xyxy, pixels of the input frame
                 #   "labels":    (N,) int64 class indices 0..C-1
                 #   "image_id":  int (record.image_id)
                 #   "orig_size": (h, w) of the original image
                 #   "scale":     float, original-pixel box = input box / scale
                 #   "ignore":    (K, 4) float32 xyxy, training only: crowd regions (and a
                 #                SNIPER chip's objects that are not its targets)
                 #   "keypoints": (N, K, 3) float32, keypoint datasets only: x, y pixels of
                 #                the input frame and v in {0, 1, 2} (0 once out of the image)

* Evaluation (``train=False``): letterbox only, deterministic. Resize so the longer side is
  ``imgsz`` and pad bottom/right with grey ``114 / 255``; ``boxes / scale`` are original pixels.
* Training (``train=True``): ``transforms.train_transform`` with ``augment`` (default
  ``AugmentConfig()``): mosaic or scale jitter + random crop/placement, flip, colour jitter.
  COCO crowd regions (``iscrowd``) are not objects to find: they go through the same
  transforms but come out in ``"ignore"``, not in ``"boxes"`` (a head may then neither reward
  nor punish detections there, as the FCOS, YOLOX and CenterNet heads do; Detectron2 and
  Ultralytics drop them).
  ``image_id`` / ``orig_size`` / ``scale`` are those of the first image of a mosaic and do not
  map augmented boxes back to the original image.
* SNIPER chips (``augment.chips`` > 0, off by default): with that probability a training sample
  is a chip (``scaledet.data.sampling.pick_chip`` / ``cut_chip``) of the image as loaded
  (longer side ``imgsz``) instead of the whole image, never a mosaic; the objects out of the
  chip's valid range or cut by it go into ``"ignore"`` with the crowd regions. A chip zoomed in
  beyond the loaded image is cut from the image decoded again at the resolution it needs (at
  most the file's own), so small objects keep their detail. Its ``scale`` is the original to
  chip zoom (the chip's offset is not recorded). Chips are ``augment.chip_size`` pixels (0: the
  training side); a batch mixing sizes is padded bottom/right with grey to the largest.
* Shuffling (default: ``train``) and ``drop_last`` (default: ``train``; a dataset smaller than
  one batch still gives one batch).
* Keyword-only extras: ``cache=True | False | "auto"`` (decoded-image RAM cache) and
  ``device=...`` (batches moved there as uint8, then converted to float there).

Determinism: every sample's randomness comes from ``np.random.default_rng((seed, epoch,
index))`` and the order of an epoch from ``(seed, epoch)``, so results do not depend on the
number of workers or on which worker gets which sample. The batch sampler (in the main process)
sends ``(index, epoch, mosaic probability, size)`` keys to the workers, so even persistent
workers see the current epoch, mosaic and size settings. The k-th pass over the loader uses
epoch ``k``; ``loader.set_epoch(e)`` fixes the epoch of the next pass (use it when resuming),
``loader.set_mosaic(p)`` changes the mosaic probability (``0.0`` = "close mosaic") and
``loader.set_imgsz(s)`` the training image side (progressive resizing; ``None`` = ``imgsz``).

Speed: images are decoded for ``imgsz`` (big JPEGs at a reduced
scale in libjpeg, then resized so the longer side is ``imgsz``) and cached in RAM
(``cache="auto"``: when that fits in ``cache_max_bytes``, by default a quarter of the memory
available when the loader is built), filled
once by threads in the main process and shared with forked workers; workers run the
augmentation and send uint8 batches (4x fewer bytes than float through shared memory); the
main process converts to float, into pinned memory when CUDA is available.

Bad images: a missing or corrupt image is reported (with its path) and skipped: the dataset
returns a ``Skipped`` sentinel, ``collate`` drops it, and the loader counts it
(``loader.skipped``, ``loader.summary()``); a batch whose images all failed is not yielded.
With ``strict=True`` the first bad image raises ``ImageReadError`` naming the file
(when the cache is filled, that is while building the loader).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from scaledet.data.images import ImageReadError, read_image_for_side
from scaledet.data.records import DetectionDataset
from scaledet.data.sampling import ScaleRange, cut_chip, default_sniper_scales, pick_chip
from scaledet.data.transforms import (
    PAD_VALUE,
    AugmentConfig,
    Sample,
    flip_and_jitter,
    letterbox,
    train_transform,
)

log = logging.getLogger(__name__)

CROWD_LABEL = -1
"""Label that carries a COCO crowd region through the training transforms (then ``ignore``)."""


def default_cache_bytes(fraction: float = 0.25, fallback: int = 2 << 30) -> int:
    """``fraction`` of the memory available now (Linux ``MemAvailable``), else ``fallback``.

    A quarter leaves room for a second training process (each rank caches its own copy), the
    loader workers and the model.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * fraction)  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return fallback


@dataclass(frozen=True)
class Skipped:
    """Sentinel for an image that could not be read (returned instead of a sample)."""

    index: int
    path: str
    reason: str


class DetectionTorchDataset(Dataset):
    """A ``DetectionDataset`` as a torch dataset of letterboxed / augmented samples.

    ``ds[i]`` (or ``ds[(i, epoch, mosaic_probability)]``, what the loader's sampler sends)
    returns a dict ``{"image": (3, imgsz, imgsz) uint8, "boxes", "labels", "image_id",
    "orig_size", "scale"}`` (see the module docstring), or a ``Skipped`` sentinel.

    Args:
        dataset: records and class table.
        imgsz: square input size in pixels.
        train: augment (else letterbox only).
        augment: augmentation settings for ``train`` (default ``AugmentConfig()``).
        seed: base seed of the per-sample random generators.
        strict: raise at the first unreadable image instead of skipping it.
        cache: keep decoded images (resized to longer side ``imgsz``) in RAM: ``True``,
            ``False`` or ``"auto"`` (when the estimate fits in ``cache_max_bytes``).
        cache_max_bytes: the ``"auto"`` limit; ``None``: ``default_cache_bytes()``.
    """

    def __init__(self, dataset: DetectionDataset, imgsz: int = 320, train: bool = True,
                 augment: AugmentConfig | None = None, seed: int = 0, strict: bool = False,
                 cache: bool | str = "auto", cache_max_bytes: int | None = None,
                 cache_threads: int = 2, progress: bool = True) -> None:
        if imgsz < 8:
            raise ValueError(f"imgsz must be >= 8 pixels, got {imgsz}")
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be True, False or 'auto', got {cache!r}")
        self.dataset = dataset
        self.imgsz = imgsz
        self.train = train
        self.augment = augment if augment is not None else AugmentConfig()
        self.seed = seed
        self.strict = strict
        self.progress = progress
        self.flip_idx = dataset.flip_index() if dataset.num_keypoints else None
        self._cache: list[tuple[Tensor, tuple[int, int]] | Skipped] | None = None
        if cache == "auto":
            limit = default_cache_bytes() if cache_max_bytes is None else cache_max_bytes
            cache = len(dataset) * 3 * imgsz * imgsz <= limit
        if cache:
            self._fill_cache(cache_threads)

    def __len__(self) -> int:
        return len(self.dataset)

    # ---- reading ------------------------------------------------------------------------

    def _decode(self, index: int, max_side: int):
        """``(image (3, h, w) uint8 with longer side max_side, original (H, W), scale applied)``
        or ``Skipped``.

        Cached or not, an image is decoded for ``imgsz``: large JPEGs at a reduced scale in
        libjpeg (``read_image_for_side``), then resized exactly, so a training run gives the
        same samples with and without the cache, and an uncached loader does not decode a
        full-resolution photo (four for a mosaic) per sample.
        """
        record = self.dataset.records[index]
        path = self.dataset.image_path(record)
        try:
            array, size = read_image_for_side(path, max_side)
        except ImageReadError as e:
            if self.strict:
                raise
            log.warning("skipping image %s: %s", path, e)
            return Skipped(index, str(path), str(e))
        # The size ``resize(full image, scale)`` gives, from a full or a reduced decode.
        scale = max_side / max(size)
        h, w = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
        writable = array if array.flags.writeable else array.copy()  # PIL's are read-only
        image = torch.from_numpy(writable).permute(2, 0, 1)
        if tuple(image.shape[-2:]) != (h, w):
            image = TF.resize(image, [h, w], antialias=True)
        return image, size, scale

    def _fill_cache(self, threads: int) -> None:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            items = pool.map(lambda i: self._decode(i, self.imgsz), range(len(self)))
            self._cache = list(tqdm(items, total=len(self), desc="caching images", unit="img",
                                    delay=2.0, disable=not self.progress, leave=False))

    def load(self, index: int) -> tuple[Sample, tuple[int, int], float] | Skipped:
        """Image ``index`` with its boxes, at the cached resolution when cached.

        Returns:
            ``(sample, (H, W) of the original image, scale of sample relative to it)``, or
            ``Skipped``.
        """
        got = self._cache[index] if self._cache is not None else self._decode(index, self.imgsz)
        if isinstance(got, Skipped):
            return got
        image, size, scale = got
        record = self.dataset.records[index]
        boxes = torch.as_tensor(record.boxes, dtype=torch.float32) * scale
        labels = torch.as_tensor(record.labels, dtype=torch.int64)
        if self.train and record.iscrowd.any():  # carried through the transforms, then split
            labels = labels.masked_fill(torch.as_tensor(record.iscrowd), CROWD_LABEL)
        return Sample(image, boxes, labels, _scaled_points(record.keypoints, scale)), size, scale

    # ---- samples ------------------------------------------------------------------------

    def __getitem__(self, key: int | tuple) -> dict | Skipped:
        """``key``: an index, or ``(index, epoch, mosaic probability[, size])`` from the loader's
        sampler; ``size`` (training only, 0 = ``imgsz``) is the side of the output image."""
        if not isinstance(key, tuple):
            key = (int(key), 0, self.augment.mosaic)
        index, epoch, mosaic_p = key[:3]
        imgsz = int(key[3]) if len(key) > 3 and key[3] and self.train else self.imgsz
        first = self.load(index)
        if isinstance(first, Skipped):
            return first
        sample, size, scale = first
        if not self.train:
            out, extra = letterbox(sample, self.imgsz)
            return _as_item(out, self.dataset.records[index].image_id, size, scale * extra)
        rng = np.random.default_rng((self.seed, epoch, index))
        if self.augment.chips > 0 and rng.random() < self.augment.chips:  # no draw when off
            return self._chip_item(index, sample, size, scale, imgsz, rng)
        samples = [sample]
        use_mosaic = rng.random() < mosaic_p
        if use_mosaic:
            for other in rng.integers(0, len(self), 3):
                got = self.load(int(other))
                samples.append(sample if isinstance(got, Skipped) else got[0])
        out = train_transform(samples, imgsz, rng, self.augment, use_mosaic, self.flip_idx)
        # train_transform's jitter is relative to the letterbox scale of the loaded image.
        letterbox_scale = scale * imgsz / max(sample.height, sample.width)
        return _as_item(out, self.dataset.records[index].image_id, size, letterbox_scale,
                        split_crowd=True)

    def _chip_item(self, index: int, sample: Sample, size: tuple[int, int], scale: float,
                   imgsz: int, rng: np.random.Generator) -> dict:
        """A SNIPER chip of the loaded ``sample`` (see ``AugmentConfig.chips``)."""
        cfg = self.augment
        side = cfg.chip_size or imgsz
        frame = (sample.height, sample.width)
        if cfg.chip_ranges:
            scales = [ScaleRange(*r) for r in cfg.chip_ranges]
        else:
            scales = default_sniper_scales(frame, side)
        # Chips are placed on the boxes clipped to the image (an edge box may stick out of the
        # rounded image size by a fraction of a pixel, or out of the image in the annotation).
        limit = torch.tensor([frame[1], frame[0], frame[1], frame[0]], dtype=torch.float32)
        placed = torch.minimum(sample.boxes.clamp(min=0), limit)
        chip = pick_chip(placed, frame, scales, side, rng, cfg.chip_stride, cfg.chip_negatives,
                         objects=sample.labels != CROWD_LABEL)
        source, finer = self._chip_source(index, sample, size, scale, chip.scale)
        out, ignore = cut_chip(source, replace(chip, scale=chip.scale / finer), cfg.min_size)
        out.labels = out.labels.masked_fill(ignore, CROWD_LABEL)
        out = flip_and_jitter(out, rng, cfg, self.flip_idx)
        return _as_item(out, self.dataset.records[index].image_id, size, scale * chip.scale,
                        split_crowd=True)

    def _chip_source(self, index: int, sample: Sample, size: tuple[int, int], scale: float,
                     zoom: float) -> tuple[Sample, float]:
        """The image to cut a chip zoomed by ``zoom`` (relative to the loaded ``sample``) from.

        Upsampling the loaded image (longer side ``imgsz``) would blur exactly the small
        objects chips zoom in on, so when the file has more pixels the image is decoded again
        at the side the chip needs (at most the file's own; not cached).

        Returns:
            ``(sample, its resolution relative to the loaded one)``: the loaded sample and 1.0
            when that is enough or the second decode fails.
        """
        side = max(sample.height, sample.width)
        want = min(max(size), round(side * zoom))
        if want <= side:
            return sample, 1.0
        got = self._decode(index, want)
        if isinstance(got, Skipped):
            return sample, 1.0
        image, _, fine_scale = got
        record = self.dataset.records[index]
        boxes = torch.as_tensor(record.boxes, dtype=torch.float32)
        return (Sample(image, boxes * fine_scale, sample.labels,
                       _scaled_points(record.keypoints, fine_scale)), fine_scale / scale)


def _scaled_points(keypoints: np.ndarray | None, scale: float) -> Tensor | None:
    """A record's ``(N, K, 3)`` points as float32 with ``x, y`` times ``scale`` (the boxes'
    arithmetic: float32 times ``scale``)."""
    if keypoints is None:
        return None
    points = torch.as_tensor(keypoints, dtype=torch.float32).clone()
    points[..., :2] = points[..., :2] * scale
    return points


def _as_item(sample: Sample, image_id: int, size: tuple[int, int], scale: float,
             split_crowd: bool = False) -> dict:
    item = {"image": sample.image.contiguous(), "boxes": sample.boxes.float(),
            "labels": sample.labels, "image_id": int(image_id), "orig_size": size,
            "scale": float(scale)}
    if sample.keypoints is not None:
        item["keypoints"] = sample.keypoints.float()
    if split_crowd:
        crowd = sample.labels == CROWD_LABEL
        item["ignore"] = item["boxes"][crowd]
        if len(item["ignore"]):
            item.update(boxes=item["boxes"][~crowd], labels=sample.labels[~crowd])
            if "keypoints" in item:
                item["keypoints"] = item["keypoints"][~crowd]
    return item


def collate(batch: list[dict | Skipped]) -> tuple[Tensor, list[dict], list[Skipped]]:
    """Stack samples, dropping ``Skipped`` ones.

    Returns:
        ``(images (B, 3, S, S) as produced (uint8 from the dataset), targets (B dicts without
        "image"), skipped)``; ``B`` may be 0 when every image of the batch failed. Samples of
        different sides (SNIPER chips with whole images) are padded bottom/right with grey to
        the largest, which leaves their boxes as they are.
    """
    good = [b for b in batch if not isinstance(b, Skipped)]
    skipped = [b for b in batch if isinstance(b, Skipped)]
    if not good:
        return torch.zeros(0, 3, 0, 0, dtype=torch.uint8), [], skipped
    sizes = [tuple(b["image"].shape[-2:]) for b in good]
    if len(set(sizes)) == 1:
        images = torch.stack([b["image"] for b in good])
    else:  # SNIPER chips of another side than the whole-image samples: pad to the largest
        h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
        images = torch.full((len(good), 3, h, w), PAD_VALUE, dtype=good[0]["image"].dtype)
        for out, b in zip(images, good):
            out[:, :b["image"].shape[-2], :b["image"].shape[-1]] = b["image"]
    targets = [{k: v for k, v in b.items() if k != "image"} for b in good]
    return images, targets, skipped


class _KeySampler(Sampler):
    """Batches of ``(index, epoch, mosaic probability, size)`` keys; order fixed by ``(seed,
    epoch)``; ``size`` 0 means the dataset's ``imgsz``.

    ``shard=(rank, world)``: the keys ``rank::world`` of each batch (data-parallel training:
    every rank walks the same batches and takes its share)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int,
                 mosaic: float, shard: tuple[int, int] = (0, 1)) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.mosaic, self.epoch, self.imgsz = seed, mosaic, 0, 0
        self.rank, self.world = shard
        self.start = 0  # first batch of the pass (resuming an interrupted epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int, float, int]]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        for start in range(self.start * self.batch_size, len(self) * self.batch_size,
                           self.batch_size):
            batch = order[start:start + self.batch_size][self.rank::self.world]
            yield [(i, self.epoch, self.mosaic, self.imgsz) for i in batch]

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        # A dataset smaller than one batch still gives one batch.
        return full + (1 if rest and (not self.drop_last or full == 0) else 0)


class DetectionLoader:
    """Iterable of ``(images (B, 3, S, S) float32 in [0, 1], targets)``; see module docstring.

    Attributes:
        dataset: the ``DetectionTorchDataset``.
        skipped: every ``Skipped`` image met so far (all epochs, in order of arrival).
    """

    def __init__(self, dataset: DetectionTorchDataset, batch_size: int, shuffle: bool,
                 drop_last: bool, workers: int, seed: int, device: torch.device | None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device
        self.pin = torch.cuda.is_available()
        self.sampler = _KeySampler(len(dataset), batch_size, shuffle, drop_last, seed,
                                   dataset.augment.mosaic, shard)
        self.skipped: list[Skipped] = []
        self._next_epoch = 0
        self._next_start = 0
        self._loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers,
                                  collate_fn=collate, pin_memory=self.pin and device is not None,
                                  persistent_workers=workers > 0,
                                  prefetch_factor=4 if workers > 0 else None)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (order and augmentation follow ``(seed, epoch)``)."""
        self._next_epoch = int(epoch)

    def set_start_batch(self, batch: int) -> None:
        """Begin the next pass at its batch ``batch`` (the batches before it are not loaded),
        to resume an epoch that was interrupted; later passes start at 0. Since order and
        augmentation follow ``(seed, epoch, index)``, the rest of the epoch is what it would
        have been."""
        if not 0 <= batch <= len(self):
            raise ValueError(f"start batch must be in [0, {len(self)}], got {batch}")
        self._next_start = int(batch)

    def set_mosaic(self, probability: float) -> None:
        """Mosaic probability from the next pass on (``0.0`` closes mosaic)."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"mosaic probability must be in [0, 1], got {probability}")
        self.sampler.mosaic = float(probability)

    def set_imgsz(self, size: int | None) -> None:
        """Training image side from the next pass on (``None``: the ``imgsz`` the loader was
        built with); for progressive resizing (:class:`~scaledet.engine.trainer.TrainConfig`)."""
        if size is not None and size < 8:
            raise ValueError(f"imgsz must be >= 8 pixels, got {size}")
        self.sampler.imgsz = int(size or 0)

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) pass."""
        return self.sampler.epoch

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        """One line per distinct skipped image, or ``"no images skipped"``."""
        if not self.skipped:
            return "no images skipped"
        unique = {s.path: s.reason for s in self.skipped}
        lines = [f"skipped {len(self.skipped)} samples from {len(unique)} unreadable images:"]
        lines += [f"  {path}: {reason}" for path, reason in unique.items()]
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Tensor, list[dict]]]:
        self.sampler.epoch = self._next_epoch
        self._next_epoch += 1
        self.sampler.start, self._next_start = self._next_start, 0
        for images, targets, skipped in self._loader:
            self.skipped.extend(skipped)
            if targets:
                yield self._to_float(images), targets
            elif self.sampler.world > 1:  # the other ranks would wait for this one forever
                raise ImageReadError(f"data-parallel rank {self.sampler.rank}: every image of "
                                     f"its share of a batch is unreadable: "
                                     f"{', '.join(str(s.path) for s in skipped)}")

    def _to_float(self, images: Tensor) -> Tensor:
        if self.device is not None:
            return images.to(self.device, non_blocking=True).float().div_(255)
        out = torch.empty(images.shape, dtype=torch.float32, pin_memory=self.pin)
        return out.copy_(images).div_(255)


def build_dataloader(dataset: DetectionDataset, imgsz: int = 320, batch_size: int = 16,
                     train: bool = True, workers: int = 2, augment: AugmentConfig | None = None,
                     seed: int = 0, strict: bool = False, shuffle: bool | None = None,
                     drop_last: bool | None = None, *, cache: bool | str = "auto",
                     device: torch.device | str | None = None,
                     shard: tuple[int, int] = (0, 1)) -> DetectionLoader:
    """The training or evaluation loader (contract in the module docstring).

    Args:
        dataset: records and class table.
        imgsz: square input size (pixels).
        batch_size: images per batch.
        train: augment, shuffle and drop the last partial batch by default.
        workers: worker processes (0 = load in the main process); persistent between passes.
        augment: augmentation settings (``AugmentConfig()`` when ``None``; unused for eval).
        seed: base seed; with the epoch it fixes order and augmentation.
        strict: raise at the first unreadable image instead of skipping it.
        shuffle, drop_last: default to ``train`` (a dataset smaller than one batch still
            gives one batch).
        cache: decoded-image RAM cache, ``True`` / ``False`` / ``"auto"``.
        device: if given, batches are moved there as uint8 and converted to float there.
        shard: ``(rank, world)`` of data-parallel training: each batch of ``batch_size`` keys
            is split between ``world`` ranks, this loader yielding share ``rank``
            (``batch_size >= world`` required).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    rank, world = shard
    if not 0 <= rank < world or batch_size < world:
        raise ValueError(f"shard {shard} with batch_size {batch_size}: need 0 <= rank < world "
                         "<= batch_size")
    data = DetectionTorchDataset(dataset, imgsz, train, augment, seed, strict, cache,
                                 progress=rank == 0)
    shuffle = train if shuffle is None else shuffle
    drop_last = train if drop_last is None else drop_last
    dev = torch.device(device) if device is not None else None
    return DetectionLoader(data, batch_size, shuffle, drop_last, workers, seed, dev, shard)
