"""Backbone and neck building blocks: SPPF == SPP(5, 9, 13), shapes, grad checkpointing."""

import pytest
import torch

from scaledet.models import PAFPN, SPP, SPPF, CSPNet


@pytest.mark.parametrize("train", [False, True])
def test_sppf_equals_spp_5_9_13_with_shared_weights(train):
    torch.manual_seed(0)
    sppf = SPPF(16, 24, k=5)
    spp = SPP(16, 24, kernels=(5, 9, 13))
    spp.load_state_dict(sppf.state_dict())  # same cv1/cv2 parameters, pools have none
    sppf.train(train), spp.train(train)
    with torch.no_grad():  # random BN statistics so the test does not rest on identity BNs
        for m in list(sppf.modules()):
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
        spp.load_state_dict(sppf.state_dict())
    x = torch.randn(2, 16, 13, 11) * 3  # odd sizes: border windows are truncated by padding
    torch.testing.assert_close(sppf(x), spp(x), rtol=0, atol=0)


def test_sppf_differs_from_a_different_pyramid():
    torch.manual_seed(0)
    sppf, spp = SPPF(8, 8), SPP(8, 8, kernels=(3, 5, 7))
    spp.load_state_dict(sppf.state_dict())
    x = torch.randn(1, 8, 16, 16)
    assert not torch.allclose(sppf.eval()(x), spp.eval()(x))


def test_cspnet_levels_and_channels():
    net = CSPNet(widths=(8, 16, 24, 32, 40), depths=(1, 1, 1, 1), out_strides=(4, 8, 16, 32))
    outs = net(torch.rand(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 24), (2, 24, 8, 12), (2, 32, 4, 6),
                                              (2, 40, 2, 3)]
    assert net.out_channels == [16, 24, 32, 40]
    with pytest.raises(ValueError, match="widths"):
        CSPNet(widths=(8, 16), depths=(1, 1, 1, 1))


def test_pafpn_handles_odd_sizes():
    net = CSPNet(widths=(8, 16, 24, 32, 40), depths=(0, 1, 0, 1), depthwise=True)
    neck = PAFPN(in_channels=net.out_channels, channels=16, depth=1)
    feats = net(torch.rand(1, 3, 75, 101))
    outs = neck(feats)
    assert [o.shape[-2:] for o in outs] == [f.shape[-2:] for f in feats]
    assert all(o.shape[1] == 16 for o in outs)


def test_grad_checkpointing_same_outputs_gradients_and_bn_stats():
    torch.manual_seed(0)
    a = CSPNet(widths=(8, 16, 24, 32, 40), depths=(1, 1, 1, 1))
    b = CSPNet(widths=(8, 16, 24, 32, 40), depths=(1, 1, 1, 1))
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.rand(2, 3, 64, 64)
    for net in (a, b):
        sum(o.square().mean() for o in net(x)).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):  # BN stats updated once
        torch.testing.assert_close(ba, bb, msg=name)


@pytest.mark.parametrize("norm", ["gn", "level_bn"])
def test_fuse_conv_bn_keeps_outputs(norm):
    from scaledet.models import build

    torch.manual_seed(0)
    model = build("fcos-n", num_classes=3, head={"norm": norm}).eval()
    with torch.no_grad():  # non-trivial statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        ref = model.predict_raw(x)
        assert model.fuse() is model
        out = model.predict_raw(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_level_norm_tower_shares_convs_and_keeps_statistics_per_level():
    from scaledet.models.layers import LevelNormTower, conv_block

    torch.manual_seed(0)
    tower = LevelNormTower(8, num_convs=1, num_levels=3, depthwise=True)
    plain = conv_block(8, 8, depthwise=True)
    n_conv = sum(p.numel() for p in tower.convs.parameters())
    assert n_conv == sum(p.numel() for m in plain.modules() if isinstance(m, torch.nn.Conv2d)
                         for p in m.parameters())
    before = [b.clone() for b in tower.norms[1].buffers()]
    out = tower(torch.randn(2, 8, 9, 7) * 4 + 3, level=0)  # trains level 0's BatchNorms only
    assert out.shape == (2, 8, 9, 7)
    assert not torch.equal(tower.norms[0][0].running_mean, torch.zeros(8))
    for a, b in zip(before, tower.norms[1].buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same conv weights with level 1's statistics give a different output in eval mode
    tower.eval()
    x = torch.randn(1, 8, 5, 5)
    assert not torch.allclose(tower(x, 0), tower(x, 1))


def test_depthwise_conv_strided_runs_fp32_under_cpu_autocast():
    from scaledet.models.layers import DepthwiseConv2d

    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 12)
    for stride, dtype in ((2, torch.float32), (1, torch.bfloat16)):
        conv = DepthwiseConv2d(8, 3, stride)
        ref = torch.nn.Conv2d(8, 8, 3, stride, 1, groups=8, bias=False)
        ref.load_state_dict(conv.state_dict())  # same parameters and keys as nn.Conv2d
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        assert y.dtype == dtype and y.shape == ref(x).shape
        torch.testing.assert_close(y.float(), ref(x), rtol=0 if stride == 2 else 2e-2,
                                   atol=1e-6 if stride == 2 else 5e-2)
        y.float().sum().backward()
        assert torch.isfinite(conv.weight.grad).all()


@pytest.mark.parametrize("name, reference", [
    ("relu", torch.relu),
    ("silu", torch.nn.functional.silu),
    ("leaky_relu", lambda x: torch.nn.functional.leaky_relu(x, 0.1)),
    ("hardswish", lambda x: x * (x + 3).clamp(0, 6) / 6),  # MobileNetV3's definition
])
def test_activations_match_their_definition_and_keep_the_input(name, reference):
    from scaledet.models.layers import make_act

    x = torch.linspace(-5, 5, 101)
    act = make_act(name)
    torch.testing.assert_close(act(x.clone()), reference(x))
    if name in ("silu", "hardswish"):  # their backward needs the input: in-place makes autograd
        y = x.clone()                  # save a copy first, which costs more than a new tensor
        act(y)
        assert torch.equal(y, x)


def test_unknown_activation_is_rejected():
    from scaledet.models.layers import make_act

    with pytest.raises(ValueError, match="act must be one of"):
        make_act("gelu")
