"""Image decoding: scaledet.data.read_image vs plain PIL, and the synthetic dataset's speed.

    .venv/bin/python benchmarks/bench_images.py [--repeats 15]

Prints medians (ms per image) and ratios measured side by side in this run:
- JPEG / PNG at 320 and 640 px: ``read_image`` (torchvision.io fast path) vs
  ``np.asarray(Image.open(p).convert("RGB"))`` and vs ``ImageOps.exif_transpose`` + convert (what
  a PIL reader needs to match read_image's EXIF handling);
- a 6000x4000 JPEG read at max_side=640: ``read_image`` (PIL draft: DCT-domain downscale) vs a full
  PIL decode + resize;
- the training loader's RAM cache of photo-sized JPEGs (640, 1280, 2560 px) at imgsz 320:
  ``read_image_for_side`` (DCT-domain reduced decode) + exact resize vs a full decode + resize;
- ``make_synthetic_dataset``: ms per 320 px image (written as JPEG).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from scaledet.data import make_synthetic_dataset, read_image
from scaledet.data.images import read_image_for_side


def _time_ms(fn, paths) -> float:
    start = time.perf_counter()
    for p in paths:
        fn(p)
    return (time.perf_counter() - start) / len(paths) * 1000


def _compare(fns, paths, repeats: int) -> tuple[list[float], list[float]]:
    """Median ms per image of each fn, and the median per-round ratio ``fn / fns[0]``.

    The contenders alternate within each round, so load from other processes on a shared
    machine hits them alike and the ratios are steadier than the absolute times.
    """
    rounds = [[_time_ms(fn, paths) for fn in fns] for _ in range(repeats)]
    medians = [statistics.median(r[i] for r in rounds) for i in range(len(fns))]
    ratios = [statistics.median(r[i] / r[0] for r in rounds) for i in range(len(fns))]
    return medians, ratios


def _pil_plain(p):
    with Image.open(p) as im:
        return np.asarray(im.convert("RGB"))


def _pil_exif(p):
    with Image.open(p) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _pil_full_then_resize(p):
    with Image.open(p) as im:
        return np.asarray(im.convert("RGB").resize((640, 427), Image.BILINEAR))


def _cache_full(p, side: int = 320):
    import torch
    import torchvision.transforms.v2.functional as F

    image = torch.from_numpy(read_image(p)).permute(2, 0, 1)
    s = side / max(image.shape[-2:])
    return F.resize(image, [round(image.shape[-2] * s), round(image.shape[-1] * s)], antialias=True)


def _cache_reduced(p, side: int = 320):
    import torch
    import torchvision.transforms.v2.functional as F

    array, (h, w) = read_image_for_side(p, side)
    s = side / max(h, w)
    return F.resize(torch.from_numpy(array.copy()).permute(2, 0, 1), [round(h * s), round(w * s)],
                    antialias=True)


def _write_images(folder: Path, size: int, fmt: str, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        # smooth content plus noise, like a photo (pure noise is a worst case for JPEG)
        base = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
                          .resize((size, size), Image.BICUBIC)).astype(np.int16)
        pixels = np.clip(base + rng.integers(-10, 11, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{size}_{i}.{fmt.lower().replace('jpeg', 'jpg')}"
        Image.fromarray(pixels).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--n", type=int, default=40, help="images per case")
    args = parser.parse_args()
    read_image(_write_images(Path(tempfile.mkdtemp()), 32, "JPEG", 1)[0])  # import torchvision
    print(f"{'case':<30} {'read_image':>10} {'PIL':>8} {'PIL+EXIF':>9}  "
          "PIL/ours  PIL+EXIF/ours")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for fmt, size in (("JPEG", 320), ("JPEG", 640), ("PNG", 320), ("PNG", 640)):
            paths = _write_images(folder, size, fmt, args.n)
            (ours, plain, exif), (_, r_plain, r_exif) = _compare(
                [read_image, _pil_plain, _pil_exif], paths, args.repeats)
            print(f"{fmt + ' ' + str(size) + ' px (ms/image)':<30} {ours:>10.3f} {plain:>8.3f} "
                  f"{exif:>9.3f}  {r_plain:>7.2f}x  {r_exif:>12.2f}x")
        big = folder / "big.jpg"
        Image.new("RGB", (6000, 4000), (90, 120, 150)).save(big, quality=90)
        (ours, full), (_, ratio) = _compare(
            [lambda p: read_image(p, max_side=640), _pil_full_then_resize], [big], args.repeats)
        print(f"{'6000x4000 JPEG -> 640 (ms)':<30} {ours:>10.1f} {full:>8.1f} {'':>9}  "
              f"{ratio:>7.2f}x")
        print(f"{'loader cache at 320 (ms/image)':<30} {'reduced':>10} {'full':>8}  full/reduced")
        for size in (640, 1280, 2560):
            paths = _write_images(folder, size, "JPEG", max(4, args.n // (size // 320)))
            (reduced, full), (_, ratio) = _compare([_cache_reduced, _cache_full], paths,
                                                   args.repeats)
            print(f"{'  JPEG ' + str(size) + ' px':<30} {reduced:>10.2f} {full:>8.2f}  "
                  f"{ratio:>7.2f}x")
        start = time.perf_counter()
        make_synthetic_dataset(folder / "synth", n_train=200, n_val=0, seed=0)
        per_image = (time.perf_counter() - start) / 200 * 1000
        print(f"make_synthetic_dataset: {per_image:.1f} ms per 320 px image "
              f"({per_image:.0f} s per 1000 images)")


if __name__ == "__main__":
    main()
