"""The set-prediction head: denoising queries do not leak into the matching queries, the
mixture-of-experts balance loss reaches the total, inference returns one box per query."""

import pytest
import torch

from scaledet.models import build
from scaledet.models.detr.denoising import make_denoising_queries


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build("rtdetr-n", num_classes=3).eval()


def test_denoising_queries_do_not_change_the_matching_queries(model):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 128, 160)
    head = model.head
    with torch.no_grad():  # heads start at zero (outputs = references): make them see tgt
        for lin in [*head.decoder.class_heads, *(h.layers[-1] for h in head.decoder.box_heads)]:
            lin.weight.normal_(0.0, 0.1)
    targets = [{"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]]),
                "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[0.5, 0.4, 0.1, 0.3]]), "labels": torch.tensor([0])}]
    with torch.no_grad():
        feats = model.features(images)
        plain = head._run(feats)["layers"]
        dn = make_denoising_queries(targets, 3, head.num_queries, head.num_denoising)
        mixed = head._run(feats, dn)["layers"]
        unmasked = dn.attn_mask.clone()
        unmasked[:] = False
        dn.attn_mask = unmasked
        leaked = head._run(feats, dn)["layers"]
    d = dn.labels.shape[1]
    for (l0, b0), (l1, b1) in zip(plain, mixed):
        torch.testing.assert_close(l1[:, d:], l0, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b1[:, d:], b0, rtol=1e-4, atol=1e-4)
    assert (leaked[-1][0][:, d:] - plain[-1][0]).abs().max() > 1e-3  # the mask is what holds


def test_inference_returns_one_box_per_query_without_nms(model):
    boxes, scores = model.predict_raw(torch.rand(1, 3, 160, 128))
    assert boxes.shape == (1, model.head.num_queries, 4) and scores.shape == (1, 100, 3)
    assert model.postprocess.nms == "none"
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 2] <= 128).all()


def test_moe_balance_loss_is_added():
    torch.manual_seed(0)
    m = build("rtdetr-n", num_classes=3, neck={"encoder_experts": 4}).train()
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])}]
    losses = m(torch.rand(1, 3, 96, 96), targets)
    assert float(losses["loss_moe"]) > 0
    parts = sum(v for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], parts)


def test_optimizer_gives_the_transformer_a_smaller_learning_rate(model):
    from scaledet.engine.optim import param_groups

    groups = param_groups(model, 0.05, 0.02)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.head.decoder.layers[0].self_attn.q_proj.weight)] == pytest.approx(1e-3)
    assert lr_of[id(model.neck.aifi.layers[0].attn.q_proj.weight)] == pytest.approx(1e-3)
    assert lr_of[id(model.head.proposal_head.cls_pred.weight)] == pytest.approx(0.02)
    assert lr_of[id(model.backbone.stem[0].weight)] == pytest.approx(0.02) if hasattr(
        model.backbone, "stem") else True
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_feature_grad_scale_scales_the_decoders_gradient_into_the_features():
    """0: the neck features learn from the dense proposal loss alone; s: s times the decoder's
    gradient; the losses themselves do not change."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 128, 128)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 64.0, 120.0, 100.0]]),
                "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[30.0, 30.0, 90.0, 80.0]]), "labels": torch.tensor([0])}]
    base = build("rtdetr-n", num_classes=3).train()
    with torch.no_grad():
        feats = [f.detach() for f in base.features(images)]
    grads, values = {}, {}
    for scale in (1.0, 0.25, 0.0):
        head = build("rtdetr-n", num_classes=3, head={"feature_grad_scale": scale}).head.train()
        head.load_state_dict(base.head.state_dict())
        inputs = [f.clone().requires_grad_(True) for f in feats]
        torch.manual_seed(1)  # the same denoising noise in every run
        losses = head.loss(inputs, targets)
        decoder = losses["loss_cls"] + losses["loss_box"] + losses["loss_dn"]
        got = torch.autograd.grad(decoder, inputs, allow_unused=True)  # None: not reached
        grads[scale] = [torch.zeros_like(f) if g is None else g for f, g in zip(inputs, got)]
        values[scale] = float(losses["loss"])
    assert all(float(g.abs().max()) == 0.0 for g in grads[0.0])
    assert float(grads[1.0][0].abs().max()) > 0
    for g1, gs in zip(grads[1.0], grads[0.25]):
        torch.testing.assert_close(gs, 0.25 * g1, rtol=1e-4, atol=1e-7)
    assert values[0.0] == pytest.approx(values[1.0], rel=1e-6)
    with pytest.raises(ValueError, match="feature_grad_scale"):
        build("rtdetr-n", num_classes=3, head={"feature_grad_scale": 2.0})
