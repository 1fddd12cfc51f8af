"""Speed of scaledet.ops against its peers, measured side by side in one run (CPU).

    python benchmarks/bench_ops.py [--threads 1] [--repeats 15]

- batched_nms vs torchvision.ops.batched_nms, 10k boxes / 80 classes (target ratio <= 1.1),
- soft_nms (gaussian, 3k boxes) vs the brute-force pure-Python reference (target >= 20x),
- pairwise GIoU 4k x 4k: box_iou(kind="giou") vs torchvision generalized_box_iou (<= 1.2).

Each pair of timings is interleaved (ours, peer, ours, peer, ...) and the medians are compared,
so load changes on a shared machine hit both sides alike. ``--threads 1`` (default) pins
PyTorch's intra-op pool to one thread: on a 2-core machine shared with other jobs, the pool's
thread wake-ups turn microsecond ops into milliseconds for whichever side happens to cross
PyTorch's parallel grain size, which measures the scheduler, not the code.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.ops.reference_nms

from scaledet.ops import batched_nms, box_iou, soft_nms  # noqa: E402
from tests.ops import reference_nms  # noqa: E402


def clustered_boxes(n: int, objects: int, generator: torch.Generator, size: float = 640.0):
    """Detector-like boxes: ``n`` jittered copies of ``objects`` ground-truth boxes."""
    centre = torch.rand(objects, 2, generator=generator) * size
    wh = torch.rand(objects, 2, generator=generator) * size / 6 + 8
    pick = torch.randint(0, objects, (n,), generator=generator)
    jitter = 0.3 * (torch.rand(n, 4, generator=generator) - 0.5)  # +-15% of the object size
    c, s = centre[pick] + jitter[:, :2] * wh[pick], wh[pick] * (1 + jitter[:, 2:])
    return torch.cat([c - s / 2, c + s / 2], 1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def side_by_side(ours, peer, repeats: int) -> tuple[float, float]:
    ours(), peer()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(ours))
        b.append(timed(peer))
    return statistics.median(a), statistics.median(b)


def bench_batched_nms(repeats: int, g: torch.Generator) -> None:
    boxes = clustered_boxes(10_000, 400, g)
    scores = torch.rand(10_000, generator=g)
    classes = torch.randint(0, 80, (10_000,), generator=g)
    ours = batched_nms(boxes, scores, classes, 0.5)
    peer = torchvision.ops.batched_nms(boxes, scores, classes, 0.5)
    assert set(ours.tolist()) == set(peer.tolist()), "batched_nms disagrees with torchvision"
    t_ours, t_peer = side_by_side(lambda: batched_nms(boxes, scores, classes, 0.5),
                                  lambda: torchvision.ops.batched_nms(boxes, scores, classes, 0.5),
                                  repeats)
    print(f"batched_nms 10k boxes / 80 classes: scaledet {t_ours * 1e3:.2f} ms, "
          f"torchvision {t_peer * 1e3:.2f} ms, ratio {t_ours / t_peer:.2f} (target <= 1.1), "
          f"kept {len(ours)}")


def bench_soft_nms(repeats: int, g: torch.Generator) -> None:
    boxes = clustered_boxes(3000, 100, g)
    scores = torch.rand(3000, generator=g)
    py_boxes, py_scores = boxes.double().tolist(), scores.double().tolist()
    keep, decayed = soft_nms(boxes, scores.double(), method="gaussian")
    keep_ref, decayed_ref = reference_nms.soft_nms(py_boxes, py_scores, method="gaussian")
    assert keep.tolist() == keep_ref, "soft_nms disagrees with the reference"
    err = max((abs(x - y) for x, y in zip(decayed.tolist(), decayed_ref)), default=0.0)
    ref_repeats = max(1, repeats // 5)  # the reference takes seconds
    t_ours = statistics.median(timed(lambda: soft_nms(boxes, scores, method="gaussian"))
                               for _ in range(repeats))
    t_ref = statistics.median(timed(lambda: reference_nms.soft_nms(py_boxes, py_scores))
                              for _ in range(ref_repeats))
    print(f"soft_nms gaussian 3k boxes: scaledet {t_ours * 1e3:.1f} ms, pure-Python reference "
          f"{t_ref * 1e3:.0f} ms, speed-up {t_ref / t_ours:.0f}x (target >= 20x), "
          f"kept {len(keep)}, max |score diff| {err:.1e}")


def bench_giou(repeats: int, g: torch.Generator) -> None:
    a, b = clustered_boxes(4000, 300, g), clustered_boxes(4000, 300, g)
    torch.testing.assert_close(box_iou(a, b, "giou"), torchvision.ops.generalized_box_iou(a, b),
                               rtol=0, atol=1e-5)
    repeats = max(3, repeats // 3)  # each call allocates ~1 GB of temporaries on both sides
    t_ours, t_peer = side_by_side(lambda: box_iou(a, b, "giou"),
                                  lambda: torchvision.ops.generalized_box_iou(a, b), repeats)
    print(f"pairwise GIoU 4k x 4k: scaledet {t_ours * 1e3:.1f} ms, torchvision "
          f"{t_peer * 1e3:.1f} ms, ratio {t_ours / t_peer:.2f} (target <= 1.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{platform.machine()} {platform.processor() or ''}, threads {args.threads}, "
          f"repeats {args.repeats}")
    g = torch.Generator().manual_seed(0)
    bench_batched_nms(args.repeats, g)
    bench_soft_nms(args.repeats, g)
    bench_giou(args.repeats, g)


if __name__ == "__main__":
    main()
