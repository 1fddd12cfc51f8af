"""Per-family configs: each head config holds only its own fields, overrides name the field
and list the valid ones, and every preset survives the dict round trip checkpoints use."""

import dataclasses

import pytest

from scaledet.models import PRESETS, build, build_from_config, config_from_dict
from scaledet.models.config import (
    CenterNetHeadConfig,
    FCOSHeadConfig,
    ModelConfig,
    TALConfig,
    YOLOXHeadConfig,
    apply_overrides,
)
from scaledet.models.factory import EXPERIMENTAL, preset


@pytest.mark.parametrize("name", [*PRESETS, *EXPERIMENTAL])
def test_presets_round_trip_through_dicts(name):
    cfg = {**PRESETS, **EXPERIMENTAL}[name].config(3)
    data = dataclasses.asdict(cfg)
    assert config_from_dict(data) == cfg
    model = build_from_config(data)
    assert type(model.config.head) is type(cfg.head)


def test_head_configs_hold_only_their_own_fields():
    fcos = {f.name for f in dataclasses.fields(FCOSHeadConfig)}
    centernet = {f.name for f in dataclasses.fields(CenterNetHeadConfig)}
    yolox = {f.name for f in dataclasses.fields(YOLOXHeadConfig)}
    assert "gaussian_alpha" not in fcos | yolox and "reg_max" not in centernet | yolox
    assert "lr" not in {f.name for f in dataclasses.fields(ModelConfig)}


def test_overrides_switch_kinds_and_update_fields():
    cfg = PRESETS["fcos-n"].config(3)
    tal = apply_overrides(cfg, {"head.assigner": "tal", "head.norm": "gn"})
    assert tal.head.assigner == TALConfig() and tal.head.norm == "gn"
    assert apply_overrides(tal, {"head": {"assigner": {"topk": 5}}}).head.assigner.topk == 5
    cn = apply_overrides(cfg, {"head": "centernet"})
    assert cn.head == CenterNetHeadConfig()
    assert apply_overrides(cfg, {"neck.channels": 32, "strides": [8, 16, 32]}).neck.channels == 32
    assert cfg.head.norm == "level_bn"  # the original is untouched


@pytest.mark.parametrize(("overrides", "message"), [
    ({"head.gaussian_alpha": 1.0}, "head.gaussian_alpha: not a field of FCOSHeadConfig; valid:"),
    ({"nek.channels": 3}, "model.nek: not a field of ModelConfig; valid:"),
    ({"head.assigner": "hungarian"}, "unknown kind 'hungarian'; valid: ['atss', 'fcos', 'tal']"),
    ({"head.num_convs": "two"}, "head.num_convs must be int"),
    ({"head.depthwise": 1}, "head.depthwise must be bool"),
    ({"neck": 3}, "model.neck is a section"),
    ({"head.box_weighting": "sometimes"}, "box_weighting must be one of"),
])
def test_bad_overrides_name_the_field_and_the_valid_ones(overrides, message):
    with pytest.raises(ValueError) as e:
        build("fcos-n", num_classes=2, **overrides)
    assert message in str(e.value)
    if "valid:" in message and "not a field" in message:
        assert "norm" in str(e.value) or "neck" in str(e.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="valid names: fcos-n, fcos-s"):
        build("fcos-xxl")


def test_experimental_architectures_build_with_a_warning_and_are_not_offered():
    assert "centernet-n" in EXPERIMENTAL and "centernet-n" not in PRESETS
    with pytest.warns(UserWarning, match="centernet-n is experimental"):
        assert preset("centernet-n").name == "centernet-n"
    with pytest.raises(ValueError) as e:
        preset("centernet-m")
    assert "centernet" not in str(e.value).split("valid names:")[1]
