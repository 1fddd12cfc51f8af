"""The Python front end: ``scaledet.train`` / ``scaledet.val`` on a tiny generated dataset give
the numbers the CLI gives, and bad options fail before any training starts."""

import json

import pytest

import scaledet
from scaledet.cli import main
from scaledet.data import make_synthetic_dataset
from scaledet.evaluation.coco import METRIC_NAMES


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("api") / "d", n_train=16, n_val=8,
                                  imgsz=64, seed=0)


def test_train_then_val_match_the_cli(data, tmp_path):
    run = scaledet.train(data, epochs=2, imgsz=64, batch=8, out=tmp_path / "run", nproc=1,
                         workers=0, amp="off", train_options={"close_mosaic": 0})
    assert run.best.is_file() and run.last.is_file() and run.epochs == 2
    assert list(run.metrics) == list(METRIC_NAMES)
    metrics = scaledet.val(run.last, data)
    assert list(metrics) == list(METRIC_NAMES)
    # the final validation in training is the same model on the same images (BN not folded)
    assert metrics == pytest.approx(run.metrics, abs=0.02)
    out = tmp_path / "val.json"
    assert main(["val", "--weights", str(run.last), "--data", str(data), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"] == metrics
    meta = json.loads(run.last.with_suffix(".json").read_text())
    assert meta["train_settings"]["nproc"] == 1 and meta["train_settings"]["amp"] == "off"
    assert meta["train_settings"]["train_options"] == {"close_mosaic": 0}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model_options": {"head.nrom": "gn"}}, "head.nrom: not a field of FCOSHeadConfig; valid:"),
    ({"train_options": {"ema_taux": 1}}, "train option ema_taux: not a field of TrainConfig"),
    ({"augment": {"mosaik": 0.5}}, "augment mosaik: not a field of AugmentConfig"),
    ({"augment": {"mosaic": 2.0}}, "mosaic must be in [0, 1]"),
    ({"model": "fcos-xxl"}, "unknown model preset 'fcos-xxl'"),
    ({"nproc": "two"}, "nproc must be a number or auto"),
])
def test_bad_options_fail_before_training(data, tmp_path, kwargs, message):
    with pytest.raises(ValueError) as e:
        scaledet.train(data, epochs=1, imgsz=64, batch=8, out=tmp_path / "bad", **kwargs)
    assert message in str(e.value)
    assert not (tmp_path / "bad" / "weights").exists()
