"""Encoder attention speed: softmax (SDPA) vs linear attention vs GAU in the hybrid encoder's
layer (:class:`scaledet.models.detr.encoder.AIFILayer`), by number of tokens.

The deepest level of a 320 px input has 10 x 10 = 100 tokens, 400 at 640 px, and a stride-16
level 1,600 at 640 px; softmax attention costs O(N^2 d), linear attention and GAU's
feed-forward part O(N d^2), so linear attention pays from some N on. Prints the median time of
a forward (batch 1, inference) and of a forward + backward (``--train-batch``) per kind and
N, and the ratio to softmax measured in the same run.

    python benchmarks/bench_attention.py --tokens 100 400 1600 6400 --dim 192 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from scaledet.models.detr.encoder import AIFILayer

KINDS = ("softmax", "linear", "gau")


def _median_time(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(kind: str, side: int, dim: int, batch: int, train: bool, runs: int) -> float:
    torch.manual_seed(0)
    layer = AIFILayer(dim, kind)
    x = torch.randn(batch, side * side, dim)
    if train:
        layer.train()

        def step():
            layer(x, side, side).sum().backward()
    else:
        layer.eval()

        def step():
            with torch.no_grad():
                layer(x, side, side)
    return _median_time(step, runs, warmup=3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[100, 400, 1600, 6400],
                   help="tokens per image (perfect squares: a side x side map)")
    p.add_argument("--dim", type=int, default=192, help="channels (fcos-n's deepest level)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--train-batch", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, dim {args.dim}")
    print(f"| tokens | kind | infer b1 ms | vs softmax | train b{args.train_batch} ms | "
          "vs softmax |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in args.tokens:
        side = int(round(n ** 0.5))
        if side * side != n:
            raise SystemExit(f"--tokens {n} is not a perfect square")
        base = {}
        for kind in KINDS:
            infer = measure(kind, side, args.dim, 1, False, args.runs) * 1e3
            train = measure(kind, side, args.dim, args.train_batch, True,
                            max(3, args.runs // 3)) * 1e3
            base.setdefault("infer", infer)
            base.setdefault("train", train)
            print(f"| {n} | {kind} | {infer:.2f} | {infer / base['infer']:.2f}x | {train:.1f} | "
                  f"{train / base['train']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
