"""Training-pipeline throughput: scaledet's loader vs a naive PIL + torchvision v2 pipeline.

Both run side by side in this process on the same JPEG files, with the same number of worker
processes, batch size and output size, and nothing consuming the batches (images/s of the data
pipeline alone). Variants:

    naive          PIL decode + v2.ScaleJitter, RandomCrop (pad 114), RandomHorizontalFlip,
                   ColorJitter, SanitizeBoundingBoxes, ToDtype(float32); float batches from the
                   workers; DataLoader with persistent workers; no cache, no mosaic
    ours-nocache   build_dataloader, decoding in the workers (torchvision decoder), no mosaic
    ours           build_dataloader with the RAM cache, no mosaic (same augmentations as naive)
    ours-mosaic    ours with the default AugmentConfig (mosaic 0.5: each mosaic reads 4 images)
    ours-f32worker ours, but workers send float32 batches (what "convert in the main process"
                   is measured against)

Each variant: one untimed warm-up pass, then ``--passes`` timed passes over the dataset, the
variants taking turns pass by pass; the median pass gives images/s. The one-off cache fill is
timed separately.

    python benchmarks/bench_data.py                   # 320 and 640 px, 2 workers
    python benchmarks/bench_data.py --sizes 320 --images 64 --passes 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from scaledet.data.loader import DetectionTorchDataset, build_dataloader, collate
from scaledet.data.records import DetectionDataset, DetectionRecord
from scaledet.data.transforms import AugmentConfig


def write_images(root: Path, n: int, seed: int = 0) -> DetectionDataset:
    """``n`` JPEGs of 480-800 x 360-640 px with smooth texture and 1-8 boxes each."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        w, h = int(rng.integers(480, 801)), int(rng.integers(360, 641))
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        k = int(rng.integers(1, 9))
        wh = rng.uniform(10, min(w, h) / 2, (k, 2))
        xy = rng.uniform(0, 1, (k, 2)) * ([w, h] - wh)
        image.save(root / f"{i}.jpg", quality=90)
        records.append(DetectionRecord(i, f"{i}.jpg", w, h, np.hstack([xy, xy + wh]),
                                       rng.integers(0, 3, k)))
    return DetectionDataset(records, ["a", "b", "c"], image_root=root)


class NaiveDataset(Dataset):
    """PIL decode + a torchvision v2 pipeline, as a torchvision user would first write it."""

    def __init__(self, dataset: DetectionDataset, imgsz: int) -> None:
        self.dataset = dataset
        self.transform = v2.Compose([
            v2.ToImage(),
            v2.ScaleJitter((imgsz, imgsz), scale_range=(0.5, 1.5)),
            v2.RandomCrop(imgsz, pad_if_needed=True, fill=114),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.3, 0.2, 0.4, 0.015),
            v2.SanitizeBoundingBoxes(min_size=2),
            v2.ToDtype(torch.float32, scale=True),
        ])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        record = self.dataset.records[i]
        image = Image.open(self.dataset.image_path(record)).convert("RGB")
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(record.boxes, dtype=torch.float32),
                                         format="XYXY", canvas_size=(image.height, image.width))
        target = {"boxes": boxes, "labels": torch.as_tensor(record.labels)}
        return self.transform(image, target)


def naive_collate(batch):
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


class FloatInWorkers(DetectionTorchDataset):
    """Our dataset, but the worker converts each image to float32 in [0, 1]."""

    def __getitem__(self, key):
        item = super().__getitem__(key)
        item["image"] = item["image"].float().div_(255)
        return item


def time_pass(loader) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def build_variants(ds: DetectionDataset, imgsz: int, args) -> tuple[dict, float]:
    """The loaders to compare, and the seconds the RAM cache fill took."""
    no_mosaic = AugmentConfig(mosaic=0.0)
    common = dict(batch_size=args.batch, shuffle=True, drop_last=True,
                  num_workers=args.workers, persistent_workers=args.workers > 0)
    variants = {"naive": DataLoader(NaiveDataset(ds, imgsz), collate_fn=naive_collate,
                                    **common)}
    variants["ours-nocache"] = build_dataloader(ds, imgsz, args.batch, workers=args.workers,
                                                augment=no_mosaic, cache=False)
    start = time.perf_counter()
    variants["ours"] = build_dataloader(ds, imgsz, args.batch, workers=args.workers,
                                        augment=no_mosaic, cache=True)
    fill = time.perf_counter() - start
    variants["ours-mosaic"] = build_dataloader(ds, imgsz, args.batch, workers=args.workers,
                                               cache=True)
    variants["ours-f32worker"] = DataLoader(
        FloatInWorkers(ds, imgsz, augment=no_mosaic, cache=True), collate_fn=collate, **common)
    return variants, fill


def run_size(ds: DetectionDataset, imgsz: int, args) -> dict[str, float]:
    variants, fill = build_variants(ds, imgsz, args)
    for loader in variants.values():  # warm-up: worker start-up is not counted
        time_pass(loader)
    # Round-robin, one pass of each variant in turn, so that load from other processes on a
    # shared machine hits every variant alike.
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.passes):
        for name, loader in variants.items():
            times[name].append(time_pass(loader))
    n_out = len(ds) // args.batch * args.batch  # drop_last
    ips = {name: n_out / statistics.median(t) for name, t in times.items()}
    print(f"\n## imgsz {imgsz}: {len(ds)} images, batch {args.batch}, {args.workers} workers, "
          f"median of {args.passes} interleaved passes (cache fill {fill:.2f} s, once)")
    print("| pipeline | images/s | vs naive |\n|---|---:|---:|")
    for name, v in ips.items():
        print(f"| {name} | {v:.0f} | {v / ips['naive']:.2f}x |")
    return ips


def convert_cost(imgsz: int, batch: int) -> float:
    """Main-process ms to turn a uint8 batch into float32 in [0, 1] (median of 10)."""
    images = torch.randint(0, 256, (batch, 3, imgsz, imgsz), dtype=torch.uint8)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        torch.empty(images.shape, dtype=torch.float32).copy_(images).div_(255)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        ds = write_images(Path(tmp), args.images)
        for imgsz in args.sizes:
            run_size(ds, imgsz, args)
            print(f"main-process uint8 -> float32 of one batch: "
                  f"{convert_cost(imgsz, args.batch):.1f} ms")


if __name__ == "__main__":
    main()
