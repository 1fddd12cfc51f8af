"""Keypoint data: COCO and YOLO pose read / write / convert, checks, the synthetic keypoint
dataset, transforms that carry points (hypothesis), the left/right flip, the loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scaledet.cli import main
from scaledet.data import convert_dataset, load_dataset, make_synthetic_dataset, read_coco
from scaledet.data.check import check_dataset
from scaledet.data.coco import to_coco_dict
from scaledet.data.loader import build_dataloader
from scaledet.data.records import flip_index_from_names
from scaledet.data.synth_keypoints import KEYPOINT_NAMES, SKELETON
from scaledet.data.transforms import (
    AugmentConfig,
    Sample,
    crop,
    hflip,
    letterbox,
    mosaic,
    resize,
    resized_crop,
    scale_jitter,
    train_transform,
)
from tests.data.conftest import coco_dict, write_image

NAMES3 = ["nose", "left_hand", "right_hand"]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def synth_kp(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kp") / "coco"
    return make_synthetic_dataset(root, n_train=6, n_val=2, seed=3, imgsz=128, task="keypoints")


def _kp_coco(tmp_path: Path, annotations: list[dict], k_names=NAMES3) -> Path:
    root = tmp_path / "kp"
    write_image(root / "images" / "val" / "a.jpg", 64, 48)
    images = [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}]
    cats = [{"id": 1, "name": "person", "keypoints": k_names, "skeleton": [[1, 2], [1, 3]]}]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val.json").write_text(
        json.dumps(coco_dict(images, annotations, cats)))
    return root


def _ann(i: int, kpts: list, num=None, bbox=(10, 10, 30, 20)) -> dict:
    ann = {"id": i, "image_id": 1, "category_id": 1, "bbox": list(bbox), "iscrowd": 0,
           "keypoints": kpts}
    ann["num_keypoints"] = sum(v > 0 for v in kpts[2::3]) if num is None else num
    return ann


# ---- formats ------------------------------------------------------------------------------


def test_coco_keypoints_read_and_write_back(tmp_path):
    root = _kp_coco(tmp_path, [_ann(1, [20, 15, 2, 12.5, 25, 1, 0, 0, 0]),
                               {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}])
    ds = read_coco(root / "annotations" / "instances_val.json")
    assert ds.num_keypoints == 3 and ds.keypoint_names == NAMES3
    assert ds.skeleton == [(1, 2), (1, 3)] and ds.flip_index() == [0, 2, 1]
    kp = ds.records[0].keypoints
    assert kp.shape == (2, 3, 3) and kp.dtype == np.float32
    np.testing.assert_array_equal(kp[0], [[20, 15, 2], [12.5, 25, 1], [0, 0, 0]])
    np.testing.assert_array_equal(kp[1], np.zeros((3, 3)))  # no keypoints: K unlabelled
    out = to_coco_dict(ds)
    assert out["categories"][0]["keypoints"] == NAMES3
    assert out["categories"][0]["skeleton"] == [[1, 2], [1, 3]]
    assert out["annotations"][0]["keypoints"] == [20.0, 15.0, 2, 12.5, 25.0, 1, 0.0, 0.0, 0]
    assert out["annotations"][0]["num_keypoints"] == 2


def test_box_only_datasets_have_no_keypoints(coco_folder):
    ds = load_dataset(coco_folder, "val")
    assert ds.num_keypoints == 0 and all(r.keypoints is None for r in ds.records)
    assert "keypoints" not in json.dumps(to_coco_dict(ds))


def test_coco_yolo_coco_round_trip(synth_kp, tmp_path):
    convert_dataset(synth_kp, tmp_path / "y", "yolo")
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    assert data["kpt_shape"] == [17, 3]
    assert data["flip_idx"] == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    convert_dataset(tmp_path / "y", tmp_path / "c", "coco")
    for split in ("train", "val"):
        a, y, b = (load_dataset(p, split) for p in (synth_kp, tmp_path / "y", tmp_path / "c"))
        assert b.keypoint_names == a.keypoint_names == list(KEYPOINT_NAMES)
        assert b.skeleton == a.skeleton == list(SKELETON)
        assert sum(len(r) for r in a.records) > 0
        for ra, ry, rb in zip(a.records, y.records, b.records):
            for r in (ry, rb):
                np.testing.assert_array_equal(r.keypoints[..., 2], ra.keypoints[..., 2])
                np.testing.assert_allclose(r.keypoints[..., :2], ra.keypoints[..., :2], atol=1e-4)
                np.testing.assert_allclose(r.boxes, ra.boxes, atol=1e-4)


def test_yolo_pose_two_dims_and_strict_errors(tmp_path):
    root = tmp_path / "y"
    write_image(root / "images" / "train" / "a.jpg", 100, 50)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.4 0.4 0.5 0.6 0 0\n")
    yaml_path = root / "data.yaml"
    yaml_path.write_text("train: images/train\nnames: [p]\nkpt_shape: [2, 2]\n")
    kp = load_dataset(yaml_path).records[0].keypoints
    np.testing.assert_allclose(kp[0], [[50, 30, 2], [0, 0, 0]])
    yaml_path.write_text("train: images/train\nnames: [p]\nkpt_shape: [2, 3]\n")
    with pytest.raises(ValueError, match=r"labels/train/a.txt:1: expected 5 \+ 2 x 3 = 11"):
        load_dataset(yaml_path)
    yaml_path.write_text("train: images/train\nnames: [p]\nkpt_shape: [2, 4]\n")
    with pytest.raises(ValueError, match="data.yaml: kpt_shape must be"):
        load_dataset(yaml_path)
    yaml_path.write_text("train: images/train\nnames: [p]\nkpt_shape: [2, 2]\nflip_idx: [0]\n")
    with pytest.raises(ValueError, match="data.yaml: flip_idx must be a list of K = 2"):
        load_dataset(yaml_path)


def test_flip_index_from_names():
    idx = flip_index_from_names(list(KEYPOINT_NAMES))
    assert idx == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    assert flip_index_from_names(["head", "L_foot", "r_foot", "tail_left"]) == [0, 2, 1, 3]


# ---- checks -------------------------------------------------------------------------------


def _examples(report: dict, split: str, kind: str) -> list[str]:
    return report["splits"][split]["issues"].get(kind, {}).get("examples", [])


def test_check_names_coco_keypoint_problems(tmp_path):
    root = _kp_coco(tmp_path, [
        _ann(1, [20, 15, 2, 12, 25, 1]),                   # 2 points, K = 3
        _ann(2, [20, 15, 3, 12, 25, 1, 0, 0, 0]),          # flag 3
        _ann(3, [20, 15, 2, 12, 25, 1, 0, 0, 0], num=3),   # num_keypoints says 3, flags 2
        _ann(4, [70, 15, 2, 12, 25, 1, 0, 0, 0]),          # outside the 64x48 image
        _ann(5, [20, 15, 2, 5, 25, 1, 0, 0, 0]),           # outside its box (x < 10)
        _ann(6, [20, 15, 2, 12, 25, 1, 0, 0, 0]),          # fine
    ])
    report = check_dataset(root)
    expect = {"keypoint_count": ("annotation id 1", "expected 3 x K = 9"),
              "keypoint_visibility": ("annotation id 2", "visibility flag 3"),
              "num_keypoints_mismatch": ("annotation id 3", "num_keypoints is 3 but 2"),
              "keypoint_outside_image": ("annotation id 4", "keypoint 0 (nose) at (70.0, 15.0)"),
              "keypoint_outside_box": ("annotation id 5", "keypoint 1 (left_hand)")}
    for kind, words in expect.items():
        (example,) = _examples(report, "val", kind)
        assert "instances_val.json" in example and all(w in example for w in words), example
    assert report["splits"]["val"]["issues"]["keypoint_outside_box"]["severity"] == "warning"
    assert report["num_errors"] == 4 and report["splits"]["val"]["keypoints"]["K"] == 3
    with pytest.raises(ValueError, match="instances_val.json: annotation id 1: 6 keypoint values"):
        load_dataset(root, "val")


def test_check_names_yolo_pose_problems(tmp_path):
    root = tmp_path / "y"
    write_image(root / "images" / "val" / "a.jpg", 64, 64)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "a.txt").write_text(
        "0 0.5 0.5 0.5 0.5 0.5 0.5 2 0.4 0.4 1\n"        # fine
        "0 0.5 0.5 0.5 0.5 0.5 0.5 2\n"                  # one point, kpt_shape says 2
        "0 0.5 0.5 0.5 0.5 0.5 0.5 2 0.4 0.4 7\n"        # flag 7
        "0 0.5 0.5 0.2 0.2 0.5 0.5 2 0.9 0.9 2\n")       # a point outside its box
    (root / "data.yaml").write_text("val: images/val\nnames: [p]\nkpt_shape: [2, 3]\n")
    report = check_dataset(root)
    (count,) = _examples(report, "val", "keypoint_count")
    assert count.startswith("labels/val/a.txt:2: ") and "kpt_shape [2, 3]" in count
    (flag,) = _examples(report, "val", "keypoint_visibility")
    assert flag.startswith("labels/val/a.txt:3: ") and "flag 7" in flag
    (box,) = _examples(report, "val", "keypoint_outside_box")
    assert box.startswith("labels/val/a.txt:4: ") and "keypoint 1 at (57.6, 57.6)" in box
    assert report["num_errors"] == 2


# ---- the synthetic keypoint dataset ---------------------------------------------------------


def test_synth_keypoints_deterministic_and_valid(synth_kp, tmp_path):
    again = make_synthetic_dataset(tmp_path / "b", n_train=6, n_val=2, seed=3, imgsz=128,
                                   task="keypoints")
    assert files(again) == files(synth_kp)
    data = json.loads((synth_kp / "annotations" / "instances_train.json").read_text())
    (cat,) = data["categories"]
    assert cat["name"] == "person" and cat["keypoints"] == list(KEYPOINT_NAMES)
    assert cat["skeleton"] == [list(p) for p in SKELETON]
    assert check_dataset(synth_kp)["num_errors"] == 0
    ds = load_dataset(synth_kp, "train")
    kp = np.concatenate([r.keypoints for r in ds.records])
    assert kp.shape[1:] == (17, 3) and len(kp) >= 6
    assert set(np.unique(kp[..., 2])) <= {0, 1, 2} and (kp[..., 2] == 2).mean() > 0.5
    np.testing.assert_array_equal(kp[kp[..., 2] == 0][:, :2], 0)  # COCO's unlabelled points


def test_synth_keypoints_flags_and_sizes_over_many_images():
    from scaledet.data.synth_keypoints import synth_keypoint_image

    flags, sizes = [], []
    for i in range(12):
        image, boxes, kp, areas = synth_keypoint_image(np.random.default_rng(i), 160)
        assert image.shape == (160, 160, 3) and len(boxes) == len(kp) == len(areas)
        lab = kp[..., 2] > 0
        assert ((kp[..., 0] >= 0) & (kp[..., 0] < 160) | ~lab).all()
        flags.append(kp[..., 2].ravel())
        sizes.append(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    flags, sizes = np.concatenate(flags), np.concatenate(sizes)
    assert {0, 1, 2} <= set(np.unique(flags))   # occluded and dropped points occur
    assert sizes.min() < 24 and sizes.max() > 80  # tiny to large


def test_cli_synth_keypoints_yolo(tmp_path):
    assert main(["data", "synth", str(tmp_path / "y"), "--train", "2", "--val", "1",
                 "--imgsz", "96", "--task", "keypoints", "--format", "yolo"]) == 0
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    assert data["kpt_shape"] == [17, 3] and data["keypoint_names"] == list(KEYPOINT_NAMES)
    ds = load_dataset(tmp_path / "y", "train")
    assert ds.flip_index() == flip_index_from_names(list(KEYPOINT_NAMES))
    assert check_dataset(tmp_path / "y")["num_errors"] == 0


# ---- transforms ---------------------------------------------------------------------------

FLIP3 = [0, 2, 1]


@st.composite
def samples(draw, n_max: int = 4):
    """An image with up to ``n_max`` boxes, 3 points each: inside, on the edge or outside
    the box (inside the image), flags 0 / 1 / 2; labels ``0..N-1`` identify the objects after a transform."""
    h, w = draw(st.integers(16, 80)), draw(st.integers(16, 80))
    n = draw(st.integers(0, n_max))
    boxes, points = [], []
    for _ in range(n):
        x1, y1 = draw(st.floats(0, w - 4)), draw(st.floats(0, h - 4))
        x2, y2 = draw(st.floats(x1 + 2, w)), draw(st.floats(y1 + 2, h))
        boxes.append([x1, y1, x2, y2])
        obj = []
        for _ in range(3):
            u, v = draw(st.sampled_from([0.0, 1.0, 0.3, 0.7, -0.2, 1.3])), draw(st.floats(0, 1))
            x = min(max(x1 + u * (x2 - x1), 0.0), w)  # outside the box, never the image
            obj.append([x, y1 + v * (y2 - y1), draw(st.sampled_from([0, 1, 2]))])
        points.append(obj)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    return Sample(image, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  torch.arange(n), torch.tensor(points, dtype=torch.float32).reshape(-1, 3, 3))


def _inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    x, y = points[..., 0], points[..., 1]
    b = boxes[:, None, :]
    return (x >= b[..., 0]) & (x <= b[..., 2]) & (y >= b[..., 1]) & (y <= b[..., 3])


def _check_carried(before: Sample, after: Sample, flipped: bool = False) -> None:
    """Each visible point that was inside its box is inside its transformed box (or hidden);
    every point outside the image is hidden; the points travelled with their boxes."""
    assert after.keypoints.shape == (len(after.boxes), 3, 3)
    started = _inside(before.keypoints, before.boxes) & (before.keypoints[..., 2] > 0)
    index = after.labels
    was = started[index]
    if flipped:
        was = was[:, FLIP3]
    vis = after.keypoints[..., 2] > 0
    assert (_inside(after.keypoints, after.boxes) | ~vis | ~was).all()
    x, y = after.keypoints[..., 0], after.keypoints[..., 1]
    # resize scales by the exact factor, the image side is rounded: half a pixel of slack
    off = (x < -0.5) | (y < -0.5) | (x > after.width + 0.5) | (y > after.height + 0.5)
    assert not (vis & off).any()
    # Flags only ever drop to 0.
    flags_before = before.keypoints[index][..., 2]
    if flipped:
        flags_before = flags_before[:, FLIP3]
    assert ((after.keypoints[..., 2] == flags_before) | (after.keypoints[..., 2] == 0)).all()


@settings(max_examples=40, deadline=None)
@given(samples(), st.sampled_from(["resize", "crop", "resized_crop", "letterbox", "hflip",
                                   "jitter", "train"]),
       st.integers(0, 2**16))
def test_transforms_keep_points_in_their_boxes(sample, kind, seed):
    rng = np.random.default_rng(seed)
    flipped = False
    if kind == "resize":
        out = resize(sample, rng.uniform(0.3, 2.5))
    elif kind == "crop":
        x0, y0 = (int(v) for v in rng.integers(-10, 20, 2))
        out = crop(sample, (x0, y0, x0 + int(rng.integers(8, 60)), y0 + int(rng.integers(8, 60))))
    elif kind == "resized_crop":
        x0, y0 = (int(v) for v in rng.integers(-10, 20, 2))
        out = resized_crop(sample, rng.uniform(0.5, 2.0), (x0, y0, x0 + 40, y0 + 30))
    elif kind == "letterbox":
        out = letterbox(sample, 64)[0]
    elif kind == "hflip":
        out, flipped = hflip(sample, FLIP3), True
    elif kind == "jitter":
        out = scale_jitter(sample, 64, rng, AugmentConfig())
    else:  # the whole training pipeline; whether it flipped shows in the points
        cfg = AugmentConfig(hflip=1.0)
        out, flipped = train_transform([sample], 64, rng, cfg, False, FLIP3), True
    _check_carried(sample, out, flipped)


@settings(max_examples=15, deadline=None)
@given(st.lists(samples(n_max=3), min_size=4, max_size=4), st.integers(0, 2**16))
def test_mosaic_keeps_points_in_their_boxes(parts, seed):
    tagged = [Sample(s.image, s.boxes, s.labels + 10 * k, s.keypoints)
              for k, s in enumerate(parts)]
    out = mosaic(tagged, 96, np.random.default_rng(seed), (0.5, 1.5))
    whole = Sample(torch.zeros(3, 1, 1, dtype=torch.uint8),
                   torch.cat([s.boxes for s in tagged] + [torch.zeros(0, 4)]),
                   torch.cat([s.labels for s in tagged]),
                   torch.cat([s.keypoints for s in tagged]))
    index = {int(t): i for i, t in enumerate(whole.labels)}
    after = Sample(out.image, out.boxes, torch.tensor([index[int(t)] for t in out.labels],
                                                      dtype=torch.long), out.keypoints)
    _check_carried(whole, after)


@settings(max_examples=30, deadline=None)
@given(samples())
def test_flip_twice_is_the_identity_and_swaps_left_right(sample):
    once = hflip(sample, FLIP3)
    np.testing.assert_allclose(once.keypoints[:, 1, 0], sample.width - sample.keypoints[:, 2, 0])
    np.testing.assert_array_equal(once.keypoints[:, 1, 2], sample.keypoints[:, 2, 2])
    np.testing.assert_array_equal(once.keypoints[:, 0, 2], sample.keypoints[:, 0, 2])
    twice = hflip(once, FLIP3)
    torch.testing.assert_close(twice.keypoints, sample.keypoints, atol=1e-4, rtol=0)
    torch.testing.assert_close(twice.boxes, sample.boxes, atol=1e-4, rtol=0)
    assert torch.equal(twice.image, sample.image)


# ---- loader -------------------------------------------------------------------------------


def test_loader_carries_keypoints(synth_kp):
    ds = load_dataset(synth_kp, "train")
    evl = build_dataloader(ds, imgsz=64, batch_size=3, train=False, workers=0, cache=False)
    _, targets = next(iter(evl))
    for t, record in zip(targets, ds.records):
        kp = t["keypoints"]
        assert kp.shape == (len(t["boxes"]), 17, 3)
        np.testing.assert_allclose(kp[..., :2] / t["scale"], record.keypoints[..., :2],
                                   atol=1e-3)
        np.testing.assert_array_equal(kp[..., 2], record.keypoints[..., 2])
    for augment in (AugmentConfig(hflip=0.5, mosaic=0.5), AugmentConfig(chips=1.0)):
        train = build_dataloader(ds, imgsz=64, batch_size=3, train=True, workers=0,
                                 cache=False, augment=augment)
        for _, targets in train:
            for t in targets:
                kp = t["keypoints"]
                assert kp.shape == (len(t["boxes"]), 17, 3)
                vis = kp[..., 2] > 0
                assert ((kp[..., :2] >= 0).all(-1) & (kp[..., :2] <= 64).all(-1) | ~vis).all()
