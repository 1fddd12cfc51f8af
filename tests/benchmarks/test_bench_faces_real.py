"""The real-face part of benchmarks/bench_faces.py: recall by face height, the non-face patches
a detection lands on, and the flags that score an existing detector without training."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.test_bench_faces import bench


def test_recall_by_height_splits_at_the_wider_edges():
    heights = np.array([8.0, 12, 29.9, 30, 49, 50, 200])
    hit = np.array([True, False, True, True, False, True, True])
    r = bench.recall_by_height(heights, hit)
    assert r["recall"] == pytest.approx(5 / 7)  # the 8 px face counts overall only
    assert r["recall_10-30px"] == 0.5
    assert r["recall_30-50px"] == 0.5
    assert r["recall_50px+"] == 1.0
    empty = bench.recall_by_height(np.array([60.0]), np.array([False]))
    assert empty["recall_10-30px"] is None and empty["recall_50px+"] == 0.0


def test_distractor_hits_counts_patches_not_boxes():
    patches = [[0, 0, 20, 20], [50, 50, 90, 90], [100, 100, 110, 110]]
    boxes = np.array([[1.0, 1, 20, 20], [0, 0, 19, 21], [60, 60, 90, 90], [200, 200, 210, 210]])
    # two boxes on the first patch count once; [60, 60, 90, 90] covers 0.56 of the second
    assert bench.distractor_hits(boxes, patches) == 2
    assert bench.distractor_hits(boxes[:0], patches) == 0
    assert bench.distractor_hits(boxes, []) == 0


def test_real_only_flags(tmp_path):
    args = bench.parse_args(["--real-only", "w.safetensors", "--real-test", "20"])
    assert args.real_only == "w.safetensors" and args.real_test == 20 and not args.no_real
    assert bench.parse_args([]).det_real_faces == 0.0
    missing = bench.parse_args(["--real-only", str(tmp_path / "missing.safetensors")])
    with pytest.raises(SystemExit, match="not a file"):
        bench.real_only(missing, tmp_path, {})
