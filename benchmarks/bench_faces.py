"""Faces end to end on one machine: the face-n detector, four margin losses, and the latency of
detect + align + embed.

1. **Detection** (``--det-minutes`` or ``--det-epochs``): ``face-n`` trained with
   ``scaledet.train`` on ``scaledet data synth --task faces`` scenes (model selection on its
   ``val`` split; ``--det-real-faces F``: a fraction ``F`` of its train / val faces are real
   LFW training faces, as ``--real-faces``), scored on a separate ``test`` split: COCO box mAP
   (``scaledet.val``), WIDER-style AP on easy / medium / hard (keep lists by face height,
   easy >= 50, medium >= 30, hard >= 10 px: ``derive_setting_lists``, *not* the official
   lists), recall at ``--conf`` and the landmark NME (inter-ocular) of the test faces found at
   IoU >= 0.5 by a detection scoring >= ``--conf``, beside two references on the same faces:
   the training set's mean layout placed in the true box, and in the detected box.
   Beside it, the same detector on **real faces** (``--real-test`` scenes of
   ``scaledet data synth --task real-faces``: scikit-image's held-out LFW faces 70-99, 12-96
   px, among its 100 non-face patches; :mod:`scaledet.data.real_faces`): COCO box mAP / AP50,
   the WIDER-style AP by face height, recall at ``--conf`` (IoU >= 0.5) overall and by height
   (10-30, 30-50, >= 50 px), confident detections that found no face per image, and the
   fraction of non-face patches that drew one. No landmarks there. ``--real-only WEIGHTS``
   does just this for an existing detector (with ``--det-data``: its test split beside it)
   and writes ``OUT/report_real.json``; ``--no-real`` skips it.
2. **Recognition** (``--rec-minutes`` or ``--rec-epochs``, one seed): the embedder of
   ``scaledet face train`` (``--arch``, ``--imgsz``) trained with softmax, SphereFace, CosFace
   and ArcFace on ``--task face-identities`` crops, without validation on the verify pairs (so
   no checkpoint is chosen on the test pairs: the last one is scored). Then the LFW protocol
   on the disjoint verify identities: 10-fold accuracy, ROC AUC, TAR at FAR 1e-3 and 1e-4 on
   the aligned crops, and the same end to end on their unaligned photos (``verify_scenes``)
   through the trained detector (:class:`scaledet.inference.faces.FacePipeline`). TAR at FAR
   ``f`` rests on the ``f * (different pairs)`` highest impostor scores: the table says how
   many; below 1 it is TAR at FAR 0 (``--pairs-per-fold 1000`` gives 10^4 impostor pairs, the
   least that resolves 1e-4).
3. **CPU latency per face**, batch 1: the detector, the alignment and the embedder of the
   ArcFace run (the first of ``--losses``), medians over ``--latency-runs`` photos after
   ``--warmup`` calls, ``--threads`` threads.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/bench_faces.py --threads 1 \\
        --det-minutes 15 --rec-minutes 10 --out runs/bench_faces

    python benchmarks/bench_faces.py --real-only runs/bench_faces/det/weights/best.safetensors \\
        --out runs/bench_faces --det-data runs/bench_faces/data/faces

Data is generated under ``OUT/data`` unless ``--det-data`` / ``--rec-data`` / ``--real-data``
name existing sets (a detection set with a ``test`` split; a recognition set written with
``--scenes``; a real-face set of ``--task real-faces``). Results
go to ``OUT/report.json`` and the printed tables; measurements belong in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

LOSSES = ("arcface", "cosface", "sphereface", "softmax")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_faces")
    ap.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads")
    ap.add_argument("--seed", type=int, default=0, help="data and training seed")
    ap.add_argument("--workers", type=int, default=0, help="detector data-loading processes")
    g = ap.add_argument_group("detection")
    g.add_argument("--det-data", default=None, help="existing face set with a test split")
    g.add_argument("--det-train", type=int, default=2000)
    g.add_argument("--det-val", type=int, default=200)
    g.add_argument("--det-test", type=int, default=300)
    g.add_argument("--det-imgsz", type=int, default=320)
    g.add_argument("--det-real-faces", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of the generated train / val faces replaced by LFW training "
                        "faces 0-69 (data in OUT/data/faces_lfwFRACTION; the test split stays "
                        "synthetic)")
    g.add_argument("--det-minutes", type=float, default=15.0)
    g.add_argument("--det-epochs", type=int, default=None, help="instead of --det-minutes")
    g.add_argument("--det-batch", type=int, default=16)
    g.add_argument("--det-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="face-n config override as `scaledet train --set`, e.g. "
                        "head.keypoint_loss_weight=0.5 (repeatable)")
    g.add_argument("--conf", type=float, default=0.3,
                   help="detection score of a face for the NME, the recall and the pipeline")
    g.add_argument("--real-data", default=None,
                   help="existing real-face set (scaledet data synth --task real-faces)")
    g.add_argument("--real-test", type=int, default=300, help="real-face test scenes")
    g.add_argument("--no-real", action="store_true", help="skip the real-face scoring")
    g.add_argument("--real-only", default=None, metavar="WEIGHTS",
                   help="only score this face detector on the real-face scenes (and on "
                        "--det-data's test split when given), write OUT/report_real.json")
    g = ap.add_argument_group("recognition")
    g.add_argument("--rec-data", default=None, help="existing face-identities set (--scenes)")
    g.add_argument("--identities", type=int, default=300)
    g.add_argument("--per-identity", type=int, default=16)
    g.add_argument("--verify-identities", type=int, default=200)
    g.add_argument("--verify-per-identity", type=int, default=10)
    g.add_argument("--pairs-per-fold", type=int, default=1000,
                   help="1000: 10^4 impostor pairs, the least for TAR at FAR 1e-4")
    g.add_argument("--crop", type=int, default=112, help="aligned crop side on disk")
    g.add_argument("--scene-size", type=int, default=320, help="side of the verify photos")
    g.add_argument("--losses", default=",".join(LOSSES))
    g.add_argument("--rec-minutes", type=float, default=10.0, help="per loss")
    g.add_argument("--rec-epochs", type=int, default=None, help="instead of --rec-minutes")
    g.add_argument("--arch", choices=["small", "mobilefacenet"], default="small")
    g.add_argument("--imgsz", type=int, default=64, help="embedder input side")
    g.add_argument("--batch", type=int, default=64)
    g = ap.add_argument_group("latency")
    g.add_argument("--latency-runs", type=int, default=100)
    g.add_argument("--warmup", type=int, default=5)
    g.add_argument("--skip-det", action="store_true",
                   help="reuse OUT/det/weights/best.safetensors")
    return ap.parse_args(argv)


# ---- data -----------------------------------------------------------------------------------

def make_data(args: argparse.Namespace, out: Path) -> tuple[Path, Path]:
    """The detection and recognition sets (generated unless given); their generation time is
    printed."""
    from scaledet.data.synth_faces import make_face_dataset, make_face_identities

    name = f"faces_lfw{args.det_real_faces:g}" if args.det_real_faces else "faces"
    det = Path(args.det_data) if args.det_data else out / "data" / name
    if not args.det_data and not det.exists():
        start = time.perf_counter()
        make_face_dataset(det, {"train": args.det_train, "val": args.det_val,
                                "test": args.det_test}, seed=args.seed, imgsz=args.det_imgsz,
                          real_faces=args.det_real_faces)
        print(f"face scenes: {args.det_train} / {args.det_val} / {args.det_test} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    rec = Path(args.rec_data) if args.rec_data else out / "data" / "ids"
    if not args.rec_data and not rec.exists():
        start = time.perf_counter()
        make_face_identities(rec, identities=args.identities, per_identity=args.per_identity,
                             verify_identities=args.verify_identities,
                             verify_per_identity=args.verify_per_identity,
                             pairs_per_fold=args.pairs_per_fold, seed=args.seed,
                             size=args.crop, scenes=args.scene_size)
        print(f"identities: {args.identities} x {args.per_identity} train, "
              f"{args.verify_identities} x {args.verify_per_identity} verify, "
              f"{20 * args.pairs_per_fold} pairs ({time.perf_counter() - start:.0f} s)",
              flush=True)
    if not (rec / "verify_scenes").is_dir():
        raise SystemExit(f"{rec}: no verify_scenes/ (write it with `scaledet data synth "
                         "--task face-identities --scenes`)")
    return det, rec


def make_real_data(args: argparse.Namespace, out: Path) -> Path:
    """The real-face test scenes (generated unless ``--real-data`` names them)."""
    from scaledet.data.real_faces import make_real_face_dataset

    if args.real_data:
        return Path(args.real_data)
    real = out / "data" / "real_faces"
    if not real.exists():
        start = time.perf_counter()
        make_real_face_dataset(real, args.real_test, seed=args.seed, imgsz=args.det_imgsz)
        print(f"real-face scenes: {args.real_test} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    return real


# ---- detection ------------------------------------------------------------------------------

def train_detector(args: argparse.Namespace, data: Path, out: Path) -> tuple[Path, dict]:
    import scaledet
    from scaledet.cli.train import parse_assignments

    minutes = None if args.det_epochs else args.det_minutes
    start = time.perf_counter()
    run = scaledet.train(data, model="face-n", minutes=minutes, epochs=args.det_epochs,
                         imgsz=args.det_imgsz, batch=args.det_batch, out=out, exist_ok=True,
                         seed=args.seed, progress=False, nproc=1, workers=args.workers,
                         model_options=parse_assignments(args.det_set, "--det-set"))
    return run.best, {"epochs": run.epochs, "steps": run.steps,
                      "minutes": round((time.perf_counter() - start) / 60, 2)}


def match(boxes, scores, gt_boxes, iou: float = 0.5):
    """Greedy one-to-one matching, highest score first: ``(K,)`` index of the detection that
    found each ground-truth box at IoU >= ``iou``, or -1."""
    import numpy as np
    import torch

    from scaledet.ops import box_iou

    found = np.full(len(gt_boxes), -1)
    if not len(boxes) or not len(gt_boxes):
        return found
    overlap = box_iou(torch.as_tensor(boxes, dtype=torch.float64),
                      torch.as_tensor(gt_boxes, dtype=torch.float64)).numpy()
    for d in np.argsort(-np.asarray(scores), kind="stable"):
        free = np.where(found < 0, overlap[d], -1.0)
        g = int(np.argmax(free))
        if free[g] >= iou:
            found[g] = d
    return found


def mean_layout(dataset):
    """``(5, 2)`` mean landmark position in box coordinates (0..1) over the faces with every
    landmark labelled."""
    import numpy as np

    rows = []
    for r in dataset.records:
        if r.keypoints is None or not len(r.boxes):
            continue
        wh = (r.boxes[:, 2:] - r.boxes[:, :2])[:, None]
        rel = (r.keypoints[..., :2] - r.boxes[:, None, :2]) / np.maximum(wh, 1e-6)
        rows.append(rel[(r.keypoints[..., 2] > 0).all(1)])
    return np.concatenate(rows).mean(0)


def place(layout, boxes):
    """``layout`` (5, 2) box coordinates placed in ``boxes`` (N, 4) xyxy -> (N, 5, 2)."""
    return boxes[:, None, :2] + layout[None] * (boxes[:, None, 2:] - boxes[:, None, :2])


HEIGHT_BINS = ((10.0, 30.0), (30.0, 50.0), (50.0, float("inf")))
"""Face height ranges (px) of the recall by size: the WIDER-style lists' edges, disjoint."""


def recall_by_height(heights, hit) -> dict:
    """Recall overall and per ``HEIGHT_BINS`` range (faces below 10 px only count overall):
    ``{"recall": r, "recall_10-30px": ..., "recall_30-50px": ..., "recall_50px+": ...}``,
    None where a range has no face."""
    import numpy as np

    heights, hit = np.asarray(heights, dtype=np.float64), np.asarray(hit, dtype=bool)
    out = {"recall": float(hit.mean()) if len(hit) else None}
    for lo, hi in HEIGHT_BINS:
        name = f"recall_{lo:g}px+" if hi == float("inf") else f"recall_{lo:g}-{hi:g}px"
        inside = (heights >= lo) & (heights < hi)
        out[name] = float(hit[inside].mean()) if inside.any() else None
    return out


def score_detector(args: argparse.Namespace, weights: Path, data: Path, split: str = "test"
                   ) -> tuple[dict, list]:
    """COCO box mAP, WIDER-style AP by face height, recall at ``--conf`` and the detections
    scoring >= ``--conf`` that found no face, per image (``false_per_image``), on ``split``:
    ``(metrics, [(record, boxes, scores, keypoints, sure, found)] per image)`` with ``sure``
    the detections scoring >= ``--conf`` and ``found`` (``match``) the one that found each
    face."""
    import numpy as np

    import scaledet
    from scaledet.data import load_dataset
    from scaledet.data.wider_face import image_key
    from scaledet.evaluation.wider_face import evaluate_wider

    coco = scaledet.val(weights, data, split=split)
    test = load_dataset(data, split)
    predictor = scaledet.load(weights, conf=0.01, max_det=300)
    preds, rows, heights, hits, false = {}, [], [], [], 0
    for record in test.records:
        det = predictor.predict(test.image_root / record.file_name)[0]
        boxes, scores = det["boxes"].double().numpy(), det["scores"].double().numpy()
        preds[image_key(record.file_name)] = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2],
                                                   scores]
        sure = scores >= args.conf
        found = match(boxes[sure], scores[sure], record.boxes)
        rows.append((record, boxes, scores, det.get("keypoints"), sure, found))
        heights.append(record.boxes[:, 3] - record.boxes[:, 1])
        hits.append(found >= 0)
        false += int(sure.sum()) - int((found >= 0).sum())
    wider = evaluate_wider(test, preds)
    metrics = {"coco_mAP": coco["mAP"], "coco_mAP50": coco["mAP50"],
               "coco_mAP_small": coco["mAP_small"],
               **{f"wider_{k}": v for k, v in wider.items()},
               **recall_by_height(np.concatenate(heights or [[]]),
                                  np.concatenate(hits or [[]])),
               "false_per_image": false / max(len(rows), 1)}
    return metrics, rows


def evaluate_detector(args: argparse.Namespace, weights: Path, data: Path) -> dict:
    """COCO mAP, WIDER-style AP by face height, recall and landmark NME on the test split."""
    import numpy as np

    from scaledet.data import load_dataset
    from scaledet.evaluation.wider_face import landmark_nme

    out, rows = score_detector(args, weights, data)
    layout = mean_layout(load_dataset(data, "train"))
    kp_pred, kp_gt, gt_box, det_box = [], [], [], []
    for record, boxes, _, keypoints, sure, found in rows:
        hit = found >= 0
        if hit.any():
            kp_pred.append(keypoints[sure][found[hit], :, :2].double().numpy())
            kp_gt.append(record.keypoints[hit])
            gt_box.append(record.boxes[hit])
            det_box.append(boxes[sure][found[hit]])
    if kp_gt:
        gt = np.concatenate(kp_gt)
        visible = gt[..., 2] > 0
        out.update(
            faces_found=len(gt), faces=sum(len(r[0].boxes) for r in rows),
            nme=landmark_nme(np.concatenate(kp_pred), gt, visible),
            nme_mean_layout_true_box=landmark_nme(place(layout, np.concatenate(gt_box)), gt,
                                                  visible),
            nme_mean_layout_detected_box=landmark_nme(place(layout, np.concatenate(det_box)),
                                                      gt, visible))
    return out


def distractor_hits(boxes, distractors, iou: float = 0.5) -> int:
    """How many of the non-face patches ``distractors`` (M, 4) xyxy some box of ``boxes``
    (D, 4) overlaps at IoU >= ``iou``."""
    import numpy as np
    import torch

    from scaledet.ops import box_iou

    if not len(boxes) or not len(distractors):
        return 0
    overlap = box_iou(torch.as_tensor(np.asarray(boxes), dtype=torch.float64),
                      torch.as_tensor(np.asarray(distractors), dtype=torch.float64)).numpy()
    return int((overlap >= iou).any(0).sum())


def evaluate_real(args: argparse.Namespace, weights: Path, data: Path) -> dict:
    """The detector on the real-face scenes: ``score_detector``'s numbers and the fraction of
    non-face patches that drew a detection scoring >= ``--conf`` that found no face
    (``distractors_hit``, IoU >= 0.5)."""
    import numpy as np

    out, rows = score_detector(args, weights, data)
    truth_file = data / "real_faces_test.json"
    truth = json.loads(truth_file.read_text(encoding="utf-8")) if truth_file.is_file() else {}
    hit, patches = 0, 0
    for record, boxes, _, _, sure, found in rows:
        unmatched = np.setdiff1d(np.arange(int(sure.sum())), found[found >= 0])
        if record.file_name in truth:
            distractors = [d[:4] for d in truth[record.file_name]["distractors"]]
            patches += len(distractors)
            hit += distractor_hits(boxes[sure][unmatched], distractors)
    out.update(faces=sum(len(r[0].boxes) for r in rows), images=len(rows),
               distractors_hit=hit / patches if patches else None)
    return out


def real_only(args: argparse.Namespace, out: Path, report: dict) -> dict:
    """``--real-only``: score an existing detector on the real-face scenes (and on
    ``--det-data``'s test split), print the table, write ``OUT/report_real.json``."""
    weights = Path(args.real_only)
    if not weights.is_file():
        raise SystemExit(f"--real-only: {weights} is not a file (a face-n .safetensors)")
    report["weights"] = str(weights)
    if args.det_data:
        report["detection"] = evaluate_detector(args, weights, Path(args.det_data))
    report["detection_real"] = evaluate_real(args, weights, make_real_data(args, out))
    detection_table(report)
    (out / "report_real.json").write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out / 'report_real.json'}")
    return report


def detection_table(report: dict) -> None:
    """The synthetic and the real-face rows side by side, on the columns both have."""
    rows = []
    for key, name in (("detection", "synthetic test"), ("detection_real", "LFW real faces")):
        if key in report:
            rows.append({"set": name, **report[key]})
    keys = ["set", "coco_mAP", "coco_mAP50", "wider_easy", "wider_medium", "wider_hard",
            "recall", "recall_10-30px", "recall_30-50px", "recall_50px+", "false_per_image",
            "distractors_hit"]
    table(f"face-n: COCO box mAP, WIDER-style AP by face height, recall at conf "
          f"{report['args']['conf']:g} (IoU >= 0.5)", [{k: r.get(k) for k in keys} for r in rows])


# ---- recognition ----------------------------------------------------------------------------

def train_embedder(args: argparse.Namespace, data: Path, loss: str, out: Path) -> tuple[Path,
                                                                                       dict]:
    from scaledet.engine.face_fit import FaceTrainSettings, fit_face
    from scaledet.faces.embedding import embedding_config
    from scaledet.faces.recognizer import MarginRecipe

    settings = FaceTrainSettings(
        data=str(data), out=str(out), embedding=embedding_config(args.arch, args.imgsz, 128),
        recipe=MarginRecipe(loss=loss), epochs=args.rec_epochs,
        time_minutes=None if args.rec_epochs else args.rec_minutes, batch=args.batch,
        seed=args.seed, progress=False, plots=False,
        pairs=str(out / "no-validation-pairs.txt"))  # absent: nothing chosen on test pairs
    start = time.perf_counter()
    summary = fit_face(settings)
    return Path(summary["weights"]), {"epochs": summary["epoch"], "steps": summary["step"],
                                      "minutes": round((time.perf_counter() - start) / 60, 2)}


def protocol(report) -> dict:
    """The numbers of a :class:`~scaledet.faces.verification.FaceVerification`, with how many
    impostor scores each TAR rests on."""
    row = {"accuracy": report.protocol.accuracy, "accuracy_std": report.protocol.std,
           "auc": report.auc}
    for t in report.tar:
        row[f"tar@{t.far:g}"] = t.tar
        row[f"impostors_above@{t.far:g}"] = t.far * report.num_different
    return row


def evaluate_embedder(args: argparse.Namespace, weights: Path, det: Path | None,
                      data: Path) -> dict:
    from scaledet.engine.face_fit import embedding_scorer, evaluate_pairs
    from scaledet.faces.recognizer import load_face_embedder
    from scaledet.inference.faces import FacePipeline, verify_pairs

    emb = load_face_embedder(weights)
    report, _, _ = evaluate_pairs(embedding_scorer(emb), data / "pairs.txt", data / "verify",
                                  emb.cfg.input_size)
    out = {"aligned": protocol(report), "pairs": report.num_same + report.num_different}
    if det is not None:
        pipe = FacePipeline(det, weights, conf=args.conf)
        result = verify_pairs(pipe, data / "pairs.txt", data / "verify_scenes")
        out["end_to_end"] = {**protocol(result.report), "failed_photos": len(result.failures),
                             "photos": result.images, "failed_pairs": result.failed_pairs}
    return out


def latency(args: argparse.Namespace, det: Path, emb: Path, data: Path) -> dict:
    """Median ms per face of each stage, batch 1, over ``--latency-runs`` verify photos."""
    from scaledet.data.images import read_image
    from scaledet.inference.faces import FacePipeline

    photos = sorted((data / "verify_scenes").rglob("*.jpg"))
    pipe = FacePipeline(det, emb, conf=args.conf)
    images = [read_image(p) for p in photos[:max(args.latency_runs, 1)]]
    for k in range(args.warmup):
        pipe.embed(images[k % len(images)])
    pipe.timings.clear()
    for k in range(args.latency_runs):
        pipe.embed(images[k % len(images)])
    return {**pipe.timings.medians(), "faces": len(pipe.timings.embed),
            "photos": args.latency_runs, "detector_imgsz": pipe.predictor.imgsz,
            "embedder_input": pipe.embedder.cfg.input_size}


# ---- tables ---------------------------------------------------------------------------------

def fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    if not rows:
        return
    keys = list(rows[0])
    widths = [max(len(k), *(len(fmt(r.get(k))) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(fmt(r.get(k)).ljust(w) for k, w in zip(keys, widths)))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    warnings.filterwarnings("ignore", "face-n is experimental")
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": args.threads,
                    "args": vars(args)}
    if args.real_only:
        return real_only(args, out, report)
    det_data, rec_data = make_data(args, out)
    real_data = None if args.no_real else make_real_data(args, out)

    det_weights = out / "det" / "weights" / "best.safetensors"
    if not args.skip_det:
        det_weights, run = train_detector(args, det_data, out / "det")
        report["detector_training"] = run
        print(f"face-n: {run}", flush=True)
    report["detection"] = evaluate_detector(args, det_weights, det_data)
    table("face-n on the test split (WIDER-style lists by face height; NME inter-ocular)",
          [{k: v for k, v in report["detection"].items()}])
    if real_data is not None:
        report["detection_real"] = evaluate_real(args, det_weights, real_data)
        detection_table(report)
    (out / "report.json").write_text(json.dumps(report, indent=1))

    report["recognition"] = {}
    losses = args.losses.split(",")
    for loss in losses:
        weights, run = train_embedder(args, rec_data, loss, out / f"rec_{loss}")
        result = evaluate_embedder(args, weights, det_weights, rec_data)
        report["recognition"][loss] = {"training": run, "weights": str(weights), **result}
        print(f"{loss}: {run}, aligned accuracy {result['aligned']['accuracy']:.4f}",
              flush=True)
        (out / "report.json").write_text(json.dumps(report, indent=1))
    for where in ("aligned", "end_to_end"):
        rows = []
        for loss, r in report["recognition"].items():
            rows.append({"loss": loss, "steps": r["training"]["steps"], **r[where]})
        pairs = report["recognition"][losses[0]]["pairs"]
        table(f"verification, {where.replace('_', ' ')} ({pairs} pairs, 10 folds)", rows)

    first = report["recognition"][losses[0]]["weights"]
    report["latency_ms"] = latency(args, det_weights, Path(first), rec_data)
    table(f"CPU latency per face, median ms, batch 1, {args.threads} thread(s) "
          f"({losses[0]} embedder)", [report["latency_ms"]])
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out / 'report.json'}")
    return report


if __name__ == "__main__":
    main()
