"""SNet and MobileNet backbones, the atrous last stage, and models built on them."""

import pytest
import torch
import torchvision

from scaledet.models import CSPNet, MobileNet, SNet, build, dilate_last_stage
from scaledet.models.backbones.snet import ShuffleUnit, channel_shuffle
from scaledet.models.info import level_info
from scaledet.ops import receptive_field

SMALL = {"snet": lambda **kw: SNet(widths=(8, 8, 16, 32, 48), depths=(1, 1, 1, 1), **kw),
         "mobilenet": lambda **kw: MobileNet(widths=(8, 16, 24, 32, 48), depths=(1, 1, 1, 1), **kw),
         "csp": lambda **kw: CSPNet(widths=(8, 16, 24, 32, 48), depths=(1, 1, 1, 1), **kw)}


def test_snet_with_3x3_kernels_is_torchvision_shufflenet_v2():
    """Same weights in the same order -> the same stride-32 features as torchvision's
    ShuffleNetV2 1.0x trunk (conv1 ... stage4): channel split, shuffle order, strides."""
    torch.manual_seed(0)
    ref = torchvision.models.shufflenet_v2_x1_0().eval()
    ours = SNet(widths=(24, 24, 116, 232, 464), depths=(0, 3, 7, 3), kernel=3,
                out_strides=(8, 16, 32)).eval()
    ref_trunk = [ref.conv1, ref.stage2, ref.stage3, ref.stage4]
    ref_params = [p for m in ref_trunk for p in m.parameters()]
    ref_buffers = [b for m in ref_trunk for b in m.buffers()]
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref_params]
    with torch.no_grad():
        for p, q in zip(ours.parameters(), ref_params):
            p.copy_(q.detach() + 0.01 * torch.randn_like(q))
            q.copy_(p)
        for b, c in zip(ours.buffers(), ref_buffers):
            if b.is_floating_point():
                b.copy_(torch.rand_like(b) + 0.5)  # non-trivial BN statistics
                c.copy_(b)
        x = torch.rand(1, 3, 97, 130)
        y = ref.maxpool(ref.conv1(x))
        feats = []
        for stage in (ref.stage2, ref.stage3, ref.stage4):
            y = stage(y)
            feats.append(y)
        for a, b in zip(ours(x), feats):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_snet_uses_5x5_depthwise_convs_and_validates():
    net = SNet()
    dw = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert dw and all(m.kernel_size == (5, 5) and m.groups == m.in_channels for m in dw)
    with pytest.raises(ValueError, match="even cout"):
        ShuffleUnit(8, 9, s=2)
    with pytest.raises(ValueError, match="widths needs 5"):
        SNet(widths=(8, 16), depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="out_strides"):
        MobileNet(out_strides=(2, 8))


def test_mobilenet_parameter_count_by_hand():
    """Stem 3x3 conv + BN, then per DWSepConv: depthwise 9*cin + BN 2*cin, pointwise cin*cout +
    BN 2*cout."""
    widths, depths = (8, 16, 24, 32, 48), (1, 0, 2, 1)
    expected = 3 * 9 * 8 + 2 * 8
    for cin, cout, n in zip(widths[:-1], widths[1:], depths):
        for c_in in [cin] + [cout] * n:
            expected += 9 * c_in + 2 * c_in + c_in * cout + 2 * cout
    assert sum(p.numel() for p in MobileNet(widths=widths, depths=depths).parameters()) == expected


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_levels_channels_and_odd_sizes(kind):
    net = SMALL[kind](out_strides=(4, 8, 16, 32))
    outs = net(torch.rand(2, 3, 75, 101))
    assert [tuple(o.shape[-2:]) for o in outs] == [(19, 26), (10, 13), (5, 7), (3, 4)]
    assert [o.shape[1] for o in outs] == net.out_channels


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_atrous_last_stage_keeps_stride_16_and_the_receptive_field(kind):
    torch.manual_seed(0)
    plain, atrous = SMALL[kind](), SMALL[kind]()
    atrous.load_state_dict(plain.state_dict())
    assert dilate_last_stage(atrous) == (8, 16, 16) == atrous.feature_strides
    atrous.load_state_dict(plain.state_dict())  # same parameters, only strides/dilations changed
    x = torch.rand(1, 3, 96, 128)
    outs = atrous(x)
    assert outs[-1].shape[-2:] == outs[-2].shape[-2:] == (6, 8)
    last = {name: [r for r in receptive_field(net, (96, 128)) if r.name == "output[2]"][0]
            for name, net in (("plain", plain), ("atrous", atrous))}
    assert last["plain"].jump == (32, 32) and last["atrous"].jump == (16, 16)
    assert last["atrous"].rf == last["plain"].rf
    # Removing the stride without dilating would shrink the field: dilation is what keeps it.
    for m in atrous.stages[-1].modules():
        if isinstance(m, torch.nn.Conv2d) and m.dilation == (2, 2):
            m.dilation, m.padding = (1, 1), (m.kernel_size[0] // 2, m.kernel_size[1] // 2)
    shrunk = [r for r in receptive_field(atrous, (96, 128)) if r.name == "output[2]"][0]
    assert shrunk.rf[0] < last["plain"].rf[0]
    with pytest.raises(ValueError, match="no stride-2"):
        dilate_last_stage(atrous)


@pytest.mark.parametrize("kind", ["snet", "mobilenet", "csp"])
def test_detector_on_each_backbone_with_atrous_last_stage(kind):
    """fcos-n with every backbone, dilated, bottom-up PAN included (two stride-16 levels)."""
    torch.manual_seed(0)
    widths = (8, 8, 16, 32, 48) if kind == "snet" else (8, 16, 24, 32, 48)
    model = build("fcos-n", num_classes=2, backbone={"kind": kind, "widths": widths,
                                                     "dilated": True}, neck={"channels": 16})
    assert model.head.strides == (8, 16, 16)
    assert [lv.stride for lv in level_info(model, 64)] == [(8, 8), (16, 16), (16, 16)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])}]
    model.train()
    loss = model(torch.rand(1, 3, 75, 90), targets)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    model.score_thresh = 0.0
    with torch.no_grad():
        det = model(torch.rand(1, 3, 75, 90))[0]
    assert len(det["boxes"]) > 0


def test_unknown_backbone_kind_is_rejected():
    with pytest.raises(ValueError, match="backbone.kind must be one of"):
        build("fcos-n", num_classes=2, backbone={"kind": "resnet"})
