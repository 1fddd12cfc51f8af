"""The bookkeeping of benchmarks/bench_faces.py: detection-to-face matching, the mean-layout
reference, and defaults that resolve TAR at FAR 1e-4."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load("bench_faces")


def test_match_is_greedy_by_score_and_one_to_one():
    gt = np.array([[0.0, 0, 10, 10], [20, 20, 40, 40], [100, 100, 110, 110]])
    boxes = np.array([[0.0, 0, 10, 9], [0, 0, 10, 10], [21, 21, 40, 40], [50, 50, 60, 60]])
    scores = np.array([0.9, 0.5, 0.8, 0.99])
    # the higher-scoring box takes face 0 though the other fits it better; face 2 unfound
    np.testing.assert_array_equal(bench.match(boxes, scores, gt), [0, 2, -1])
    np.testing.assert_array_equal(bench.match(boxes[:0], scores[:0], gt), [-1, -1, -1])


def test_mean_layout_placed_in_its_boxes_gives_the_landmarks_back():
    box = np.array([[10.0, 20, 50, 80], [0, 0, 20, 30]])
    layout = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    kp = np.concatenate([bench.place(layout, box), np.full((2, 5, 1), 2.0)], -1)
    kp[1, 0, 2] = 0  # a face with an unlabelled landmark is left out of the mean
    kp[1, :, :2] += 3
    records = [SimpleNamespace(boxes=box, keypoints=kp)]
    np.testing.assert_allclose(bench.mean_layout(SimpleNamespace(records=records)), layout)


def test_default_pairs_resolve_far_1e4():
    args = bench.parse_args([])
    assert 10 * args.pairs_per_fold * 1e-4 >= 1  # >= 10^4 impostor pairs
    assert args.threads == 1
