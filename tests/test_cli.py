"""End to end through ``scaledet.cli.main``: synth -> train -> val --json -> predict, and the
one-line errors of the train/val/predict/demo commands."""

import csv
import json

import pytest
import torch

from scaledet.cli import main
from scaledet.models.checkpoint import load_weights


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny inputs: threads cost more than they give, worse under load
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    assert main(["data", "synth", str(out), "--train", "16", "--val", "6", "--imgsz", "64"]) == 0
    return out


@pytest.fixture(scope="module")
def run(data):
    out = data.parent / "run"
    argv = ["train", "--data", str(data), "--model", "fcos-n", "--imgsz", "64", "--epochs", "1",
            "--batch", "8", "--workers", "0", "--out", str(out), "--warmup", "1"]
    assert main(argv) == 0
    return out


def test_train_writes_weights_metrics_and_plots(run):
    for name in ("best", "last"):
        assert (run / "weights" / f"{name}.safetensors").is_file()
        assert (run / "weights" / f"{name}.json").is_file()
    state, meta = load_weights(run / "weights" / "best.safetensors")
    assert meta["model"] == "fcos-n" and meta["imgsz"] == 64 and meta["epoch"] == 1
    assert meta["model_config"]["num_classes"] == 8 == len(meta["class_names"])
    assert meta["train_settings"]["batch"] == 8 and meta["category_ids"] == list(range(1, 9))
    assert meta["train_settings"]["amp"] in ("off", "bf16")  # --amp auto, resolved and recorded
    assert all(torch.isfinite(v).all() for v in state.values())
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["step"] == "2" and rows[0]["mAP"] != ""
    assert float(rows[0]["loss"]) > 0
    assert {"losses.png", "map.png", "pr_iou0.50.png", "train_batch.jpg", "labels.png",
            "confusion_matrix.png"} <= {
        p.name for p in (run / "plots").iterdir()}


def test_val_json(run, data, tmp_path, capsys):
    js = tmp_path / "val.json"
    assert main(["val", "--weights", str(run / "weights" / "best.safetensors"),
                 "--data", str(data), "--json", str(js), "--batch", "4",
                 "--plots", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out
    assert {"confusion_matrix.png", "pr_iou0.50.png"} <= {
        p.name for p in (tmp_path / "plots").iterdir()}
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in printed
    assert "category" in printed and "circle" in printed  # the per-category table
    got = json.loads(js.read_text())
    assert len(got["stats"]) == 12 and got["images_per_second"] > 0
    assert set(got["per_category"]) == set(load_weights(run / "weights" / "best.safetensors")[1]
                                           ["class_names"])
    # the checkpoint recorded the trainer's final validation of the same weights
    assert got["stats"][0] == pytest.approx(
        load_weights(run / "weights" / "best.safetensors")[1]["metrics"]["mAP"], abs=1e-9)


def test_predict_writes_annotated_images_and_coco_results(run, data, tmp_path, capsys):
    images = sorted((data / "images" / "val").iterdir())
    out = tmp_path / "pred"
    js = tmp_path / "dets.json"
    assert main(["predict", "--weights", str(run / "weights" / "last.safetensors"),
                 str(images[0]), str(data / "images" / "val"), "--out", str(out),
                 "--conf", "0.0", "--json", str(js)]) == 0
    assert len(list(out.glob("*.jpg"))) == 1 + len(images)  # the first image twice
    dets = json.loads(js.read_text())
    assert {d["image_id"] for d in dets} <= set(range(1, len(images) + 2))
    for d in dets:
        assert {"image_id", "category_id", "bbox", "score"} <= set(d)
        assert 1 <= d["category_id"] <= 8 and d["bbox"][2] >= 0 and d["bbox"][3] >= 0
    assert f"{len(images) + 1} images" in capsys.readouterr().out


def test_resume_continues_the_run(run, tmp_path, data):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    argv = ["train", "--data", str(data), "--imgsz", "64", "--epochs", "2", "--batch", "8",
            "--workers", "0", "--out", str(copy), "--resume", "--warmup", "1"]
    assert main(argv) == 0
    with (copy / "metrics.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    assert load_weights(copy / "weights" / "last.safetensors")[1]["step"] == 4


def test_same_seed_same_weights(run, data, tmp_path):
    argv = ["train", "--data", str(data), "--imgsz", "64", "--epochs", "1", "--batch", "8",
            "--workers", "0", "--out", str(tmp_path / "again"), "--warmup", "1"]
    assert main(argv) == 0
    a = load_weights(run / "weights" / "last.safetensors")[0]
    b = load_weights(tmp_path / "again" / "weights" / "last.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "{tmp}/nope", "--epochs", "1", "--out", "{tmp}/r"], "nope"),
    (["train", "--data", "{data}", "--epochs", "1", "--out", "{run}"], "already holds a training run"),
    (["train", "--data", "{data}", "--epochs", "1", "--out", "{tmp}/r2", "--resume"], "no run to resume"),
    (["train", "--data", "{data}", "--model", "fcos-xxl", "--epochs", "1", "--out", "{tmp}/r3"],
     "unknown model preset 'fcos-xxl'"),
    (["train", "--data", "{data}", "--epochs", "0", "--out", "{tmp}/r4"], "--epochs must be >= 1"),
    (["train", "--data", "{data}", "--epochs", "1", "--batch", "0", "--out", "{tmp}/r5"],
     "batch must be >= 1"),
    (["train", "--data", "{data}", "--epochs", "1", "--device", "tpu", "--out", "{tmp}/r6"],
     "unknown device"),
    (["val", "--weights", "{tmp}/missing.safetensors", "--data", "{data}"], "weights file not found"),
    (["val", "--weights", "{data}/annotations/instances_val.json", "--data", "{data}"],
     "not a readable safetensors file"),
    (["predict", "--weights", "{run}/weights/best.safetensors", "{tmp}/no_such.jpg"],
     "source not found"),
    (["predict", "--weights", "{run}/weights/best.safetensors", "{data}/images/val", "--conf",
      "2"], "conf must be in [0, 1)"),
    (["demo", "--minutes", "0", "--out", "{tmp}/demo"], "--minutes must be > 0"),
    (["train", "--data", "{data}", "--epochs", "1", "--set", "headnorm", "--out", "{tmp}/r7"],
     "expected FIELD=VALUE"),
    (["train", "--data", "{data}", "--epochs", "1", "--set", "heads.norm=gn", "--out", "{tmp}/r8"],
     "model.heads: not a field of ModelConfig; valid:"),
    (["train", "--data", "{data}", "--epochs", "1", "--train-option", "ema_tu=600", "--out",
      "{tmp}/r9"], "train option ema_tu: not a field of TrainConfig; valid:"),
    (["train", "--data", "{data}", "--epochs", "1", "--augment", "mosiac=1", "--out",
      "{tmp}/r10"], "augment mosiac: not a field of AugmentConfig; valid:"),
    (["train", "--data", "{data}", "--epochs", "1", "--augment", "mosaic=2", "--out",
      "{tmp}/r11"], "augment: mosaic must be in [0, 1], got 2"),
])
def test_bad_arguments_give_one_line_errors(argv, message, run, data, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, data=data, run=run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"scaledet {argv[0]}: error:") and message in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["train", "val", "predict", "demo"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"scaledet {command}" in capsys.readouterr().out.split("examples:")[1]


def test_set_overrides_the_preset_and_the_weights_remember_it(data, tmp_path):
    import scaledet
    from scaledet.cli.train import parse_assignments

    assert parse_assignments(["head.norm=level_bn", "lr=0.01", "neck.channels=48", "act=silu"],
                             "--set") == {"head.norm": "level_bn", "lr": 0.01,
                                          "neck.channels": 48, "act": "silu"}
    out = tmp_path / "gn"
    argv = ["train", "--data", str(data), "--imgsz", "64", "--epochs", "1", "--batch", "8",
            "--workers", "0", "--out", str(out), "--warmup", "1", "--set", "head.norm=gn"]
    assert main(argv) == 0
    predictor = scaledet.load(out / "weights" / "last.safetensors")
    assert predictor.model.config.head.norm == "gn"  # fcos-n's default is level_bn
    assert predictor.predict([torch.rand(3, 64, 64)])[0]["boxes"].shape[1] == 4


def test_train_option_sets_trainer_fields(data, tmp_path):
    import json

    out = tmp_path / "opt"
    argv = ["train", "--data", str(data), "--imgsz", "64", "--epochs", "1", "--batch", "8",
            "--workers", "0", "--out", str(out), "--train-option", "ema_tau=7.5",
            "--train-option", "close_mosaic=0"]
    assert main(argv) == 0
    meta = json.loads((out / "weights" / "last.json").read_text())
    assert meta["train_config"]["ema_tau"] == 7.5 and meta["train_config"]["close_mosaic"] == 0


def test_augment_reaches_the_training_loader(data):
    from scaledet.cli.train import parse_assignments
    from scaledet.data import load_dataset
    from scaledet.engine.fit import TrainSettings, _loader

    settings = TrainSettings(data=str(data), imgsz=64, batch=2, workers=0, augment=parse_assignments(
        ["mosaic=1.0", "scale_range=[0.75,1.25]", "hflip=0"], "--augment"))
    aug = _loader(load_dataset(data, "train"), settings, train=True).dataset.augment
    assert aug.mosaic == 1.0 and aug.scale_range == (0.75, 1.25) and aug.hflip == 0


def test_train_help_names_every_preset(capsys):
    from scaledet.models.factory import PRESETS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps the help, even at hyphens
    assert all(name in text for name in PRESETS)
