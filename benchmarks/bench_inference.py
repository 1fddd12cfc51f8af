"""Scale tools and export, measured side by side in one run (CPU, trained weights needed).

    python benchmarks/bench_inference.py --weights W --data DATA [--threads 2] [--json OUT]
        [--canvases 12] [--val-images 200] [--skip slicing,tta,onnx]

- slicing: the built-in dataset rendered large: ``--canvases`` 2048 x 2048 canvases, each with
  8 synthetic 320 px images (``synth_image``, their native object sizes 6-160 px, a third of them
  COCO-small) pasted at random cells of a 6 x 6 grid on a grey noise background. COCO AP
  (scaledet's pycocotools-exact evaluator) and seconds per canvas of: the plain predictor
  (letterbox to ``imgsz``), the plain predictor at full resolution (``imgsz`` 2048), and sliced
  inference (``imgsz`` tiles, overlap 0.2, NMM or NMS, with / without the full-image pass).
- tta: the first ``--val-images`` images of DATA's val split, plain vs image-pyramid TTA
  (scales, flip, SNIP ranges; WBF vs NMS merging): AP, AP_small, seconds per image.
- onnx: batch-1 latency of the dense forward (``predict_raw``, no NMS) at ``imgsz``, PyTorch vs
  onnxruntime on the same graph, timings interleaved (median of ``--runs``); both on
  ``--threads`` threads.

All detectors run with conf 0.01, at most 100 detections per image (COCO's maxDets).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scaledet.data import load_dataset, read_image, to_coco_dict
from scaledet.data.synth import CLASS_NAMES, synth_image
from scaledet.evaluation.coco import COCOEvaluator
from scaledet.inference import TTA, Predictor, Slicing

CONF, MAX_DET, CANVAS, CELL_IMAGES = 0.01, 100, 2048, 8


# ---- data ---------------------------------------------------------------------------------

def large_canvases(n: int, seed: int = 0) -> tuple[list[np.ndarray], dict]:
    """``n`` 2048 px canvases of pasted synth images and their COCO ground truth."""
    rng = np.random.default_rng(seed)
    cells, cell = 6, CANVAS // 6
    images, anns = [], []
    for i in range(n):
        canvas = np.clip(rng.normal(114, 12, (CANVAS, CANVAS, 3)), 0, 255).astype(np.uint8)
        for c in rng.choice(cells * cells, CELL_IMAGES, replace=False):
            im, boxes, labels = synth_image(rng, 320)
            x0 = (c % cells) * cell + int(rng.integers(0, cell - 320))
            y0 = (c // cells) * cell + int(rng.integers(0, cell - 320))
            canvas[y0:y0 + 320, x0:x0 + 320] = im
            for (a, b, x2, y2), lab in zip(boxes.tolist(), labels.tolist()):
                w, h = x2 - a, y2 - b
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": lab + 1,
                             "bbox": [a + x0, b + y0, w, h], "area": w * h, "iscrowd": 0})
        images.append(canvas)
    gt = {"images": [{"id": i + 1, "file_name": f"canvas{i}.png", "width": CANVAS,
                      "height": CANVAS} for i in range(n)],
          "annotations": anns,
          "categories": [{"id": k + 1, "name": name} for k, name in enumerate(CLASS_NAMES)]}
    return images, gt


# ---- measurement ---------------------------------------------------------------------------

def evaluate(predictor: Predictor, images: list, gt: dict) -> dict:
    """COCO AP of ``predictor`` on ``images`` (image ids 1..N) and seconds per image."""
    evaluator = COCOEvaluator(gt)
    ids = [im["id"] for im in gt["images"]]
    times = []
    for image_id, image in zip(ids, images):
        t0 = time.perf_counter()
        (r,) = predictor(image)
        times.append(time.perf_counter() - t0)
        labels = torch.as_tensor(predictor.category_ids)[r.labels]
        evaluator.update(image_id, r.boxes, r.scores, labels)
    s = evaluator.compute().stats
    return {"AP": round(float(s[0]), 4), "AP50": round(float(s[1]), 4),
            "AP_small": round(float(s[3]), 4), "AP_medium": round(float(s[4]), 4),
            "AP_large": round(float(s[5]), 4), "s_per_image": round(statistics.median(times), 4)}


def bench_slicing(weights: str, n: int) -> dict:
    images, gt = large_canvases(n)
    print(f"slicing: {n} canvases {CANVAS}x{CANVAS}, {len(gt['annotations'])} objects "
          f"({sum(a['area'] < 32 ** 2 for a in gt['annotations'])} small)")
    base = Predictor(weights, conf=CONF, max_det=MAX_DET)
    tile = base.imgsz
    modes = {
        f"letterbox {base.imgsz} (plain)": {},
        f"full resolution (imgsz {CANVAS})": {"imgsz": CANVAS},
        f"sliced {tile} px, overlap 0.2, NMM (default)": {
            "slicing": Slicing(tile=tile, overlap=0.2)},
        f"sliced {tile} px, overlap 0.2, NMM + full image": {
            "slicing": Slicing(tile=tile, overlap=0.2, full_image=True)},
        f"sliced {tile} px, overlap 0.2, NMS": {
            "slicing": Slicing(tile=tile, overlap=0.2, merge="nms")},
        f"sliced {tile} px, overlap 0.2, NMS + full image": {
            "slicing": Slicing(tile=tile, overlap=0.2, merge="nms", full_image=True)},
    }
    out = {}
    for name, kw in modes.items():
        out[name] = evaluate(Predictor(weights, conf=CONF, max_det=MAX_DET, batch_size=8, **kw),
                             images, gt)
        print(f"  {name:55s} {out[name]}")
    return out


def bench_tta(weights: str, data: str, n: int) -> dict:
    ds = load_dataset(data, "val")
    gt = to_coco_dict(ds)
    gt["images"] = gt["images"][:n]
    keep = {im["id"] for im in gt["images"]}
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
    images = [read_image(Path(ds.image_root) / im["file_name"]) for im in gt["images"]]
    print(f"tta: {len(images)} val images, {len(gt['annotations'])} objects")
    s3 = (0.75, 1.0, 1.5)
    modes = {
        "plain": None,
        "flip (WBF)": TTA((1.0,), flip=True),
        "scales 0.75,1,1.5 (WBF)": TTA(s3),
        "scales 0.75,1,1.5 + flip (WBF)": TTA(s3, flip=True),
        "scales 0.75,1,1.5 + flip + SNIP (WBF)": TTA.parse("scales=0.75,1,1.5,flip,snip"),
        "scales 0.75,1,1.5 + flip (hard NMS)": TTA(s3, flip=True, merge="nms"),
        "scales 0.75,1,1.5 + flip + SNIP (hard NMS)": TTA.parse(
            "scales=0.75,1,1.5,flip,snip", merge="nms"),
        "scales 1,1.5,2 + flip + SNIP (WBF)": TTA.parse("scales=1,1.5,2,flip,snip"),
    }
    out = {}
    for name, tta in modes.items():
        out[name] = evaluate(Predictor(weights, conf=CONF, max_det=MAX_DET, tta=tta),
                             images, gt)
        print(f"  {name:45s} {out[name]}")
    return out


def bench_onnx(weights: str, runs: int, threads: int) -> dict:
    import onnxruntime as ort

    from scaledet.inference.export import export_onnx
    from scaledet.models.checkpoint import model_from_weights

    model, meta = model_from_weights(weights)
    imgsz = int(meta.get("imgsz", 320))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "m.onnx", imgsz=imgsz)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, imgsz, imgsz)
    feed = {"images": x.numpy()}
    with torch.inference_mode():
        ref = model.predict_raw(x)
        box_diff, score_diff = (float(np.abs(o - r.numpy()).max())
                                for o, r in zip(sess.run(None, feed), ref))
        torch_ms, ort_ms = [], []
        for i in range(runs + 10):
            t0 = time.perf_counter()
            model.predict_raw(x)
            t1 = time.perf_counter()
            sess.run(None, feed)
            t2 = time.perf_counter()
            if i >= 10:
                torch_ms.append((t1 - t0) * 1e3)
                ort_ms.append((t2 - t1) * 1e3)
    out = {"imgsz": imgsz, "pytorch_ms": round(statistics.median(torch_ms), 2),
           "onnxruntime_ms": round(statistics.median(ort_ms), 2),
           "max_abs_diff_boxes_px": box_diff, "max_abs_diff_scores": score_diff, "runs": runs}
    out["speedup_ort_vs_pytorch"] = round(out["pytorch_ms"] / out["onnxruntime_ms"], 2)
    print(f"onnx: {out}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True, help="the built-in dataset (COCO folder)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--canvases", type=int, default=12)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--skip", default="", help="comma-separated: slicing,tta,onnx")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    skip = set(filter(None, a.skip.split(",")))
    result = {"machine": f"{platform.machine()} {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}", "weights": a.weights}
    if "onnx" not in skip:
        result["onnx"] = bench_onnx(a.weights, a.runs, a.threads)
    if "slicing" not in skip:
        result["slicing"] = bench_slicing(a.weights, a.canvases)
    if "tta" not in skip:
        result["tta"] = bench_tta(a.weights, a.data, a.val_images)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
