"""End-to-end checks of every preset: train/eval forward, empty and odd-sized inputs, config
round trip, post-processing settings, input validation."""

import dataclasses
import json

import pytest
import torch

from scaledet.models import PRESETS, Detector, build, build_from_config
from scaledet.models.factory import EXPERIMENTAL
from scaledet.models.heads.dense import NMS_METHODS


def _targets(n_per_image):
    g = torch.Generator().manual_seed(0)
    out = []
    for n in n_per_image:
        xy = torch.rand(n, 2, generator=g) * 150
        wh = 4 + torch.rand(n, 2, generator=g) * 120
        out.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 3, (n,), generator=g)})
    return out


# Every preset, plus the FCOS head's GFL distribution regression (``reg_max``) and the set
# head's other query selection and encoder attentions.
VARIANTS = [(name, {}) for name in sorted([*PRESETS, *EXPERIMENTAL])] + [
    ("fcos-n", {"head": {"reg_max": 8}}),
    ("rtdetr-n", {"head": {"query_selection": "hungarian"}}),
    ("rtdetr-n", {"neck": {"encoder": "linear"}}),
    ("rtdetr-n", {"neck": {"encoder": "gau", "encoder_layers": 2}}),
    ("rtdetr-n", {"neck": {"encoder_experts": 4, "encoder_ffn": "swiglu"}}),
]


def _variant_id(variant) -> str:
    name, overrides = variant
    parts = [f"{k}={v}" for sub in overrides.values() for k, v in sub.items()]
    return "+".join([name, *parts])


@pytest.fixture(scope="module", params=VARIANTS, ids=_variant_id)
def model(request):
    torch.manual_seed(0)
    name, overrides = request.param
    return build(name, num_classes=3, **overrides)


def test_train_and_eval_on_odd_sized_input_with_an_empty_image(model):
    images = torch.rand(2, 3, 250, 333)
    targets = _targets([3, 0])
    model.train()
    losses = model(images, targets)
    assert {"loss", "loss_cls", "loss_box"} <= set(losses)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad()
    model.eval()
    model.score_thresh = 0.0  # untrained scores are ~prior_prob: keep them all
    with torch.no_grad():
        dets = model(images)
    model.score_thresh = 0.05
    assert len(dets) == 2
    for d in dets:
        k = len(d["scores"])
        assert 0 < k <= 100 and d["boxes"].shape == (k, 4) and d["labels"].dtype == torch.int64
        assert (d["boxes"][:, [0, 2]] <= 333).all() and (d["boxes"][:, [1, 3]] <= 250).all()
        assert (d["boxes"] >= 0).all() and (d["scores"][:-1] >= d["scores"][1:]).all()


def test_all_empty_targets_give_finite_losses(model):
    model.train()
    losses = model(torch.rand(2, 3, 64, 96), _targets([0, 0]))
    assert torch.isfinite(losses["loss"]) and losses["loss_box"] == 0
    losses["loss"].backward()
    model.zero_grad()


def test_config_json_round_trip_rebuilds_identical_model(model):
    data = json.loads(json.dumps(dataclasses.asdict(model.config)))
    clone = build_from_config(data)
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())  # strict: same architecture
    model.eval(), clone.eval()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        for a, b in zip(model.predict_raw(x), clone.predict_raw(x)):
            torch.testing.assert_close(a, b)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="fcos-n, fcos-s, fcos-m"):
        build("fcos-x", num_classes=3)
    with pytest.raises(ValueError, match="num_classez: not a field of ModelConfig"):
        build_from_config({"name": "fcos-n", "num_classez": 3})


def test_overrides_and_assigner_choice():
    model = build("fcos-n", num_classes=2, head={"assigner": "fcos"}, act="relu")
    assert model.config.head.assigner.kind == "fcos" and model.config.act == "relu"
    assert type(model.head.assigner).__name__ == "FCOSAssigner"
    model.train()
    assert torch.isfinite(model(torch.rand(1, 3, 64, 64), _targets([2]))["loss"])
    with pytest.raises(ValueError, match="head.assigner: unknown kind 'simota'"):
        build("fcos-n", num_classes=2, head={"assigner": "simota"})


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return build("fcos-n", num_classes=3)


@pytest.mark.parametrize("method", NMS_METHODS)
def test_nms_variants_and_max_det(nano, method):
    nano.eval()
    nano.nms, nano.score_thresh, nano.max_det = method, 0.0, 300
    with torch.no_grad():
        dets = nano(torch.rand(1, 3, 128, 128))[0]
    assert 0 < len(dets["scores"]) <= 300
    nano.max_det = 5
    with torch.no_grad():
        assert len(nano(torch.rand(1, 3, 128, 128))[0]["scores"]) <= 5
    nano.nms, nano.score_thresh, nano.max_det = "hard", 0.05, 100


def test_postprocess_settings_are_validated(nano):
    with pytest.raises(ValueError, match="nms must be one of"):
        nano.nms = "fast"
    assert nano.nms == "hard"
    with pytest.raises(ValueError, match="score_thresh"):
        nano.score_thresh = 1.5
    nano.nms_iou = 0.5
    assert nano.postprocess.nms_iou == 0.5
    nano.nms_iou = 0.6


def test_many_boxes_per_image(nano):
    nano.train()
    losses = nano(torch.rand(2, 3, 320, 320), _targets([600, 1]))
    assert torch.isfinite(losses["loss"])


def test_bad_inputs_raise_clear_errors(nano):
    nano.train()
    with pytest.raises(ValueError, match="targets are required"):
        nano(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        nano(torch.rand(3, 64, 64), _targets([1]))
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        nano(torch.rand(1, 3, 64, 64), [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([3])}])
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        nano(torch.rand(1, 3, 64, 64), _targets([1, 1]))


def test_custom_composition_without_config():
    from scaledet.models import PAFPN, CSPNet, FCOSHead

    backbone = CSPNet(widths=(8, 16, 16, 32, 32), depths=(0, 1, 1, 1))
    neck = PAFPN(in_channels=backbone.out_channels, channels=16, bottom_up=False)
    head = FCOSHead(num_classes=1, in_channels=16, num_convs=0, depthwise=False)
    model = Detector(backbone, neck, head).train()
    assert model.config is None
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 70.0]]), "labels": torch.tensor([0])}]
    assert torch.isfinite(model(torch.rand(1, 3, 96, 96), targets)["loss"])


@pytest.mark.parametrize("name", ["fcos-n", "yolo-n"])
def test_ignore_regions_reach_the_head(name):
    """A crowd region given to the detector changes the classification loss (the locations
    inside it are left out), and an image without one trains as before."""
    torch.manual_seed(0)
    model = build(name, num_classes=2).train()
    images = torch.rand(1, 3, 64, 64)
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
    plain = model(images, [target])["loss"].item()
    crowd = model(images, [{**target, "ignore": torch.tensor([[24.0, 24.0, 64.0, 64.0]])}])
    assert crowd["loss"].item() != pytest.approx(plain, rel=1e-6)
    empty = model(images, [{**target, "ignore": torch.zeros(0, 4)}])["loss"].item()
    assert empty == pytest.approx(plain, rel=1e-6)
    with pytest.raises(ValueError, match="ignore"):
        model(images, [{**target, "ignore": torch.zeros(3)}])
