"""Fine-tuning from a checkpoint and adapter training through ``scaledet train --weights``
(``--adapter``), and the adapted checkpoint through ``val``, ``predict``, ``info``,
``export`` and ``scaledet.load``."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import scaledet
from scaledet.cli import main
from scaledet.data import make_synthetic_dataset
from scaledet.models import build
from scaledet.models.adapters import AdapterConfig, apply_adapters, checkpoint_state
from scaledet.models.checkpoint import (
    base_reference,
    file_sha256,
    load_weights,
    model_from_weights,
    read_meta,
    save_weights,
)

NEW_CLASSES = {1: 1, 6: 1, 2: 2, 3: 2, 7: 2, 4: 2, 5: 3, 8: 3}  # 8 shapes -> 3 groups
FAST = ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--nproc", "1", "--workers", "0",
        "--amp", "off", "--train-option", "plots=false"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """The built-in dataset (8 classes), the same images with 3 other classes, and an
    untrained base checkpoint of fcos-n for the 8 classes."""
    root = tmp_path_factory.mktemp("finetune")
    old = make_synthetic_dataset(root / "old", n_train=8, n_val=4, seed=0, imgsz=64)
    new = root / "new"
    shutil.copytree(old, new)
    for split in ("train", "val"):
        path = new / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        data["categories"] = [{"id": i, "name": n, "supercategory": ""}
                              for i, n in ((1, "round"), (2, "angular"), (3, "other"))]
        for a in data["annotations"]:
            a["category_id"] = NEW_CLASSES[a["category_id"]]
        path.write_text(json.dumps(data))
    torch.manual_seed(0)
    model = build("fcos-n", num_classes=8)
    names = [c["name"] for c in json.loads(
        (old / "annotations" / "instances_train.json").read_text())["categories"]]
    base = save_weights(root / "base.safetensors", model.state_dict(), {
        "model": "fcos-n", "model_config": asdict(model.config), "class_names": names,
        "category_ids": list(range(1, 9)), "imgsz": 64})
    return {"root": root, "new": new, "base": base}


def test_lora_fine_tune_end_to_end_through_the_cli(setup, capsys):
    out = setup["root"] / "lora"
    assert main(["train", "--data", str(setup["new"]), "--weights", str(setup["base"]),
                 "--adapter", "lora", "--rank", "4", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert ("loaded 283 tensors, rebuilt 2 for the new classes (head.cls_pred.bias, "
            "head.cls_pred.weight), skipped 0; adapter lora rank 4") in printed
    weights = out / "weights" / "best.safetensors"
    state, meta = load_weights(weights)
    assert any("lora_" in k for k in state)  # not vacuous: the LoRA factors are there
    assert set(state) == {k for k in state if "lora_" in k or k.startswith("head.cls_pred.")}
    assert meta["base_weights"]["sha256"] == file_sha256(setup["base"])
    assert meta["adapter"]["kind"] == "lora" and meta["model_config"]["num_classes"] == 3
    assert weights.stat().st_size < 0.1 * setup["base"].stat().st_size

    assert main(["info", "--weights", str(weights), "--imgsz", "64"]) == 0
    info = capsys.readouterr().out
    assert "trainable" in info and "adapter lora rank 4" in info

    assert main(["val", "--weights", str(weights), "--data", str(setup["new"])]) == 0
    assert main(["predict", "--weights", str(weights), str(setup["new"] / "images" / "val"),
                 "--out", str(out / "pred"), "--no-images", "--conf", "0.01"]) == 0
    capsys.readouterr()

    merged = scaledet.load(weights, merge=True, conf=0.01)
    separate = scaledet.load(weights, conf=0.01)
    image = sorted((setup["new"] / "images" / "val").iterdir())[0]
    a, b = merged(image)[0], separate(image)[0]
    assert merged.class_names == separate.class_names == ["round", "angular", "other"]
    torch.testing.assert_close(torch.as_tensor(a.scores), torch.as_tensor(b.scores),
                               rtol=1e-4, atol=1e-4)

    standalone = out / "standalone.safetensors"
    assert main(["export", "--weights", str(weights), "--format", "safetensors",
                 "--out", str(standalone)]) == 0
    assert "base_weights" not in read_meta(standalone)
    assert len(load_weights(standalone)[0]) > len(state)


def test_full_fine_tune_loads_the_base_and_rebuilds_the_classes(setup, capsys):
    out = setup["root"] / "full"
    run = scaledet.train(setup["new"], weights=setup["base"], epochs=1, imgsz=64, batch=4,
                         out=out, nproc=1, workers=0, amp="off", progress=False,
                         train_options={"plots": False})
    assert "rebuilt 2 for the new classes" in capsys.readouterr().out
    state, meta = load_weights(run.best)
    base_state = load_weights(setup["base"])[0]
    assert set(state) == set(base_state)  # a plain, whole checkpoint
    assert meta["init_weights"]["sha256"] == file_sha256(setup["base"])
    assert "adapter" not in meta and "base_weights" not in meta
    assert state["head.cls_pred.weight"].shape[0] == 3


@pytest.mark.parametrize("argv,message", [
    (["--set", "neck.channels=96"], "architecture does not match the model"),
    (["--model", "fcos-s"], "is a fcos-n checkpoint"),
    (["--adapter", "prefix"], "no attention layers"),
])
def test_bad_starts_are_clear_errors(setup, capsys, argv, message):
    code = main(["train", "--data", str(setup["new"]), "--weights", str(setup["base"]),
                 "--out", str(setup["root"] / "bad"), *FAST, *argv])
    assert code == 2 and message in capsys.readouterr().err
    assert not (setup["root"] / "bad" / "weights").exists()


def test_an_adapter_needs_a_base(setup, capsys):
    code = main(["train", "--data", str(setup["new"]), "--adapter", "lora",
                 "--out", str(setup["root"] / "bad2"), *FAST])
    assert code == 2 and "--weights BASE.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("standalone", [False, True])
def test_a_base_trained_with_a_bottleneck_adapter_is_refused(setup, capsys, standalone):
    """Its ``adapters.*`` tensors have no place in the fine-tuned model: starting from it would
    silently fine-tune the bare base, so it is an error naming the file."""
    model, meta = model_from_weights(setup["base"])
    apply_adapters(model, AdapterConfig("adapter", rank=4))
    meta = {**meta, "adapter": model.adapter_config.to_dict()}
    if standalone:  # every tensor, as ``export --format safetensors`` writes it
        meta["adapted_from"] = base_reference(setup["base"])
        state = model.state_dict()
    else:
        meta["base_weights"] = base_reference(setup["base"])
        state = checkpoint_state(model)
    name = "standalone" if standalone else "adapted"
    weights = save_weights(setup["root"] / f"bottleneck-{name}.safetensors", state, meta)
    code = main(["train", "--data", str(setup["new"]), "--weights", str(weights),
                 "--out", str(setup["root"] / f"bad-{name}"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and f"{weights}: trained with a bottleneck adapter" in err
    assert "fine-tune from its base model" in err and "LoRA" in err


@pytest.mark.parametrize("argv,message", [
    (["--set", "neck.channels=96"], "architecture does not match the model"),
    (["--adapter", "prefix"], "no attention layers"),
    (["--weights", "missing.safetensors"], "missing.safetensors"),
])
def test_exist_ok_keeps_the_earlier_run_when_an_option_is_bad(setup, capsys, argv, message):
    out = setup["root"] / "earlier"
    (out / "weights").mkdir(parents=True, exist_ok=True)
    (out / "weights" / "last.safetensors").write_bytes(b"the earlier run")
    (out / "metrics.csv").write_text("epoch\n1\n")
    code = main(["train", "--data", str(setup["new"]), "--weights", str(setup["base"]),
                 "--out", str(out), "--exist-ok", *FAST, *argv])
    assert code == 2 and message in capsys.readouterr().err
    assert (out / "weights" / "last.safetensors").read_bytes() == b"the earlier run"
    assert (out / "metrics.csv").read_text() == "epoch\n1\n"
