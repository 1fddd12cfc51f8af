"""The numeric pieces of the COCO engine against pycocotools' C IoU, brute force, hypothesis."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask

from scaledet.evaluation import evaluate_coco
from scaledet.evaluation.coco_engine import RECALL_THRESHOLDS, _counts_reaching, coco_pair_iou
from tests.evaluation.coco_cases import pycocotools_eval


def test_pair_iou_is_bitwise_pycocotools():
    rng = np.random.default_rng(0)
    dt = np.c_[rng.uniform(0, 50, (300, 2)), rng.uniform(0, 40, (300, 2))]
    gt = np.c_[rng.uniform(0, 50, (20, 2)), rng.uniform(0, 40, (20, 2))]
    gt[3, 2] = 0.0  # a zero-width gt
    crowd = rng.random(20) < 0.3
    expected = mask.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist())  # (300, 20)
    d, g = np.meshgrid(np.arange(300), np.arange(20), indexing="ij")
    got = coco_pair_iou(dt[d.ravel()], gt[g.ravel()], crowd[g.ravel()]).reshape(300, 20)
    np.testing.assert_array_equal(got, expected)


def test_counts_reaching_is_the_smallest_count():
    npig = np.arange(1, 400)
    c = _counts_reaching(npig)
    for k, n in enumerate(npig):
        for r, thr in enumerate(RECALL_THRESHOLDS):
            assert c[k, r] / n >= thr and (c[k, r] == 0 or (c[k, r] - 1) / n < thr)


_box = st.tuples(*[st.integers(0, 6)] * 2, *[st.integers(0, 5)] * 2).map(
    lambda b: [b[0] * 4.0, b[1] * 4.0, b[2] * 4.0, b[3] * 4.0])


@settings(max_examples=40, deadline=None)
@given(gts=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 2), _box, st.booleans()),
                    max_size=8),
       dets=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 2), _box,
                               st.integers(0, 4)), min_size=1, max_size=12))
def test_random_tiny_problems_match_pycocotools(gts, dets):
    anns = [{"id": i + 1, "image_id": img, "category_id": c, "bbox": b, "area": b[2] * b[3],
             "iscrowd": int(crowd)} for i, (img, c, b, crowd) in enumerate(gts)]
    gt = {"images": [{"id": i} for i in (1, 2, 3)], "annotations": anns,
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    results = [{"image_id": img, "category_id": c, "bbox": b, "score": s / 4}
               for img, c, b, s in dets]
    ev = pycocotools_eval(gt, results)
    result = evaluate_coco(gt, results)
    np.testing.assert_array_equal(result.stats, ev.stats)
    np.testing.assert_array_equal(result.precision, ev.eval["precision"])
    np.testing.assert_array_equal(result.recall, ev.eval["recall"])
