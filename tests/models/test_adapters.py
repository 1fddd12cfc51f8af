"""Adapters of a trained detector (``scaledet.models.adapters``): LoRA starts at the base model
and merges exactly, each kind trains only its own parameters, frozen BatchNorm statistics do
not move, adapted checkpoints load onto their base (checked by hash), class layers are
rebuilt for new classes, and a merged LoRA model exports to ONNX."""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytest
import torch

from scaledet.models import build
from scaledet.models.adapters import (
    AdapterConfig,
    FrozenBatchNorm2d,
    LoRAConv2d,
    LoRALinear,
    PrefixAttention,
    apply_adapters,
    checkpoint_state,
    class_dependent_keys,
    load_pretrained,
    merge_lora,
)
from scaledet.models.checkpoint import (
    base_reference,
    file_sha256,
    load_weights,
    model_from_weights,
    save_weights,
)
from scaledet.nn.attention import MultiheadAttention

IMAGES = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))


def _base(name: str = "fcos-n", num_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build(name, num_classes=num_classes)
    with torch.no_grad():  # non-trivial statistics, as a trained model has
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _targets(n: int = 2) -> list[dict]:
    box = torch.tensor([[10.0, 8.0, 40.0, 50.0]])
    return [{"boxes": box, "labels": torch.tensor([1])} for _ in range(n)]


def _perturb_lora(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (LoRAConv2d, LoRALinear)):
                m.lora_B.normal_(0.0, 0.05)


def _raw(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.eval().predict_raw(IMAGES)


def test_zero_initialised_lora_gives_the_base_outputs_exactly():
    base = _base()
    adapted = apply_adapters(copy.deepcopy(base), AdapterConfig("lora", rank=4))
    assert any(isinstance(m, LoRAConv2d) for m in adapted.modules())
    for ref, out in zip(_raw(base), _raw(adapted)):
        assert torch.equal(ref, out)


def test_lora_leaves_depthwise_convolutions_out():
    adapted = apply_adapters(_base(), AdapterConfig("lora", rank=4))
    convs = [m for m in adapted.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(not isinstance(m, LoRAConv2d) for m in convs if m.groups > 1)
    assert all(isinstance(m, LoRAConv2d) for m in convs if m.groups == 1)


@pytest.mark.parametrize("name", ["fcos-n", "rtdetr-n"])
def test_merged_lora_equals_unmerged(name):
    adapted = apply_adapters(_base(name), AdapterConfig("lora", rank=4))
    _perturb_lora(adapted)
    before = _raw(adapted)
    assert merge_lora(adapted) > 0
    assert not any(isinstance(m, (LoRAConv2d, LoRALinear)) for m in adapted.modules())
    assert getattr(adapted, "adapter_config", None) is None
    for ref, out in zip(before, _raw(adapted)):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,name,trained", [
    ("lora", "fcos-n", ("lora_A", "lora_B")),
    ("adapter", "fcos-n", ("adapters.",)),
    ("head", "fcos-n", ("head.",)),
    ("prefix", "rtdetr-n", ("prefix_k", "prefix_v")),
])
def test_only_the_adapter_trains(kind, name, trained):
    model = apply_adapters(_base(name), AdapterConfig(kind, rank=2))
    grads = {n for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(any(t in n for t in trained) for n in grads), sorted(grads)[:5]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert not any(any(t in n for t in trained) for n in frozen)
    assert set(model.trained_keys) >= grads
    assert set(checkpoint_state(model)) == set(model.trained_keys)


def test_rebuilt_class_layers_train_in_full_beside_lora():
    model = apply_adapters(_base(), AdapterConfig("lora", rank=2, full=("head.cls_pred",)))
    grads = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"head.cls_pred.weight", "head.cls_pred.bias"} <= grads
    assert not isinstance(model.head.cls_pred, LoRAConv2d)


@pytest.mark.parametrize("kind", ["lora", "adapter"])
def test_frozen_batchnorm_statistics_do_not_move_in_a_train_step(kind):
    model = apply_adapters(_base(), AdapterConfig(kind, rank=4))
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) and not m.training for m in bns)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(IMAGES, _targets())["loss"].backward()
    optimizer.step()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stats.items())
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()
               if p.requires_grad)


def test_head_mode_keeps_the_head_batchnorm_training():
    model = apply_adapters(_base(), AdapterConfig("head")).train()
    head_bns = [m for m in model.head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert head_bns and all(type(m) is torch.nn.BatchNorm2d and m.training for m in head_bns)
    assert any("running_mean" in k for k in model.trained_keys)


def test_prefix_attention_prepends_learned_keys_and_values():
    torch.manual_seed(0)
    attn = MultiheadAttention(16, 2).eval()
    wrapped = PrefixAttention.wrap(attn, 3)
    x = torch.randn(2, 5, 16)
    pad = torch.tensor([[False] * 5, [False, False, True, True, True]])
    out = wrapped(x, key_padding_mask=pad, causal=True)
    # the same attention by hand: the prefixes as three more tokens that every query sees
    q = wrapped._heads(attn.q_proj(x))
    k = torch.cat([wrapped._heads(wrapped.prefix_k.expand(2, 3, 16)), wrapped._heads(
        attn.k_proj(x))], 2)
    v = torch.cat([wrapped._heads(wrapped.prefix_v.expand(2, 3, 16)), wrapped._heads(
        attn.v_proj(x))], 2)
    blocked = torch.cat([torch.zeros(5, 3, dtype=torch.bool),
                         torch.ones(5, 5, dtype=torch.bool).triu(1)], 1)[None, None]
    blocked = blocked | torch.cat([torch.zeros(2, 3, dtype=torch.bool), pad], 1)[:, None, None]
    logits = (q @ k.transpose(-1, -2)) / 8 ** 0.5
    ref = torch.softmax(logits.masked_fill(blocked, float("-inf")), -1) @ v
    ref = attn.out_proj(ref.transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_prefix_needs_attention_layers():
    with pytest.raises(ValueError, match="no attention layers"):
        apply_adapters(_base(), AdapterConfig("prefix", rank=4))


def _save_base(path, model, class_names):
    meta = {"model": model.config.name, "model_config": asdict(model.config),
            "class_names": class_names, "imgsz": 64}
    return save_weights(path, model.state_dict(), meta)


def _adapted_checkpoint(tmp_path, kind="lora"):
    """A base checkpoint, and an adapted model trained one step on it, saved as training
    saves it; returns (adapted model, its path, base path)."""
    base_path = _save_base(tmp_path / "base.safetensors", _base(), ["a", "b", "c"])
    model, _ = model_from_weights(base_path)
    apply_adapters(model, AdapterConfig(kind, rank=4))
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(IMAGES, _targets())["loss"].backward()
    optimizer.step()
    meta = {"model": "fcos-n", "model_config": asdict(model.config), "imgsz": 64,
            "class_names": ["a", "b", "c"], "adapter": model.adapter_config.to_dict(),
            "base_weights": base_reference(base_path)}
    path = save_weights(tmp_path / "adapted.safetensors", checkpoint_state(model), meta)
    return model, path, base_path


@pytest.mark.parametrize("kind", ["lora", "adapter"])
def test_adapted_checkpoint_loads_onto_its_base_and_reproduces_the_model(tmp_path, kind):
    model, path, base_path = _adapted_checkpoint(tmp_path, kind)
    assert path.stat().st_size < 0.25 * base_path.stat().st_size  # only what was trained
    ref = _raw(model)
    loaded, _ = model_from_weights(path, merge=False)
    for r, out in zip(ref, _raw(loaded)):
        assert torch.equal(out, r)
    merged, _ = model_from_weights(path)
    assert not any(isinstance(m, LoRAConv2d) for m in merged.modules())
    for r, out in zip(ref, _raw(merged.fuse())):
        torch.testing.assert_close(out, r, rtol=1e-4, atol=1e-4)


def test_a_wrong_base_is_refused_by_hash(tmp_path):
    _, path, base_path = _adapted_checkpoint(tmp_path)
    other = _base()
    with torch.no_grad():
        other.head.reg_pred.bias.add_(1.0)
    _save_base(base_path, other, ["a", "b", "c"])  # the same file name, other weights
    with pytest.raises(ValueError, match="SHA-256") as e:
        model_from_weights(path)
    assert str(base_path.resolve()) in str(e.value) or str(base_path) in str(e.value)


def test_the_base_is_the_first_candidate_whose_hash_matches(tmp_path):
    """The recorded path now holds another file; the right base beside the moved adapted
    checkpoint is found by its hash, not refused because the first file that exists differs."""
    import shutil

    model, path, base_path = _adapted_checkpoint(tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(base_path, moved / base_path.name)
    path = shutil.move(path, moved / path.name)
    other = _base()
    with torch.no_grad():
        other.head.reg_pred.bias.add_(1.0)
    _save_base(base_path, other, ["a", "b", "c"])
    loaded, _ = model_from_weights(path, merge=False)
    for r, out in zip(_raw(model), _raw(loaded)):
        assert torch.equal(out, r)
    (moved / base_path.name).unlink()  # only the wrong one left: both hashes are named
    with pytest.raises(ValueError, match="no candidate base checkpoint") as e:
        model_from_weights(path)
    assert str(base_path.resolve()) in str(e.value) and file_sha256(base_path) in str(e.value)


def test_a_base_without_a_recorded_hash_is_refused(tmp_path):
    _, path, _ = _adapted_checkpoint(tmp_path)
    state, meta = load_weights(path)
    del meta["base_weights"]["sha256"]
    save_weights(path, state, meta)
    with pytest.raises(ValueError, match="records no SHA-256") as e:
        model_from_weights(path)
    assert str(path) in str(e.value)


def test_standalone_checkpoint_needs_no_base(tmp_path):
    from scaledet.models.checkpoint import read_meta, save_standalone

    model, path, base_path = _adapted_checkpoint(tmp_path)
    out = save_standalone(path, tmp_path / "standalone.safetensors")
    base_path.unlink()
    meta = read_meta(out)
    assert "adapter" not in meta and "base_weights" not in meta and meta["adapted_from"]
    loaded, _ = model_from_weights(out)
    for r, o in zip(_raw(model), _raw(loaded)):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,expected", [
    ("fcos-n", {"head.cls_pred"}),
    ("rtdetr-n", None),  # the class heads of every decoder layer, and the denoising labels
])
def test_new_classes_rebuild_exactly_the_class_layers(name, expected):
    base = _base(name, num_classes=8)
    torch.manual_seed(1)
    model = build(name, num_classes=3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, base.state_dict(), source="base.safetensors")
    assert set(report.rebuilt) == class_dependent_keys(model)
    if expected is not None:
        assert set(report.rebuilt_modules) == expected
    else:
        assert any("class" in m for m in report.rebuilt_modules)
    state = model.state_dict()
    for k in report.rebuilt:  # the fresh head's initialisation (prior-probability bias)
        assert torch.equal(state[k], fresh[k])
    for k in report.loaded:
        assert torch.equal(state[k], base.state_dict()[k])
    assert not report.skipped and len(report.loaded) + len(report.rebuilt) == len(state)
    assert f"rebuilt {len(report.rebuilt)}" in report.line()


def test_another_class_list_of_the_same_length_rebuilds_too():
    model = build("fcos-n", num_classes=3)
    report = load_pretrained(model, _base().state_dict(), source="b", same_classes=False)
    assert set(report.rebuilt) == {"head.cls_pred.weight", "head.cls_pred.bias"}
    report = load_pretrained(model, _base().state_dict(), source="b", same_classes=True)
    assert not report.rebuilt


@pytest.mark.parametrize("kind", ["lora", "adapter"])
def test_adapter_tensors_without_a_place_in_the_model_are_an_error(kind):
    """Skipping them would quietly fine-tune the bare base instead of the adapted model."""
    adapted = apply_adapters(_base(), AdapterConfig(kind, rank=4))
    with pytest.raises(ValueError, match=r"adapted\.safetensors: \d+ adapter tensors"):
        load_pretrained(build("fcos-n", num_classes=3), adapted.state_dict(),
                        source="adapted.safetensors")


def test_another_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match=r"base\.safetensors: the checkpoint's architecture "
                                         r"does not match the model \(fcos-s\)"):
        load_pretrained(build("fcos-s", num_classes=3), _base().state_dict(),
                        source="base.safetensors")


def test_onnx_export_of_a_merged_lora_model_matches_onnxruntime(tmp_path):
    import onnx
    import onnxruntime as ort

    from scaledet.inference.export import export_onnx

    model = apply_adapters(_base(), AdapterConfig("lora", rank=4))
    _perturb_lora(model)
    merge_lora(model)
    images = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        ref_boxes, ref_scores = model.eval().predict_raw(images)
        model.predict_raw(torch.rand(1, 3, 96, 96))
    model.fuse()
    path = export_onnx(model, tmp_path / "lora.onnx", imgsz=96, dynamic=True)
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(["boxes", "scores"], {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(boxes), ref_boxes, rtol=1e-4, atol=2e-4)
    torch.testing.assert_close(torch.from_numpy(scores), ref_scores, rtol=1e-4, atol=1e-4)
