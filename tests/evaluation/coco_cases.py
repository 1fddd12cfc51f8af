"""Random COCO ground truth + detections that hit every corner of pycocotools' semantics.

Crowd regions, ``ignore`` flags, zero-area and zero-size gts, ``area`` fields that differ from
the box area or sit exactly on the small/medium/large boundaries, an image-category with more
than 100 detections, score ties, exact IoU ties (duplicate gts, integer grids), images without
gt or detections, categories without gt, non-contiguous and unsorted image/category ids.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np


def make_case(seed: int, n_images: int = 14, n_cats: int = 5,
              integer: bool = True) -> tuple[dict, list]:
    """``(gt_dict, detections)``; with ``integer`` every coordinate and score is exact in
    float32 (so the xyxy tensor path gives identical numbers)."""
    rng = np.random.default_rng(seed)
    image_ids = [int(i) for i in rng.choice(10**6, n_images, replace=False)]
    cat_ids = [int(c) for c in rng.choice(np.arange(1, 1000), n_cats, replace=False)]
    with_gt = cat_ids[:-1]  # the last category never has ground truth
    anns, dets = [], []
    ann_ids = iter(rng.permutation(np.arange(1, 10**4))[:1000].tolist())
    crowded = int(rng.integers(n_images))  # this image-category gets > 100 detections
    for n, img in enumerate(image_ids):
        gts = [_gt(rng, img, with_gt, next(ann_ids), integer) for _ in range(rng.integers(0, 8))]
        if gts and rng.random() < 0.3:  # a duplicate gt: exact IoU ties
            dup = dict(gts[0], id=next(ann_ids))
            gts.append(dup)
        anns += gts
        n_dt = 130 if n == crowded else int(rng.integers(0, 16))
        cat = int(rng.choice(with_gt))
        for _ in range(n_dt):
            dets.append(_det(rng, img, gts, cat_ids, cat if n == crowded else None, integer))
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in image_ids]
    cats = [{"id": c, "name": f"cat{c}"} for c in rng.permutation(cat_ids).tolist()]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _box(rng, integer: bool) -> list[float]:
    s = float(rng.choice([1.0, 4.0, 12.0])) if integer else float(rng.uniform(0.5, 15))
    x, y = rng.integers(0, 20, 2) * s
    w, h = rng.integers(0, 13, 2) * s
    return [float(x), float(y), float(w), float(h)]


def _gt(rng, img: int, cats: list, ann_id: int, integer: bool) -> dict:
    box = _box(rng, integer)
    area = box[2] * box[3]
    u = rng.random()
    if u < 0.1:
        area = float(rng.choice([0.0, 32.0**2, 96.0**2]))  # on the area-range boundaries
    elif u < 0.3:
        area *= float(rng.uniform(0.3, 1.0))  # segment area < box area
    ann = {"id": ann_id, "image_id": img, "category_id": int(rng.choice(cats)), "bbox": box,
           "area": area, "iscrowd": int(rng.random() < 0.12)}
    if rng.random() < 0.15:
        ann["ignore"] = 1
    return ann


def _det(rng, img: int, gts: list, cat_ids: list, cat: int | None, integer: bool) -> dict:
    if gts and rng.random() < 0.75:
        g = gts[rng.integers(len(gts))]
        box = list(g["bbox"])
        if rng.random() < 0.7:  # jitter on the same grid: many exact IoU values
            step = max(box[2], box[3], 1.0) / 4
            box = [box[0] + step * rng.integers(-1, 2), box[1] + step * rng.integers(-1, 2),
                   max(0.0, box[2] + step * rng.integers(-1, 2)),
                   max(0.0, box[3] + step * rng.integers(-1, 2))]
        c = g["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
    else:
        box, c = _box(rng, integer), int(rng.choice(cat_ids))
    score = int(rng.integers(0, 9)) / 8 if integer else round(float(rng.random()), 2)
    return {"image_id": img, "category_id": cat if cat is not None else c,
            "bbox": [float(v) for v in box], "score": score}


def pycocotools_eval(gt: dict, dets: list):
    """Run pycocotools' COCOeval (bbox) quietly; returns the COCOeval object."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        res = coco.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev
