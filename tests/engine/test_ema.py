import math

import pytest
import torch
from torch import nn

from scaledet.engine.ema import ModelEMA


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_ema_matches_hand_computed_average():
    model = _model()
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    w = model[0].weight.detach().clone()
    ref = w.clone()
    for t in range(1, 6):
        with torch.no_grad():
            model[0].weight.add_(float(t))  # a known change per step
        d = 0.9 * (1 - math.exp(-t / 2.0))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        ref = d * ref + (1 - d) * model[0].weight.detach()
    assert torch.allclose(ema.module[0].weight, ref, atol=1e-6)
    assert ema.updates == 5
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_averages_float_buffers_and_copies_integer_ones():
    model = _model()
    ema = ModelEMA(model, decay=0.5, tau=1e-9)  # decay ramps to 0.5 immediately
    model.train()
    model(torch.randn(8, 3) + 5.0)  # moves BN running_mean, increments num_batches_tracked
    ema.update(model)
    bn, ebn = model[1], ema.module[1]
    assert torch.allclose(ebn.running_mean, 0.5 * torch.zeros(2) + 0.5 * bn.running_mean)
    assert int(ebn.num_batches_tracked) == 1


def test_ema_first_update_follows_the_model_closely():
    model = _model()
    ema = ModelEMA(model, decay=0.9999, tau=2000)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)  # d(1) = 0.9999 * (1 - exp(-1/2000)) ~ 5e-4: almost a copy
    assert torch.allclose(ema.module[0].weight, model[0].weight, atol=1e-3)


def test_state_dict_roundtrip():
    model = _model()
    ema = ModelEMA(model, decay=0.99, tau=10)
    for _ in range(3):
        ema.update(model)
    other = ModelEMA(_model(), decay=0.5, tau=1)
    other.load_state_dict(ema.state_dict())
    assert (other.updates, other.decay, other.tau) == (3, 0.99, 10)
    assert other.current_decay() == ema.current_decay()


def test_bad_arguments():
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(_model(), decay=1.0)
    with pytest.raises(ValueError, match="tau"):
        ModelEMA(_model(), tau=0)


def test_power_ema_weights_updates_linearly():
    # window 1/2: d(t) = ((t - 1) / t) ** 2, so after T updates of values x_1..x_T the average
    # is sum_i (2i - 1) x_i / T**2 (worked by hand: prod_{j>i} d(j) = (i / T)**2).
    model = nn.Linear(1, 1, bias=False)
    ema = ModelEMA(model, decay=0.9999, window=0.5)
    xs = torch.randn(40).tolist()
    for x in xs:
        with torch.no_grad():
            model.weight.fill_(x)
        ema.update(model)
    T = len(xs)
    expected = sum((2 * i - 1) * x for i, x in enumerate(xs, start=1)) / T**2
    assert float(ema.module.weight) == pytest.approx(expected, abs=1e-5)
    capped = ModelEMA(model, decay=0.5, window=0.1)
    capped.updates = 1000
    assert capped.current_decay() == 0.5
    with pytest.raises(ValueError, match="window"):
        ModelEMA(model, window=1.0)
    state = ema.state_dict()
    other = ModelEMA(model)
    other.load_state_dict(state)
    assert other.window == 0.5 and other.current_decay() == ema.current_decay()
