"""COCO bbox evaluation: scaledet vs pycocotools vs faster-coco-eval, side by side.

Generates a COCO-val-like problem (default 5,000 images, 80 categories, ~7 gts and 60
detections per image), writes the gt and results json files, and times each tool from the json
paths to the 12 stats (load + evaluate + accumulate + summarize). Checks that the stats are
identical and prints time ratios.

    .venv/bin/python benchmarks/bench_coco_eval.py                     # 5,000 images
    .venv/bin/python benchmarks/bench_coco_eval.py --images 500 5000 20000 --repeat 3
    .venv/bin/python benchmarks/bench_coco_eval.py --images 20000 --tools scaledet faster-coco-eval
    .venv/bin/python benchmarks/bench_coco_eval.py --iou-type keypoints --images 500 --repeat 5

``--iou-type keypoints`` times the OKS evaluation (10 stats) on a COCO-person-like keypoint
problem (:func:`make_keypoint_problem`) instead, scaledet vs pycocotools.

faster-coco-eval is optional (``pip install -e '.[bench]'``); it is skipped with a message when
missing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

TOOLS = ("scaledet", "pycocotools", "faster-coco-eval")


def make_problem(n_images: int, n_cats: int = 80, gt_per_image: float = 7.0,
                 dt_per_image: int = 60, seed: int = 0) -> tuple[dict, list]:
    """A random COCO ground truth and results list, COCO-val-like in size and mix.

    gts: Poisson(7) per image, sizes log-uniform 4..400 px, a few categories per image (skewed
    like COCO), 1% crowd, segment ``area`` 40-100% of the box. Detections: 1-4 jittered copies
    of each gt (15% with a wrong category) plus random boxes up to 60 per image; scores rounded
    to 3 decimals (ties happen), coordinates to 2.
    """
    rng = np.random.default_rng(seed)
    W, H = 640.0, 480.0
    image_ids = 1 + 3 * np.arange(n_images)  # non-contiguous
    cat_ids = np.arange(1, n_cats + 1) + (np.arange(n_cats) // 10)  # gaps like COCO's
    popularity = 1.0 / np.arange(1, n_cats + 1) ** 0.8
    popularity /= popularity.sum()
    img_cats = rng.choice(n_cats, size=(n_images, 3), p=popularity)

    n_gt = rng.poisson(gt_per_image, n_images)
    g_img = np.repeat(np.arange(n_images), n_gt)
    g_cat = img_cats[g_img, rng.integers(0, 3, len(g_img))]
    g_box = _random_boxes(rng, len(g_img), W, H)
    crowd = rng.random(len(g_img)) < 0.01
    area = g_box[:, 2] * g_box[:, 3] * rng.uniform(0.4, 1.0, len(g_img))

    copies = rng.integers(1, 5, len(g_img))
    d_src = np.repeat(np.arange(len(g_img)), copies)
    d_img = g_img[d_src]
    d_cat = np.where(rng.random(len(d_src)) < 0.85, g_cat[d_src], rng.integers(0, n_cats, len(d_src)))
    jitter = rng.normal(0, 0.1, (len(d_src), 4))
    src = g_box[d_src]
    d_box = np.stack([src[:, 0] + jitter[:, 0] * src[:, 2], src[:, 1] + jitter[:, 1] * src[:, 3],
                      src[:, 2] * np.exp(jitter[:, 2]), src[:, 3] * np.exp(jitter[:, 3])], 1)
    d_score = rng.uniform(0.2, 1.0, len(d_src))
    # cap at dt_per_image per image, fill the rest with random boxes
    order = np.argsort(d_img, kind="stable")
    d_img, d_cat, d_box, d_score = d_img[order], d_cat[order], d_box[order], d_score[order]
    first = np.searchsorted(d_img, d_img)
    keep = np.arange(len(d_img)) - first < dt_per_image
    d_img, d_cat, d_box, d_score = d_img[keep], d_cat[keep], d_box[keep], d_score[keep]
    n_fill = dt_per_image - np.bincount(d_img, minlength=n_images)
    f_img = np.repeat(np.arange(n_images), n_fill)
    f_cat = np.where(rng.random(len(f_img)) < 0.5, img_cats[f_img, rng.integers(0, 3, len(f_img))],
                     rng.integers(0, n_cats, len(f_img)))
    d_img = np.concatenate([d_img, f_img])
    d_cat = np.concatenate([d_cat, f_cat])
    d_box = np.concatenate([d_box, _random_boxes(rng, len(f_img), W, H)])
    d_score = np.concatenate([d_score, rng.uniform(0.0, 0.6, len(f_img))])

    gt = {
        "images": [{"id": int(i), "width": 640, "height": 480, "file_name": f"{i}.jpg"}
                   for i in image_ids],
        "annotations": [{"id": k + 1, "image_id": int(image_ids[i]), "category_id": int(cat_ids[c]),
                         "bbox": b, "area": a, "iscrowd": int(z)}
                        for k, (i, c, b, a, z) in enumerate(zip(
                            g_img, g_cat, np.round(g_box, 2).tolist(), np.round(area, 2).tolist(),
                            crowd))],
        "categories": [{"id": int(c), "name": f"class{c}"} for c in cat_ids],
    }
    dets = [{"image_id": int(image_ids[i]), "category_id": int(cat_ids[c]), "bbox": b, "score": s}
            for i, c, b, s in zip(d_img, d_cat, np.round(d_box, 2).tolist(),
                                  np.round(d_score, 3).tolist())]
    return gt, dets


def make_keypoint_problem(n_images: int, seed: int = 0) -> tuple[dict, list]:
    """A random COCO person-keypoint ground truth and results list (17 joints).

    gts: Poisson(3) people per image, sizes log-uniform 4..400 px, joints placed in the box
    with flags v = 0 / 1 / 2 (20% / 20% / 60%), 10% without labelled joints and 3% crowd (both
    ``num_keypoints`` 0). Detections: 1-3 copies of each gt with Gaussian joint noise of 2-30% of
    the object's scale, plus random people, 25 per image (above the 20 that count); scores
    rounded to 3 decimals, coordinates to 2.
    """
    rng = np.random.default_rng(seed)
    W, H, K = 640.0, 480.0, 17
    image_ids = 1 + 3 * np.arange(n_images)
    n_gt = rng.poisson(3.0, n_images)
    g_img = np.repeat(np.arange(n_images), n_gt)
    G = len(g_img)
    g_box = _random_boxes(rng, G, W, H)
    rel = rng.uniform(0, 1, (G, K, 2))
    g_xy = g_box[:, None, :2] + rel * g_box[:, None, 2:]
    v = rng.choice([0, 1, 2], (G, K), p=[0.2, 0.2, 0.6])
    crowd = rng.random(G) < 0.03
    v[(rng.random(G) < 0.1) | crowd] = 0
    g_xy[v == 0] = 0.0
    area = g_box[:, 2] * g_box[:, 3] * rng.uniform(0.4, 0.8, G)

    copies = rng.integers(1, 4, G)
    d_src = np.repeat(np.arange(G), copies)
    scale = np.sqrt(area[d_src])[:, None, None] * rng.choice([0.02, 0.05, 0.1, 0.3],
                                                              (len(d_src), 1, 1))
    d_xy = g_box[d_src, None, :2] + rel[d_src] * g_box[d_src, None, 2:]
    d_xy = d_xy + rng.normal(0, 1, d_xy.shape) * scale
    d_img = g_img[d_src]
    d_score = rng.uniform(0.2, 1.0, len(d_src))
    keep = np.arange(len(d_img)) - np.searchsorted(d_img, d_img) < 25  # d_img is sorted
    d_img, d_xy, d_score = d_img[keep], d_xy[keep], d_score[keep]
    n_fill = 25 - np.bincount(d_img, minlength=n_images)
    f_img = np.repeat(np.arange(n_images), n_fill)
    f_box = _random_boxes(rng, len(f_img), W, H)
    f_xy = f_box[:, None, :2] + rng.uniform(0, 1, (len(f_img), K, 2)) * f_box[:, None, 2:]
    d_img = np.concatenate([d_img, f_img])
    d_xy = np.concatenate([d_xy, f_xy])
    d_score = np.concatenate([d_score, rng.uniform(0.0, 0.6, len(f_img))])
    d_kps = np.concatenate([np.round(d_xy, 2), np.round(rng.uniform(0, 1, (len(d_img), K, 1)),
                                                        3)], axis=2).reshape(len(d_img), -1)
    g_kps = np.concatenate([np.round(g_xy, 2), v[:, :, None]], axis=2).reshape(G, -1)
    gt = {
        "images": [{"id": int(i), "width": 640, "height": 480, "file_name": f"{i}.jpg"}
                   for i in image_ids],
        "annotations": [{"id": k + 1, "image_id": int(image_ids[i]), "category_id": 1,
                         "bbox": b, "area": a, "iscrowd": int(z), "num_keypoints": int(n),
                         "keypoints": [int(x) if j % 3 == 2 else x for j, x in enumerate(kp)]}
                        for k, (i, b, a, z, n, kp) in enumerate(zip(
                            g_img, np.round(g_box, 2).tolist(), np.round(area, 2).tolist(),
                            crowd, (v > 0).sum(axis=1), g_kps.tolist()))],
        "categories": [{"id": 1, "name": "person", "keypoints": [f"joint{j}" for j in range(K)],
                        "skeleton": []}],
    }
    dets = [{"image_id": int(image_ids[i]), "category_id": 1, "keypoints": kp, "score": s}
            for i, kp, s in zip(d_img, d_kps.tolist(), np.round(d_score, 3).tolist())]
    return gt, dets


def _random_boxes(rng: np.random.Generator, n: int, W: float, H: float) -> np.ndarray:
    side = np.exp(rng.uniform(np.log(4), np.log(400), n))
    aspect = np.exp(rng.uniform(-0.7, 0.7, n))
    w, h = np.minimum(side * aspect, W - 1), np.minimum(side / aspect, H - 1)
    return np.stack([rng.uniform(0, W - w), rng.uniform(0, H - h), w, h], 1)


def run_scaledet(gt_path: Path, dt_path: Path, iou_type: str = "bbox") -> np.ndarray:
    if iou_type == "keypoints":
        from scaledet.evaluation.keypoints import evaluate_keypoints

        result = evaluate_keypoints(gt_path, dt_path)
    else:
        from scaledet.evaluation import evaluate_coco

        result = evaluate_coco(gt_path, dt_path)
    result.summary()
    return result.stats


def run_pycocotools(gt_path: Path, dt_path: Path, iou_type: str = "bbox") -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(dt_path)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def run_faster_coco_eval(gt_path: Path, dt_path: Path, iou_type: str = "bbox") -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval_faster(gt, gt.loadRes(str(dt_path)), "bbox", print_function=lambda *a: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


RUNNERS = {"scaledet": run_scaledet, "pycocotools": run_pycocotools,
           "faster-coco-eval": run_faster_coco_eval}


def available(tools: list[str]) -> list[str]:
    out = []
    for tool in tools:
        module = {"pycocotools": "pycocotools", "faster-coco-eval": "faster_coco_eval"}.get(tool)
        if module:
            try:
                __import__(module)
            except ImportError:
                print(f"skipping {tool}: not installed (pip install -e '.[bench]' / '.[test]')")
                continue
        out.append(tool)
    return out


def bench(n_images: int, tools: list[str], repeat: int, seed: int,
          iou_type: str = "bbox") -> dict[str, float]:
    if iou_type == "keypoints":
        gt, dets = make_keypoint_problem(n_images, seed=seed)
    else:
        gt, dets = make_problem(n_images, seed=seed)
    print(f"\n== {iou_type}: {n_images} images, {len(gt['annotations'])} gts, {len(dets)} "
          f"detections, {len(gt['categories'])} categories")
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = Path(tmp) / "gt.json", Path(tmp) / "dt.json"
        gt_path.write_text(json.dumps(gt))
        dt_path.write_text(json.dumps(dets))
        del gt, dets
        times: dict[str, list[float]] = {t: [] for t in tools}
        stats: dict[str, np.ndarray] = {}
        for _ in range(repeat):
            for tool in tools:  # alternate the tools within each round
                gc.collect()
                t0 = time.perf_counter()
                stats[tool] = RUNNERS[tool](gt_path, dt_path, iou_type)
                times[tool].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        json.loads(dt_path.read_text())
        json.loads(gt_path.read_text())
        json_s = time.perf_counter() - t0
    med = {t: statistics.median(v) for t, v in times.items()}
    for tool in tools:
        ratio = f"  {med[tool] / med['scaledet']:5.1f}x scaledet's time" if "scaledet" in med else ""
        print(f"{tool:>17}: median {med[tool]:7.2f} s  (runs {', '.join(f'{v:.2f}' for v in times[tool])}){ratio}")
    print(f"{'json.loads':>17}: {json_s:7.2f} s (stdlib, both files; part of every tool's time)")
    if "scaledet" in stats:
        for tool in tools:
            if tool != "scaledet":
                diff = float(np.abs(stats[tool] - stats["scaledet"]).max())
                same = "identical" if diff == 0 else f"max |diff| {diff:.2e}"
                print(f"stats scaledet vs {tool}: {same}")
    shown = (0, 1, 5) if iou_type == "keypoints" else (0, 1, 8)
    print("AP, AP50, " + ("AR" if iou_type == "keypoints" else "AR100") + " =",
          ", ".join(f"{stats[tools[0]][i]:.4f}" for i in shown))
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[5000])
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iou-type", choices=["bbox", "keypoints"], default="bbox")
    args = parser.parse_args()
    tools = available(args.tools)
    if args.iou_type == "keypoints" and "faster-coco-eval" in tools:
        print("skipping faster-coco-eval: the keypoint comparison is scaledet vs pycocotools")
        tools.remove("faster-coco-eval")
    results = {n: bench(n, tools, args.repeat, args.seed, args.iou_type) for n in args.images}
    if len(results) > 1:
        print("\nscaling (median seconds):")
        print("images  " + "  ".join(f"{t:>16}" for t in tools))
        for n, med in results.items():
            print(f"{n:>6}  " + "  ".join(f"{med[t]:16.2f}" for t in tools))


if __name__ == "__main__":
    main()
