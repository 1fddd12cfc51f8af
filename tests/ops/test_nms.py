"""NMS family against the brute-force references in reference_nms.py."""

import importlib
import random

import pytest
import torch
import torchvision

from scaledet.ops import (
    batched_diou_nms,
    batched_nms,
    batched_soft_nms,
    diou_nms,
    nms,
    soft_nms,
)
from tests.ops import reference_nms as ref

nms_module = importlib.import_module("scaledet.ops.nms")  # the attribute scaledet.ops.nms is nms()

SEEDS = range(200)
# dyadic thresholds and half-pixel coordinates: every IoU is a ratio of small integers, so the
# float32 kernel and the float64 reference never disagree about "> threshold".
THRESHOLDS = (0.25, 0.375, 0.5, 0.625, 0.75)


def random_case(seed: int, max_n: int = 50):
    """Boxes on a half-pixel grid with duplicate boxes, zero-width boxes and score ties."""
    g = random.Random(seed)
    n = g.randint(0, max_n)
    boxes, scores = [], []
    for _ in range(n):
        if boxes and g.random() < 0.15:
            boxes.append(g.choice(boxes))  # duplicate box
        else:
            x1, y1 = g.randint(0, 60) / 2, g.randint(0, 60) / 2
            w, h = g.randint(0, 30) / 2, g.randint(1, 30) / 2
            boxes.append((x1, y1, x1 + w, y1 + h))
        scores.append(g.choice(scores) if scores and g.random() < 0.25 else g.random())
    classes = [g.randint(0, 2) for _ in range(n)]
    return boxes, scores, classes, g.choice(THRESHOLDS)


def as_tensors(boxes, scores, classes):
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(scores, dtype=torch.float32), torch.tensor(classes, dtype=torch.int64))


def float32_scores(scores):
    """Scores as the float32 values the ops see, for the reference."""
    return torch.tensor(scores, dtype=torch.float32).tolist()


def test_nms_matches_reference():
    for seed in SEEDS:
        boxes, scores, classes, thr = random_case(seed)
        b, s, _ = as_tensors(boxes, scores, classes)
        expected = ref.greedy_nms(boxes, float32_scores(scores), thr)
        assert nms(b, s, thr).tolist() == expected, f"seed {seed}"


@pytest.mark.parametrize("path", ["offset", "per_class"])
def test_batched_nms_matches_reference(path, monkeypatch):
    if path == "per_class":
        monkeypatch.setitem(nms_module._OFFSET_TRICK_MAX, "cpu", 0)
    for seed in SEEDS:
        boxes, scores, classes, thr = random_case(seed)
        b, s, c = as_tensors(boxes, scores, classes)
        expected = ref.greedy_nms(boxes, float32_scores(scores), thr, classes)
        assert batched_nms(b, s, c, thr).tolist() == expected, f"seed {seed}"


@pytest.mark.parametrize("beta", [1.0, 0.6])
def test_diou_nms_matches_reference(beta):
    for seed in range(100):
        boxes, scores, classes, thr = random_case(seed)
        b, s, c = as_tensors(boxes, scores, classes)
        s32 = float32_scores(scores)
        assert diou_nms(b, s, thr, beta).tolist() == ref.diou_nms(boxes, s32, thr, beta), seed
        expected = ref.diou_nms(boxes, s32, thr, beta, classes)
        assert batched_diou_nms(b, s, c, thr, beta).tolist() == expected, f"seed {seed}"


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_matches_reference(method):
    for seed in SEEDS:
        boxes, scores, classes, thr = random_case(seed)
        b, s, c = as_tensors(boxes, scores, classes)
        s32 = float32_scores(scores)
        kwargs = dict(method=method, sigma=0.5, iou_threshold=thr, score_threshold=0.01)
        for cls in (None, classes):
            keep_ref, scores_ref = ref.soft_nms(boxes, s32, classes=cls, **kwargs)
            if cls is None:
                keep, decayed = soft_nms(b, s.double(), **kwargs)
            else:
                keep, decayed = batched_soft_nms(b, s.double(), c, **kwargs)
            assert keep.tolist() == keep_ref, f"seed {seed}, classes {cls is not None}"
            assert decayed.dtype == torch.float64
            torch.testing.assert_close(decayed, torch.tensor(scores_ref, dtype=torch.float64),
                                       rtol=0, atol=1e-6)


def test_tie_rule_lower_index_first():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30.]])
    scores = torch.tensor([0.5, 0.9, 0.9, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 1, 0]), 0.5).tolist() == [1, 2, 0, 3]
    assert diou_nms(boxes, scores, 0.5).tolist() == [1, 2]
    same = torch.full((4,), 0.7)
    assert nms(boxes, same, 0.5).tolist() == [0, 2]
    keep, decayed = soft_nms(boxes, same, method="linear")  # duplicates decay to 0: dropped
    assert keep.tolist() == [0, 2] and decayed.tolist() == pytest.approx([0.7, 0.7])


def test_many_ties_are_deterministic():
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 50, (3000, 2), generator=g).float()
    boxes = torch.cat([xy, xy + 20], 1)
    scores = torch.randint(0, 3, (3000,), generator=g).float()
    classes = torch.randint(0, 4, (3000,), generator=g)
    keep = nms(boxes, scores, 0.5)
    assert torch.equal(keep, nms(boxes, scores, 0.5))
    ranked = sorted(range(3000), key=lambda i: (-scores[i].item(), i))
    position = {i: p for p, i in enumerate(ranked)}
    assert [position[i] for i in keep.tolist()] == sorted(position[i] for i in keep.tolist())
    kept = batched_nms(boxes, scores, classes, 0.5)  # large input: per-class path
    assert [position[i] for i in kept.tolist()] == sorted(position[i] for i in kept.tolist())


def test_soft_nms_decays_as_in_the_paper():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, decayed = soft_nms(boxes, scores, method="linear", iou_threshold=0.3)
    assert keep.tolist() == [0, 2, 1]  # IoU(0, 1) = 0.5 -> 0.8 * (1 - 0.5) = 0.4
    torch.testing.assert_close(decayed, torch.tensor([0.9, 0.7, 0.4]))
    keep, decayed = soft_nms(boxes, scores, method="gaussian", sigma=0.5)
    torch.testing.assert_close(decayed, torch.tensor([0.9, 0.7, 0.8 * 0.6065306597]))


def test_nms_equals_torchvision_without_ties():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(500, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 5 + torch.rand(500, 2, generator=g) * 60], 1)
    scores = torch.randperm(500, generator=g).float() / 500
    classes = torch.randint(0, 5, (500,), generator=g)
    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
    assert torch.equal(batched_nms(boxes, scores, classes, 0.5),
                       torchvision.ops.batched_nms(boxes, scores, classes, 0.5))
    # DIoU-NMS with a penalty that is always 0 (beta huge) is plain NMS
    assert torch.equal(diou_nms(boxes, scores, 0.5, beta=1e9), nms(boxes, scores, 0.5))


def test_batched_nms_negative_coordinates():
    # torchvision's offset (max + 1) lets classes overlap when coordinates are negative
    boxes = torch.tensor([[-100, -100, 0, 0], [-99, -99, 1, 1.]])
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)
    assert keep.tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    boxes, scores, classes, thr = random_case(3)  # half-pixel grid: exact in every dtype
    b, s, c = as_tensors(boxes, scores, classes)
    bd = b.to(dtype)
    assert nms(bd, s, thr).tolist() == nms(b, s, thr).tolist()
    assert batched_nms(bd, s, c, thr).tolist() == batched_nms(b, s, c, thr).tolist()
    assert diou_nms(bd, s, thr).tolist() == diou_nms(b, s, thr).tolist()
    assert soft_nms(bd, s)[0].tolist() == soft_nms(b, s)[0].tolist()
    for out in (nms(bd, s.to(dtype), thr), batched_nms(bd, s.to(dtype), c, thr),
                diou_nms(bd, s.to(dtype), thr), soft_nms(bd, s.to(dtype))[0]):
        assert out.dtype == torch.int64
    assert soft_nms(bd, s.to(dtype))[1].dtype == dtype


def test_empty_inputs():
    boxes, scores, classes = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    for out in (nms(boxes, scores, 0.5), batched_nms(boxes, scores, classes, 0.5),
                diou_nms(boxes, scores, 0.5), batched_diou_nms(boxes, scores, classes, 0.5)):
        assert out.shape == (0,) and out.dtype == torch.int64
    keep, decayed = soft_nms(boxes, scores)
    assert keep.shape == decayed.shape == (0,)
    keep, decayed = batched_soft_nms(boxes, scores, classes)
    assert keep.shape == decayed.shape == (0,)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(boxes=torch.zeros(3, 5)), r"boxes must have shape \(\.\.\., 4\)"),
    (dict(boxes=torch.zeros(2, 3, 4)), r"boxes must have shape \(N, 4\)"),
    (dict(boxes=[[0, 0, 1, 1]] * 3), "boxes must be a torch.Tensor"),
    (dict(scores=torch.zeros(4)), r"scores must be a \(3,\) tensor"),
    (dict(scores=torch.zeros(3, dtype=torch.int64)), "scores must be floating point"),
    (dict(scores=torch.tensor([0.5, float("nan"), 0.1])), "scores contains NaN or inf"),
    (dict(boxes=torch.tensor([[0, 0, 1, 1], [0, 0, float("inf"), 1], [0, 0, 1, 1.]])),
     "boxes contains 1 NaN or inf"),
    (dict(idxs=torch.zeros(2, dtype=torch.int64)), r"idxs must be a \(3,\) tensor"),
    (dict(idxs=torch.zeros(3)), "idxs must be an integer tensor"),
])
def test_bad_input(kwargs, message):
    args = dict(boxes=torch.tensor([[0, 0, 1, 1.]] * 3), scores=torch.tensor([0.9, 0.5, 0.1]),
                idxs=torch.zeros(3, dtype=torch.int64))
    args.update(kwargs)
    b, s, c = args["boxes"], args["scores"], args["idxs"]
    with pytest.raises(ValueError, match=message):
        batched_nms(b, s, c, 0.5)
    with pytest.raises(ValueError, match=message):
        batched_soft_nms(b, s, c)
    with pytest.raises(ValueError, match=message):
        batched_diou_nms(b, s, c, 0.5)
    if "idxs" not in kwargs:
        for fn in (nms, diou_nms):
            with pytest.raises(ValueError, match=message):
                fn(b, s, 0.5)
        with pytest.raises(ValueError, match=message):
            soft_nms(b, s)


def test_bad_soft_nms_arguments():
    b, s = torch.tensor([[0, 0, 1, 1.]]), torch.tensor([0.5])
    with pytest.raises(ValueError, match="method must be"):
        soft_nms(b, s, method="hard")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        soft_nms(b, s, sigma=0)
    with pytest.raises(ValueError, match="score_threshold must be > 0"):
        soft_nms(b, s, score_threshold=0)
    with pytest.raises(ValueError, match="scores must be >= 0"):
        soft_nms(b, -s)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for seed in range(20):
        boxes, scores, classes, thr = random_case(seed)
        b, s, c = as_tensors(boxes, scores, classes)
        bc, sc, cc = b.cuda(), s.cuda(), c.cuda()
        assert nms(bc, sc, thr).cpu().tolist() == nms(b, s, thr).tolist()
        assert batched_nms(bc, sc, cc, thr).cpu().tolist() == batched_nms(b, s, c, thr).tolist()
        assert diou_nms(bc, sc, thr).cpu().tolist() == diou_nms(b, s, thr).tolist()
        keep, decayed = batched_soft_nms(bc, sc, cc)
        keep_cpu, decayed_cpu = batched_soft_nms(b, s, c)
        assert keep.cpu().tolist() == keep_cpu.tolist()
        torch.testing.assert_close(decayed.cpu(), decayed_cpu)


def test_suppression_is_strictly_greater_than_threshold():
    # same centre, IoU exactly 8 / 16: criterion == threshold keeps both boxes
    boxes = torch.tensor([[0.0, 0, 4, 4], [0, 1, 4, 3]])
    scores = torch.tensor([0.9, 0.8])
    classes = torch.zeros(2, dtype=torch.int64)
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, classes, 0.5).tolist() == [0, 1]
    assert diou_nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert diou_nms(boxes, scores, 0.499).tolist() == [0]
    assert soft_nms(boxes, scores, "linear", iou_threshold=0.5)[1].tolist() == pytest.approx(
        [0.9, 0.8])
    assert soft_nms(boxes, scores, "linear", iou_threshold=0.499)[1].tolist() == pytest.approx(
        [0.9, 0.4])
