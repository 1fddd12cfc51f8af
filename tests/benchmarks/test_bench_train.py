"""The bookkeeping of benchmarks/bench_train.py and benchmarks/ultralytics_runner.py.

Ultralytics itself is not installed here: the runner's conversion to COCO results is driven by a
stand-in model that returns the ground truth, and must then score AP = 1 with our evaluator.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from scaledet.evaluation.coco import evaluate_coco

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bench = _load("bench_train")
runner = _load("ultralytics_runner")

# Non-contiguous image and category ids, category order unlike the YOLO names below.
GT = {
    "images": [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
               {"id": 3, "file_name": "sub/b.jpg", "width": 64, "height": 48}],
    "categories": [{"id": 11, "name": "cat"}, {"id": 5, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 7, "category_id": 11, "bbox": [4.0, 6.0, 20.0, 10.0],
         "area": 200.0, "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 5, "bbox": [30.0, 2.0, 12.0, 30.0],
         "area": 360.0, "iscrowd": 0},
        {"id": 3, "image_id": 3, "category_id": 5, "bbox": [1.0, 1.0, 40.0, 40.0],
         "area": 1600.0, "iscrowd": 0},
    ],
}
YOLO_NAMES = {0: "dog", 1: "cat"}


class GroundTruthModel:
    """Answers ``predict(path)`` like ultralytics: boxes xyxy pixels, cls = YOLO index, conf."""

    def __init__(self, gt: dict) -> None:
        index = {name: i for i, name in YOLO_NAMES.items()}
        cat_name = {c["id"]: c["name"] for c in gt["categories"]}
        stem_of = {im["id"]: Path(im["file_name"]).stem for im in gt["images"]}
        self.by_stem: dict[str, list] = {}
        for a in gt["annotations"]:
            x, y, w, h = a["bbox"]
            row = [x, y, x + w, y + h, index[cat_name[a["category_id"]]]]
            self.by_stem.setdefault(stem_of[a["image_id"]], []).append(row)

    def predict(self, path: str, **kwargs):
        rows = torch.tensor(self.by_stem.get(Path(path).stem, []), dtype=torch.float64)
        rows = rows.reshape(-1, 5)
        boxes = SimpleNamespace(xyxy=rows[:, :4], cls=rows[:, 4], conf=torch.full((len(rows),), .9))
        return [SimpleNamespace(boxes=boxes)]


def test_runner_coco_results_score_one_on_ground_truth(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for stem in ("a", "b", "extra"):
        (images / f"{stem}.jpg").write_bytes(b"")
    pairs = runner._val_images(GT, images)
    assert [(i, p.name) for i, p in pairs] == [(7, "a.jpg"), (3, "b.jpg")]
    cat_ids = runner._category_ids(GT, YOLO_NAMES)
    assert cat_ids == {0: 5, 1: 11}
    dets, ips = runner.coco_results(GroundTruthModel(GT), pairs, cat_ids, imgsz=64)
    assert ips > 0
    assert sorted((d["image_id"], d["category_id"], d["bbox"]) for d in dets) == sorted(
        (a["image_id"], a["category_id"], a["bbox"]) for a in GT["annotations"])
    assert evaluate_coco(GT, dets).stats[0] == pytest.approx(1.0)


def test_runner_rejects_missing_images_and_categories(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="b.jpg"):
        runner._val_images(GT, tmp_path)
    with pytest.raises(ValueError, match="bird"):
        runner._category_ids(GT, {0: "dog", 1: "bird"})


def test_runner_reads_ultralytics_results_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("epoch, train/box_loss,metrics/mAP50-95(B)\n1, 2.5,0.1\n2, 2.0,0.25\n")
    got = runner._read_results_csv(SimpleNamespace(csv=csv_path))
    assert got == {"epoch": [1.0, 2.0], "train/box_loss": [2.5, 2.0],
                   "metrics/mAP50-95(B)": [0.1, 0.25]}
    assert runner._read_results_csv(SimpleNamespace(csv=tmp_path / "missing.csv")) == {}


def test_parse_and_assign_cores() -> None:
    assert bench.parse_cores("0,2-3") == [0, 2, 3]
    for bad in ("", "a", "1,,2", "-1"):
        with pytest.raises(ValueError, match="--cores"):
            bench.parse_cores(bad)
    assert bench.assign_cores(["0,1", "2,3"], 3, parallel=False) == ["0,1"] * 3
    with pytest.raises(ValueError, match="same number"):
        bench.assign_cores(["0,1", "2"], 2, parallel=True)
    with pytest.raises(ValueError, match="needs 3 core sets"):
        bench.assign_cores(["0,1", "2,3"], 3, parallel=True)
    with pytest.raises(ValueError, match="disjoint"):
        bench.assign_cores(["0,1", "1,2"], 2, parallel=True)
    cpu = min(bench.os.sched_getaffinity(0))
    assert bench.assign_cores([str(cpu)], 1, parallel=True) == [str(cpu)]


def test_read_scaledet_run_counts_images_and_step_time(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "last.safetensors").write_bytes(b"")
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,elapsed_s,lr,loss,images_per_s,mAP,mAP50\n"
        "1,10,9.5,0.001,2.0,20,0.1,0.2\n"       # 10 steps x 16 = 160 images in 8 s
        "2,25,17.0,0.001,1.5,40,,\n"             # 15 steps x 16 = 240 images in 6 s
        "3,30,19.0,0.0005,1.4,80,0.3,0.5\n")     # 5 steps x 16 = 80 images in 1 s
    got = bench.read_scaledet_run(tmp_path, batch=16)
    assert got["train_images_seen"] == 480
    assert got["train_step_seconds"] == pytest.approx(15.0)
    assert got["train_images_per_second"] == pytest.approx(32.0)
    assert got["epochs_completed"] == 3
    assert got["own_map50_95"] == pytest.approx(0.3)
    assert got["weights"].endswith("last.safetensors")


def test_ratios_compare_with_the_strongest_yolo_figure(tmp_path: Path) -> None:
    def contender(name, kind, m, ips, lat):
        c = bench.Contender(name, kind, "x", "0", tmp_path)
        c.results = {"map50_95": m, "own_map50_95": m, "map50": m, "map_small": m, "epochs_completed": 1,
                     "train_images_per_second": ips, "latency_ms_median": lat}
        return c

    cs = [contender("ours", "scaledet", 0.5, 90.0, 20.0),
          contender("y-default", "ultralytics", 0.1, 30.0, 40.0),
          contender("y-tuned", "ultralytics", 0.2, 20.0, 25.0)]
    r = bench.ratios(cs)
    assert r == pytest.approx({"map": 2.5, "train_ips": 3.0, "latency": 0.8})
    table = bench.format_table(cs, r)
    assert "map x2.50 (goal >= 2: met)" in table
    assert "latency x0.80 (goal <= 1: met)" in table
    assert bench.ratios(cs[1:]) == {}


def test_ultralytics_summary_excludes_validation_time(tmp_path: Path) -> None:
    summary = {"epochs_completed": 3, "train_images_seen": 600, "train_loop_seconds": 50.0,
               "train_val_seconds": 20.0, "ultralytics_map50_95": 0.12, "weights": "best.pt",
               "versions": {}, "recipe": {}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    got = bench.read_ultralytics_run(tmp_path)
    assert got["train_images_per_second"] == pytest.approx(20.0)
    assert got["own_map50_95"] == 0.12


def test_ratio_is_none_when_yolo_scores_zero(tmp_path: Path) -> None:
    cs = [bench.Contender("ours", "scaledet", "x", "0", tmp_path),
          bench.Contender("y", "ultralytics", "x", "0", tmp_path)]
    for c, m in zip(cs, (0.1, 0.0)):
        c.results = {"map50_95": m, "own_map50_95": m, "map50": m, "map_small": m, "epochs_completed": 1,
                     "train_images_per_second": 10.0, "latency_ms_median": 10.0}
    r = bench.ratios(cs)
    assert r["map"] is None
    assert "map n/a" in bench.format_table(cs, r)


def test_preset_variants_become_train_options():
    assert bench.parse_variant("fcos-n") == ("fcos-n", [])
    assert bench.parse_variant("fcos-n+amp=off+set=head.norm=gn+grad_ckpt") == (
        "fcos-n", ["--amp", "off", "--set", "head.norm=gn", "--grad-ckpt"])
    with pytest.raises(ValueError, match="empty option"):
        bench.parse_variant("fcos-n++amp=off")
