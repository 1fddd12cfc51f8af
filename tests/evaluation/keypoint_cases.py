"""Random COCO keypoint ground truth + results that hit every corner of pycocotools' OKS
evaluation.

Crowd regions (with and without labelled points), ``v = 0`` points (at 0, 0 as in COCO, or
anywhere), gts without labelled points, ``num_keypoints`` that disagrees with the flags, ``area``
fields that differ from the box or sit on the medium/large boundaries, an image-category with
more than 20 detections, tied scores, exact OKS ties (duplicate gts, exact copies), empty images,
images with only detections or only gts, a category without gt, a category without joint names,
non-contiguous unsorted ids, and (``with_bbox``) results carrying a ``bbox``.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np


def make_keypoint_case(seed: int, joints: int = 17, n_images: int = 12, n_cats: int = 3,
                       with_bbox: bool = False, integer: bool = False
                       ) -> tuple[dict, list, list[float] | None]:
    """``(gt_dict, detections, sigmas)``; ``sigmas`` is None for 17 joints (COCO's), else
    ``joints`` random values. With ``integer`` every coordinate is a whole pixel."""
    rng = np.random.default_rng(seed)
    sigmas = None if joints == 17 else np.round(rng.uniform(0.02, 0.11, joints), 3).tolist()
    image_ids = [int(i) for i in rng.choice(10**6, n_images, replace=False)]
    cat_ids = [int(c) for c in rng.choice(np.arange(1, 1000), n_cats, replace=False)]
    with_gt = cat_ids[:-1]  # the last category never has ground truth
    ann_ids = iter(rng.permutation(np.arange(1, 10**4))[:2000].tolist())
    crowded = int(rng.integers(n_images))  # this image-category gets > 20 detections
    anns, dets = [], []
    for n, img in enumerate(image_ids):
        kind = rng.choice(["empty", "dets only", "gts only", "both"], p=[0.1, 0.1, 0.1, 0.7])
        if n == crowded:
            kind = "both"
        n_gt = int(rng.integers(1, 7)) if kind in ("gts only", "both") else 0
        gts = [_gt(rng, img, int(rng.choice(with_gt)), next(ann_ids), joints, integer)
               for _ in range(n_gt)]
        if gts and rng.random() < 0.3:  # a duplicate gt: exact OKS ties
            gts.append(dict(copy.deepcopy(gts[0]), id=next(ann_ids)))
        anns += gts
        if kind in ("empty", "gts only"):
            continue
        n_dt = 30 if n == crowded else int(rng.integers(1, 14))
        cat = int(rng.choice(with_gt)) if n == crowded else None
        for _ in range(n_dt):
            dets.append(_det(rng, img, gts, cat_ids, cat, joints, with_bbox, integer))
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in image_ids]
    cats = []
    for k, c in enumerate(cat_ids):
        cat = {"id": c, "name": f"cat{c}", "supercategory": "thing"}
        if k != 1:  # category 1 has no joint names: K comes from its annotations
            cat["keypoints"] = [f"joint{j}" for j in range(joints)]
            cat["skeleton"] = [[j + 1, j + 2] for j in range(joints - 1)]
        cats.append(cat)
    order = rng.permutation(len(cats))
    return ({"images": images, "annotations": anns, "categories": [cats[i] for i in order]},
            dets, sigmas)


def _round(values: np.ndarray, integer: bool) -> list[float]:
    return (np.round(values) if integer else np.round(values, 2)).tolist()


def _gt(rng, img: int, cat: int, ann_id: int, joints: int, integer: bool) -> dict:
    side = float(np.exp(rng.uniform(np.log(6), np.log(250))))
    aspect = float(np.exp(rng.uniform(-0.6, 0.6)))
    w, h = side * aspect, side / aspect
    x, y = rng.uniform(0, 400, 2)
    box = _round(np.array([x, y, w, h]), integer)
    px = box[0] + rng.uniform(0, 1, joints) * box[2]
    py = box[1] + rng.uniform(0, 1, joints) * box[3]
    v = rng.choice([0, 1, 2], joints, p=[0.3, 0.2, 0.5])
    crowd = rng.random() < 0.1
    u = rng.random()
    if u < 0.12 or (crowd and u < 0.6):
        v[:] = 0  # no labelled point: OKS against the grown box, and ignored
    unlabelled_at_origin = rng.random() < 0.7
    px = np.where((v == 0) & unlabelled_at_origin, 0.0, px)
    py = np.where((v == 0) & unlabelled_at_origin, 0.0, py)
    keypoints = np.stack([_round(px, integer), _round(py, integer), v], 1).reshape(-1)
    area = box[2] * box[3] * float(rng.uniform(0.4, 1.0))
    u = rng.random()
    if u < 0.1:
        area = float(rng.choice([32.0**2, 96.0**2]))  # on the area-range boundaries
    num = int((v > 0).sum())
    if rng.random() < 0.05:
        num = 0 if num else 3  # the field disagrees with the flags: the field decides "ignore"
    return {"id": ann_id, "image_id": img, "category_id": cat, "bbox": box,
            "area": round(area, 2), "iscrowd": int(crowd), "num_keypoints": num,
            "keypoints": [float(k) if not integer else int(k) for k in keypoints]}


def _det(rng, img: int, gts: list, cat_ids: list, cat: int | None, joints: int,
         with_bbox: bool, integer: bool) -> dict:
    if gts and rng.random() < 0.8:
        g = gts[rng.integers(len(gts))]
        kp = np.array(g["keypoints"], np.float64).reshape(-1, 3)
        bx, by, bw, bh = g["bbox"]
        base = kp[:, :2].copy()
        unset = (kp[:, 2] == 0) & (base == 0).all(axis=1)
        base[unset] = np.c_[bx + rng.uniform(0, 1, unset.sum()) * bw,
                            by + rng.uniform(0, 1, unset.sum()) * bh]
        scale = float(rng.choice([0.0, 0.02, 0.05, 0.1, 0.3]))  # 0: an exact copy
        xy = base + rng.normal(0, 1, base.shape) * scale * np.sqrt(max(bw * bh, 1.0))
        c = g["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
        box = [bx, by, bw, bh]
    else:
        x, y = rng.uniform(0, 400, 2)
        w, h = rng.uniform(4, 200, 2)
        xy = np.c_[x + rng.uniform(0, 1, joints) * w, y + rng.uniform(0, 1, joints) * h]
        c = int(rng.choice(cat_ids))
        box = [float(x), float(y), float(w), float(h)]
    point_scores = np.round(rng.uniform(0, 1, joints), 3)
    keypoints = np.c_[_round(xy[:, 0], integer), _round(xy[:, 1], integer), point_scores]
    score = int(rng.integers(0, 9)) / 8 if rng.random() < 0.6 else round(float(rng.random()), 2)
    det = {"image_id": img, "category_id": cat if cat is not None else c,
           "keypoints": keypoints.reshape(-1).tolist(), "score": score}
    if with_bbox:
        det["bbox"] = [float(v) for v in _round(np.array(box) * rng.uniform(0.8, 1.2, 4),
                                                integer)]
    return det


def pycocotools_keypoint_eval(gt: dict, dets: list, sigmas: list[float] | None = None):
    """Run pycocotools' COCOeval (keypoints) quietly; returns the COCOeval object."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        res = coco.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco, res, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.array(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev
