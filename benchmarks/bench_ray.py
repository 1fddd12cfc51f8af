"""Local ``scaledet predict`` vs ``--engine ray`` with 1 and 2 workers, and the driver's memory
for a listing of a million paths.

    .venv/bin/python benchmarks/bench_ray.py [--images 2000] [--imgsz 320] [--repeats 3]

Throughput: each configuration runs the whole command (``scaledet predict ... --parquet``, model
loading and, for Ray, starting the cluster and its actors included) on the same folder of
generated images, configurations interleaved, ``--repeats`` times; medians of images / wall
second, the ratio to local, and Ray's overhead per image (its extra wall time over local divided
by the images). Memory: in a fresh process each, the driver's RSS growth (and tracemalloc's peak
of Python allocations) for (a) a Python list of the million paths, (b) streaming the million-line
text listing through Ray Data (``read_text`` + a map + ``iter_batches``), as ``--engine ray``
reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCALEDET = [str(Path(sys.executable).parent / "scaledet")]  # the venv's entry point


def make_inputs(folder: Path, images: int, imgsz: int) -> tuple[Path, Path]:
    """The generated images and a random-weight fcos-n checkpoint (3 classes)."""
    from scaledet.models import build
    from scaledet.models.checkpoint import save_weights

    data = folder / "data"
    if not (data / "images" / "train").is_dir():
        subprocess.run([*SCALEDET, "data", "synth", str(data), "--train", str(images), "--val",
                        "0", "--imgsz", str(imgsz)], check=True)
    weights = folder / "fcos-n.safetensors"
    model = build("fcos-n", num_classes=3)
    save_weights(weights, model.state_dict(), {"model": "fcos-n",
                                               "model_config": asdict(model.config),
                                               "class_names": ["circle", "square", "star"],
                                               "imgsz": imgsz})
    return data / "images" / "train", weights


def run_once(name: str, images: Path, weights: Path, out: Path, threads: int) -> float:
    """Wall seconds of one ``scaledet predict`` run of configuration ``name``."""
    cmd = [*SCALEDET, "predict", "--weights", str(weights), str(images), "--parquet",
           str(out / f"{name}.parquet"), "--out", str(out / name), "--no-images"]
    if name != "local":
        cmd += ["--engine", "ray", "--workers", name[-1]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


LISTING_CODE = r"""
import json, os, sys, tracemalloc
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
mode, listing, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "ray":
    import ray, ray.data, pyarrow
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
before = rss()
tracemalloc.start()
if mode == "list":
    paths = [line.rstrip("\n") for line in open(listing)]
    count = len(paths)
else:
    ds = ray.data.read_text(listing).map_batches(lambda b: {"n": [len(b["text"])]},
                                                 batch_format="pyarrow", batch_size=None)
    count = sum(sum(b["n"].to_pylist()) for b in ds.iter_batches(batch_size=None,
                                                                batch_format="pyarrow"))
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"count": count, "rss_growth": rss() - before, "py_peak": peak}))
"""


def listing_memory(folder: Path, n: int) -> dict[str, dict]:
    listing = folder / "million.txt"
    with open(listing, "w") as f:
        f.writelines(f"/data/images/{i // 1000:04d}/{i:08d}.jpg\n" for i in range(n))
    out = {}
    for mode in ("list", "ray"):
        res = subprocess.run([sys.executable, "-c", LISTING_CODE, mode, str(listing), str(n)],
                             check=True, capture_output=True, text=True)
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--listing", type=int, default=1_000_000)
    ap.add_argument("--omp", type=int, default=0,
                    help="OMP_NUM_THREADS of every command (0: leave it unset)")
    ap.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "bench_ray"))
    args = ap.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    images, weights = make_inputs(folder, args.images, args.imgsz)
    n = sum(1 for _ in images.iterdir())
    names = ["local", "ray-1", "ray-2"]
    walls: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.repeats):
        for name in names:
            walls[name].append(run_once(name, images, weights, folder / "out", args.omp))
            print(f"repeat {r + 1} {name}: {walls[name][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"\n{n} images of {args.imgsz} px, fcos-n, median of {args.repeats} (whole command)")
    print("| engine | wall s | images/s | x local | overhead ms/image |")
    print("|---|---:|---:|---:|---:|")
    for k in names:
        print(f"| {k} | {med[k]:.1f} | {n / med[k]:.1f} | {med['local'] / med[k]:.2f} | "
              f"{1000 * (med[k] - med['local']) / n:+.1f} |")
    mem = listing_memory(folder, args.listing)
    print(f"\ndriver memory for a {args.listing:,}-path listing")
    for k, label in (("list", "Python list of str"), ("ray", "Ray Data read_text, streamed")):
        m = mem[k]
        print(f"| {label} | RSS +{m['rss_growth'] / 2**20:.0f} MiB | Python peak "
              f"{m['py_peak'] / 2**20:.1f} MiB | {m['count']:,} paths |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
