"""Checkpoints written before the per-head configs (format 1, tests/fixtures/checkpoints_v1)
load into today's configs and predict exactly what they predicted when they were written."""

import json
from pathlib import Path

import pytest
import torch

import scaledet
from scaledet.models import (
    CenterNetHeadConfig,
    FCOSAssignerConfig,
    FCOSHeadConfig,
    TALConfig,
    YOLOXHeadConfig,
)
from scaledet.models.assigners import ATSSAssigner, FCOSAssigner
from scaledet.models.checkpoint import load_weights
from scaledet.models.factory import upgrade_config
from scaledet.models.simota import SimOTAAssigner
from scaledet.models.tal import TaskAlignedAssigner

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints_v1"
EXPECTED = json.loads((FIXTURES / "predictions.json").read_text())
IMAGES = [str(FIXTURES / "image0.jpg"), str(FIXTURES / "image1.jpg")]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_checkpoint_predicts_the_same(name):
    predictor = scaledet.load(FIXTURES / f"{name}.safetensors", conf=0.0)
    results = predictor(IMAGES)
    for r, want in zip(results, EXPECTED[name]):
        assert len(r) == len(want["scores"]) > 0
        torch.testing.assert_close(r.scores, torch.tensor(want["scores"]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r.boxes, torch.tensor(want["boxes"]), rtol=1e-4, atol=1e-3)
        assert r.labels.tolist() == want["labels"]


@pytest.mark.parametrize(("name", "head", "assigner"), [
    ("fcos-atss", FCOSHeadConfig, ATSSAssigner), ("fcos-tal", FCOSHeadConfig, TaskAlignedAssigner),
    ("fcos-fcos", FCOSHeadConfig, FCOSAssigner), ("centernet", CenterNetHeadConfig, None),
    ("yolox", YOLOXHeadConfig, SimOTAAssigner)])
def test_old_metadata_maps_to_the_head_configs(name, head, assigner):
    meta = load_weights(FIXTURES / f"{name}.safetensors")[1]
    old = meta["model_config"]
    assert isinstance(old["head"]["assigner"], str) and "lr" in old  # really format 1
    model = scaledet.load(FIXTURES / f"{name}.safetensors").model
    assert isinstance(model.config.head, head)
    if assigner is not None:
        assert type(model.head.assigner) is assigner


def test_old_fields_land_where_they_belong():
    meta = load_weights(FIXTURES / "fcos-tal.safetensors")[1]
    new = upgrade_config(meta["model_config"])
    assert "lr" not in new and new["head"]["assigner"] == {
        "kind": "tal", "topk": 13, "alpha": 1.0, "beta": 6.0}
    fcos = upgrade_config(load_weights(FIXTURES / "fcos-fcos.safetensors")[1]["model_config"])
    assert fcos["head"]["norm"] == "gn" and fcos["head"]["assigner"]["kind"] == "fcos"
    assert FCOSAssignerConfig(**{k: v for k, v in fcos["head"]["assigner"].items()
                                 if k != "kind"}).center_radius == 1.5
    centernet = upgrade_config(load_weights(FIXTURES / "centernet.safetensors")[1]["model_config"])
    assert centernet["head"]["size_loss_weight"] == 0.1  # was box_loss_weight
    assert upgrade_config(new) == new  # today's form is left alone
    assert TALConfig().kind == "tal"
