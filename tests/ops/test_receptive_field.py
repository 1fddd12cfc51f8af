"""receptive_field against published and hand-computed values."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from scaledet.ops import receptive_field, receptive_field_table

VGG16_SPECS = (
    [(3, 1, 1)] * 2 + [(2, 2, 0)] + [(3, 1, 1)] * 2 + [(2, 2, 0)]
    + ([(3, 1, 1)] * 3 + [(2, 2, 0)]) * 3
)


def test_vgg16_specs_published_values():
    rows = receptive_field(VGG16_SPECS, 224)
    assert rows[-2].rf == (196, 196)  # conv5_3 (Araujo et al. 2019; Simonyan & Zisserman)
    assert rows[-1].rf == (212, 212)  # pool5
    assert rows[-1].jump == (32, 32) and rows[-1].output_size == (7, 7)
    assert [r.rf[0] for r in rows[:3]] == [3, 5, 6]


def test_alexnet_specs_published_value():
    # torchvision's AlexNet features: conv11/4 p2, pool3/2, conv5 p2, pool3/2, 3x conv3, pool3/2
    specs = [(11, 4, 2), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1), (3, 1, 1), (3, 1, 1),
             (3, 2, 0)]
    rows = receptive_field(specs, 224)
    assert rows[-1].rf == (195, 195) and rows[-1].jump == (32, 32)  # published: 195
    assert rows[-1].output_size == (6, 6)  # torchvision: 256 x 6 x 6 before avgpool


def test_vgg16_module_matches_specs():
    features = make_layers(cfgs["D"])  # torchvision's VGG-16 feature extractor
    rows = receptive_field(features, 64)
    by_name = {r.name: r for r in rows}
    assert by_name["28"].rf == (196, 196)  # conv5_3
    assert by_name["30"].rf == (212, 212)  # pool5
    assert rows[-1].name == "output" and rows[-1].rf == (212, 212)
    assert [r.rf for r in rows[:-1]] == [r.rf for r in receptive_field(VGG16_SPECS, 64)]


def test_start_and_jump_hand_worked():
    rows = receptive_field([(3, 2, 1), (2, 2, 0), (3, 1, 0)], (32, 16))
    # conv3/2 p1: centre of output 0 = 0.5 + (1 - 1) * 1; pool2/2: 0.5 + 0.5 * 2 = 1.5;
    # conv3 p0: 1.5 + 1 * 4 = 5.5
    assert [r.start for r in rows] == [(0.5, 0.5), (1.5, 1.5), (5.5, 5.5)]
    assert [r.jump for r in rows] == [(2, 2), (4, 4), (4, 4)]
    assert [r.rf for r in rows] == [(3, 3), (5, 5), (13, 13)]
    assert [r.output_size for r in rows] == [(16, 8), (8, 4), (6, 2)]


def test_dilation_and_non_square():
    rows = receptive_field([(3, 1, 1), (3, 1, 2, 2), ((1, 3), 1, (0, 1))], 20)
    assert rows[1].rf == (7, 7)  # 3 + (2 * 2) * 1
    assert rows[2].rf == (7, 9) and rows[2].kernel == (1, 3)
    module = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=2,
                                                                   dilation=2))
    assert receptive_field(module, 20)[1].rf == (7, 7)


def test_resnet18_hand_computed():
    # conv7/2 -> 7; maxpool3/2 -> 11 (jump 4); layer1: 4 convs x 8 -> 43; layer2: 43 + 8
    # (stride-2 conv at jump 4) + 3 x 16 -> 99; layer3: 99 + 16 + 3 x 32 -> 211;
    # layer4: 211 + 32 + 3 x 64 -> 435 at jump 32. The 1x1 shortcut never widens the field.
    model = torchvision.models.resnet18()
    rows = receptive_field(model, 64)
    by_name = {r.name: r for r in rows}
    assert by_name["layer4.1.conv2"].rf == (435, 435)
    assert by_name["layer4.1.conv2"].jump == (32, 32)
    shortcut = by_name["layer4.0.downsample.0"]  # 1x1/2 on the block input
    assert shortcut.rf == (211, 211) and shortcut.jump == (32, 32)
    assert by_name["layer4.1.conv1"].rf == (371, 371)  # union with the main path (307) + 2 * 32
    assert by_name["layer2.0.conv1"].rf == (51, 51)


def test_branches_take_the_union():
    class TwoPaths(nn.Module):
        def __init__(self):
            super().__init__()
            self.small = nn.Conv2d(1, 1, 3, padding=1)
            self.large = nn.Conv2d(1, 1, 7, padding=3)
            self.head = nn.Conv2d(1, 1, 3, stride=2, padding=1)

        def forward(self, x):
            return self.head(torch.relu(self.small(x)) + self.large(x))

    rows = receptive_field(TwoPaths(), 16)
    assert [r.name for r in rows] == ["small", "large", "head", "output"]
    assert rows[2].rf == (9, 9)  # 7 (large path) + 2


def test_fpn_outputs_and_interpolation():
    class TinyFPN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.head = nn.Conv2d(4, 4, 3, padding=1)  # shared across levels

        def forward(self, x):
            c1 = self.c1(x)
            c2 = self.c2(c1)
            p1 = c1 + F.interpolate(c2, scale_factor=2.0, mode="nearest")
            return {"p1": self.head(p1), "p2": self.head(c2)}

    rows = receptive_field(TinyFPN(), 32)
    names = [r.name for r in rows]
    assert names == ["c1", "c2", "interpolate_nearest", "head#1", "head#2", "output['p1']",
                     "output['p2']"]
    by_name = {r.name: r for r in rows}
    assert by_name["c2"].rf == (7, 7) and by_name["c2"].jump == (4, 4)
    assert by_name["interpolate_nearest"].jump == (2, 2)
    assert by_name["output['p1']"].rf == (11, 11)  # 7 + 2 * 2 (head at jump 2)
    assert by_name["output['p2']"].rf == (15, 15)  # 7 + 2 * 4


def test_module_state_is_restored():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.MaxPool2d(2))
    model.train()
    before = model[1].running_mean.clone()
    receptive_field(model, 16)
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, before)
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks


def test_table_prints_every_row():
    rows = receptive_field(VGG16_SPECS, 224)
    table = receptive_field_table(rows)
    assert len(table.splitlines()) == len(rows) + 1 and "212" in table.splitlines()[-1]


@pytest.mark.parametrize(("layers", "size", "message"), [
    ([(3, 1)], 32, r"layer 0 must be \(kernel, stride, padding"),
    ([(3, 1, "same")], 32, "layer 0 must be an int or a pair"),
    ([(7, 1, 0)], 4, "the output would be empty"),
    ("conv", 32, "model_or_layers must be"),
    ([(3, 1, 1)], (32, 32, 3), "input_size must be an int or a pair"),
])
def test_bad_input(layers, size, message):
    with pytest.raises(ValueError, match=message):
        receptive_field(layers, size)
