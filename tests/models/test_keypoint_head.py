"""The FCOS keypoint branch (face-n): with ``num_keypoints=0`` nothing changes; offsets encode
and decode exactly; keypoints follow their boxes through NMS; targets pass through the
Detector and the loader; a tiny training learns boxes and landmarks."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from scaledet.evaluation.wider_face import landmark_nme
from scaledet.models import build, build_from_config
from scaledet.models.box_coders import PointOffsetCoder
from scaledet.models.factory import EXPERIMENTAL, PRESETS
from scaledet.models.heads.dense import PostProcess, postprocess
from scaledet.models.heads.fcos import FCOSHead
from scaledet.models.heads.fcos_keypoints import KeypointFCOSHead
from scaledet.ops import box_iou
from tests.models.test_training import _average_precision_50, train_tiny

# Measured before the keypoint branch existed (torch.manual_seed(0); build(name, num_classes=3)):
# number of state-dict entries, parameter + buffer elements, sum of |values| of the float
# entries, and the training loss on a fixed image and two boxes (torch.manual_seed(2)).
pytestmark = pytest.mark.filterwarnings("ignore:face-n is experimental",
                                        "ignore:centernet-n is experimental")

BEFORE = {
    "fcos-n": (285, 774098, 53131.111, 2.3871142864227295),
    "fcos-s": (469, 1381834, 86039.839, 2.3913207054138184),
    "fcos-m": (421, 3418394, 166094.62, 2.390573501586914),
    "yolo-n": (318, 802787, 57714.163, 11.057644844055176),
    "rtdetr-n": (426, 1323034, 84396.776, 37.288246154785156),
    "centernet-n": (214, 754114, 49831.711, 6.754354000091553),
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_presets_without_keypoints_are_unchanged(name):
    torch.manual_seed(0)
    model = build(name, num_classes=3)
    assert "kpt_pred" not in " ".join(model.state_dict())
    assert type(model.head) is not KeypointFCOSHead
    sd = model.state_dict()
    n, numel, total, loss = BEFORE[name]
    assert len(sd) == n and sum(v.numel() for v in sd.values()) == numel
    assert sum(float(v.double().abs().sum()) for v in sd.values()
               if v.is_floating_point()) == pytest.approx(total, abs=2e-3)
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    targets = [{"boxes": torch.tensor([[10.0, 12, 50, 60], [60, 20, 120, 90]]),
                "labels": torch.tensor([0, 2])}]
    torch.manual_seed(2)
    assert float(model(x, targets)["loss"].detach()) == pytest.approx(loss, rel=1e-5)
    model.eval()
    with torch.no_grad():
        assert all("keypoints" not in d for d in model(x))


def test_zero_keypoints_is_the_plain_head_and_old_configs_load():
    cfg = EXPERIMENTAL["face-n"].config(1)
    plain = dataclasses.replace(cfg, head=dataclasses.replace(cfg.head, num_keypoints=0))
    data = dataclasses.asdict(PRESETS["fcos-n"].config(2))
    for key in ("num_keypoints", "keypoint_loss_weight", "visibility_loss_weight"):
        del data["head"][key]  # a checkpoint written before these fields
    del data["head"]["assigner"]["anchor_scale"]
    assert type(build_from_config(data).head) is FCOSHead
    torch.manual_seed(0)
    a = build_from_config(plain).eval()
    torch.manual_seed(0)
    b = build_from_config(cfg).eval()
    assert type(a.head) is FCOSHead and isinstance(b.head, KeypointFCOSHead)
    extra = set(b.state_dict()) - set(a.state_dict())
    assert extra == {"head.kpt_pred.weight", "head.kpt_pred.bias"}
    b.load_state_dict(a.state_dict(), strict=False)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():  # the keypoint branch leaves boxes and scores alone
        for pa, pb in zip(a.predict_raw(x), b.predict_raw(x)):
            assert torch.equal(pa, pb)


def test_offsets_encode_and_decode_exactly():
    coder = PointOffsetCoder()
    g = torch.Generator().manual_seed(0)
    points = torch.rand(50, 2, generator=g) * 300
    strides = torch.tensor([8.0, 16.0, 32.0])[torch.randint(0, 3, (50,), generator=g)]
    keypoints = torch.rand(50, 5, 2, generator=g) * 300
    offsets = coder.encode(points, keypoints, strides)
    torch.testing.assert_close(coder.decode(points, offsets, strides), keypoints, rtol=0,
                               atol=1e-4)
    # a keypoint one stride right of and two strides above its location
    assert coder.encode(torch.tensor([[20.0, 20]]), torch.tensor([[[36.0, -12]]]),
                        torch.tensor([16.0])).tolist() == [[[1.0, -2.0]]]


def test_head_decodes_what_the_loss_trains_on():
    torch.manual_seed(0)
    model = build("face-n", num_classes=1).eval()
    head = model.head
    feats = model.features(torch.rand(1, 3, 64, 64))
    cls_maps, reg_maps, kpt_maps = head(feats)
    points, strides, _ = head.points(cls_maps)
    assert [m.shape[1] for m in kpt_maps] == [15, 15, 15]
    target = torch.rand(len(points), 5, 2) * 64
    offsets = head.kpt_coder.encode(points, target, strides)  # (P, 5, 2)
    flat = torch.cat([offsets.flatten(1), torch.zeros(len(points), 5)], 1)[None]  # (1, P, 15)
    decoded = head.decode_keypoints(points, strides, flat)
    torch.testing.assert_close(decoded[0, :, :, :2], target, rtol=0, atol=1e-4)
    assert torch.all(decoded[..., 2] == 0.5)  # sigmoid(0)


def test_keypoints_follow_their_boxes_through_nms():
    # Three candidates of one class: 0 and 1 overlap (1 is suppressed), 2 stands apart.
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]])
    scores = torch.tensor([[[0.6], [0.9], [0.7]]])
    keypoints = torch.arange(3.0)[None, :, None, None].expand(1, 3, 2, 3).clone()  # row i = i
    cfg = PostProcess(score_thresh=0.05, nms_iou=0.5)
    for method in ("hard", "diou", "soft-linear"):
        out = postprocess(boxes, scores, [3], dataclasses.replace(cfg, nms=method), keypoints)[0]
        assert out["keypoints"].shape == (len(out["boxes"]), 2, 3)
        for box, kp in zip(out["boxes"], out["keypoints"]):
            source = int((boxes[0] == box).all(1).nonzero())
            assert torch.all(kp == source)
    hard = postprocess(boxes, scores, [3], cfg, keypoints)[0]
    assert hard["keypoints"][:, 0, 0].tolist() == [1.0, 2.0]
    capped = postprocess(boxes, scores, [3], dataclasses.replace(cfg, max_det=1), keypoints)[0]
    assert capped["keypoints"][:, 0, 0].tolist() == [1.0]
    assert "keypoints" not in postprocess(boxes, scores, [3], cfg)[0]


def test_detector_checks_and_passes_keypoint_targets():
    torch.manual_seed(0)
    model = build("face-n", num_classes=1)
    x = torch.rand(2, 3, 64, 64)
    kp = torch.tensor([[[15.0, 20, 2], [35, 20, 2], [25, 27, 2], [18, 33, 1], [32, 33, 0]]])
    targets = [{"boxes": torch.tensor([[10.0, 10, 40, 40]]), "labels": torch.tensor([0]),
                "keypoints": kp},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model(x, targets)
    assert float(losses["loss_kpt"]) > 0 and float(losses["loss_kpt_vis"]) > 0
    losses["loss"].backward()
    assert model.head.kpt_pred.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="keypoints must be"):
        model(x, [{**targets[0], "keypoints": kp[0]}, targets[1]])
    model.eval()
    with torch.no_grad():
        model.score_thresh = 0.0
        out = model(x)
    assert out[0]["keypoints"].shape == (len(out[0]["boxes"]), 5, 3)
    assert model.predict_raw(x)[0].shape[-1] == 4  # export keeps boxes and scores only


def test_loader_keypoints_train_the_branch(tmp_path):
    """Generated person keypoints (K = 17) through the training loader's mosaic and flips."""
    from scaledet.data import load_dataset
    from scaledet.data.loader import build_dataloader
    from scaledet.data.synth_keypoints import make_keypoint_dataset

    make_keypoint_dataset(tmp_path / "kp", {"train": 4}, seed=0, imgsz=96, format="coco")
    ds = load_dataset(tmp_path / "kp", "train")
    images, targets = next(iter(build_dataloader(ds, imgsz=96, batch_size=4, train=True,
                                                 workers=0, seed=0)))
    assert all(t["keypoints"].shape[1:] == (17, 3) for t in targets)
    torch.manual_seed(0)
    model = build("face-n", num_classes=1, head={"num_keypoints": ds.num_keypoints})
    losses = model(images, targets)
    assert torch.isfinite(losses["loss"]) and float(losses["loss_kpt"]) > 0


# ---- a tiny training -------------------------------------------------------------------------

# The five landmarks (eyes, nose tip, mouth corners) as fractions of the face box.
LAYOUT = np.array([[0.3, 0.38], [0.7, 0.38], [0.5, 0.58], [0.35, 0.76], [0.65, 0.76]])


def _faces(n: int, size: int, seed: int):
    """1-3 bright ellipse "faces" per image on a dark background, 14-44 px wide, five dark
    dots at their landmarks; the dots' layout moves by up to 8 % of the face inside it (so the
    landmarks must be found, not guessed from the box)."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 90, 3)))
        draw = ImageDraw.Draw(im)
        boxes, points = [], []
        for _ in range(int(rng.integers(1, 4))):
            for _attempt in range(50):
                w = float(rng.uniform(size / 7, size / 2.2))
                h = w * float(rng.uniform(1.1, 1.3))
                x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
                b = [x, y, x + w, y + h]
                if all(b[2] <= o[0] or o[2] <= b[0] or b[3] <= o[1] or o[3] <= b[1]
                       for o in boxes):
                    break
            else:
                continue
            draw.ellipse(b, fill=tuple(int(v) for v in rng.integers(150, 256, 3)))
            kp = (LAYOUT + rng.uniform(-0.08, 0.08, 2)) * [w, h] + [x, y]
            r = max(1.0, w / 14)
            dark = tuple(int(v) for v in rng.integers(0, 60, 3))
            for px, py in kp:
                draw.ellipse([px - r, py - r, px + r, py + r], fill=dark)
            boxes.append(b)
            points.append(np.concatenate([kp, np.full((5, 1), 2.0)], 1))
        images.append(torch.tensor(np.array(im)).permute(2, 0, 1).float() / 255)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.zeros(len(boxes), dtype=torch.int64),
                        "keypoints": torch.tensor(np.array(points), dtype=torch.float32)})
    return torch.stack(images), targets


def _nme(dets, targets) -> float:
    """Inter-ocular NME of the ground-truth faces matched (IoU >= 0.5) by a detection."""
    pred, gt = [], []
    for d, t in zip(dets, targets):
        if not len(d["boxes"]):
            continue
        best, j = box_iou(d["boxes"], t["boxes"]).max(0)
        for g in (best >= 0.5).nonzero().flatten().tolist():
            pred.append(d["keypoints"][j[g], :, :2])
            gt.append(t["keypoints"][g])
    if not pred:
        return float("nan")
    gt = torch.stack(gt).numpy()
    return landmark_nme(torch.stack(pred).numpy(), gt, gt[..., 2] > 0)


def test_tiny_training_learns_boxes_and_landmarks():
    images, targets = _faces(48, 96, seed=0)
    val_images, val_targets = _faces(16, 96, seed=1)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build("face-n", num_classes=1)
    losses = train_tiny(model, images, targets, steps=120, lr=3e-3)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    model.eval()
    with torch.no_grad():
        dets = model(val_images)
    ap50 = _average_precision_50(dets, val_targets, 1)
    nme = _nme(dets, val_targets)
    print(f"face-n tiny training: AP50 {ap50:.3f}, NME {nme:.3f}")
    # Measured: AP50 ~0.95, NME ~0.22 (the mean layout placed in the true box: 0.16; the box
    # centre for every landmark: 0.65).
    assert ap50 > 0.7, ap50
    assert nme < 0.35, nme
