"""The embedding network (shapes, unit norm, sizes), the margin recipe (warm-up then ramp), the
checkpoint round trip, and a tiny recognition training on synthetic identities: the loss falls
and verification accuracy on *held-out* identities beats a measured threshold."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from scaledet.cli import main
from scaledet.data.synth_faces import make_face_identities
from scaledet.engine.face_fit import FaceTrainSettings, embedding_scorer, evaluate_pairs, fit_face
from scaledet.faces import EmbeddingConfig, FaceEmbedder
from scaledet.faces.embedding import embedding_config
from scaledet.faces.recognizer import FaceRecognizer, MarginRecipe, load_face_embedder

TINY = dict(input_size=32, width=1.0, stem_channels=32, head_channels=128,
            stages=((2, 32, 1, 2), (2, 64, 1, 2), (2, 64, 1, 1), (2, 64, 1, 2), (2, 64, 1, 1)))


@pytest.mark.parametrize("size", [32, 64, 112])
def test_embedder_shapes_and_unit_norm(size):
    cfg = EmbeddingConfig(input_size=size) if size == 112 else EmbeddingConfig(
        **{**TINY, "input_size": size})
    m = FaceEmbedder(cfg).eval()
    y = m(torch.randn(2, 3, size, size))
    assert y.shape == (2, cfg.embedding_dim)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(2))
    assert m.gdc[0].kernel_size == (size // 16, size // 16)  # the GDC covers the final map
    with pytest.raises(ValueError, match=f"\\(B, 3, {size}, {size}\\)"):
        m(torch.randn(2, 3, size + 16, size))


def test_mobilefacenet_size_is_the_papers():
    n = sum(p.numel() for p in FaceEmbedder().parameters())
    assert 0.9e6 < n < 1.1e6  # MobileFaceNet: 0.99 M parameters


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of 16"):
        EmbeddingConfig(input_size=100)
    with pytest.raises(ValueError, match="multiply to 16"):
        EmbeddingConfig(stages=((2, 64, 1, 2), (2, 64, 1, 1)))


def test_embedding_config_archs():
    """face train's --arch: mobilefacenet is the paper's network, small a lighter one."""
    assert embedding_config("mobilefacenet", 112, 128) == EmbeddingConfig()
    small = FaceEmbedder(embedding_config("small", 64, 128))
    assert small(torch.rand(2, 3, 64, 64)).shape == (2, 128)
    assert sum(p.numel() for p in small.parameters()) < 0.5e6
    with pytest.raises(ValueError, match="arch must be one of"):
        embedding_config("resnet")


def test_margin_recipe_warmup_then_ramp():
    r = MarginRecipe(loss="arcface", warmup=0.1, ramp=0.2)
    assert [r.factor(p) for p in (0.0, 0.09, 0.1, 0.2, 0.3, 1.0)] == pytest.approx(
        [0, 0, 0, 0.5, 1, 1])
    assert MarginRecipe(loss="cosface", margin=0.2).margins() == (1.0, 0.0, 0.2)
    assert MarginRecipe(loss="sphereface").margins() == (1.35, 0.0, 0.0)
    with pytest.raises(ValueError, match="loss must be one of"):
        MarginRecipe(loss="triplet")
    model = FaceRecognizer(5, EmbeddingConfig(**TINY), r).train()
    x = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    targets = [{"labels": torch.tensor([i % 5])} for i in range(4)]
    model.progress = lambda: 0.0  # warm-up: the plain normalised softmax
    out0 = model(x, targets)
    model.progress = lambda: 1.0
    out1 = model(x, targets)
    assert float(out0["margin"]) == 0.0 and float(out1["margin"]) == 1.0
    assert float(out1["loss"].detach()) > float(out0["loss"].detach())  # the margin: harder


def test_checkpoint_round_trip(tmp_path):
    from scaledet.models.checkpoint import save_weights

    model = FaceRecognizer(3, EmbeddingConfig(**TINY)).eval()
    path = save_weights(tmp_path / "w.safetensors", model.state_dict(), model.meta())
    emb = load_face_embedder(path)
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(embedding_scorer(emb)(x), model(x))
    save_weights(tmp_path / "d.safetensors", {"a": torch.zeros(1)}, {"task": "detect"})
    with pytest.raises(ValueError, match=r"d\.safetensors: not a face-recognition checkpoint"):
        load_face_embedder(tmp_path / "d.safetensors")


@pytest.mark.slow
def test_tiny_recognition_training_generalises_to_new_identities(tmp_path):
    root = make_face_identities(tmp_path / "ids", identities=24, per_identity=8,
                                verify_identities=16, pairs_per_fold=10, seed=0, size=32)
    settings = FaceTrainSettings(
        data=str(root), out=str(tmp_path / "run"), embedding=EmbeddingConfig(**TINY),
        recipe=MarginRecipe(loss="arcface", warmup=0.0, ramp=0.0), epochs=8, batch=32,
        progress=False, plots=False, eval_interval=0)
    untrained = FaceRecognizer(24, EmbeddingConfig(**TINY))
    before, _, _ = evaluate_pairs(untrained, root / "pairs.txt", root / "verify", 32)
    summary = fit_face(settings)
    history = np.array(summary["history"])
    assert history[-6:].mean() < 0.8 * history[:6].mean()  # the loss falls
    acc = summary["metrics"]["verification_accuracy"]
    assert summary["metrics"]["mAP"] == acc
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]  # the verification numbers, not empty box columns
    assert float(last["verification_accuracy"]) == pytest.approx(acc, abs=1e-5)
    assert float(last["auc"]) == pytest.approx(summary["metrics"]["auc"], abs=1e-5)
    assert acc >= ACCURACY_FLOOR, (acc, before.protocol.accuracy)
    # the CLI's verify reproduces it from the best checkpoint
    assert main(["face", "verify", "--weights", summary["weights"], "--pairs",
                 str(root / "pairs.txt"), "--root", str(root / "verify"), "--out",
                 str(tmp_path / "verify")]) == 0
    assert (tmp_path / "verify" / "roc.png").stat().st_size > 0


ACCURACY_FLOOR = 0.68
"""Measured 0.715 and 0.765 (weight seeds 0 and 1; the dataset fixed, 200 pairs); an untrained
network already scores 0.645 / 0.75 here (skin and hair colours alone separate many pairs),
so this floor checks the pipeline end to end, not how much training adds."""
