"""Person crops for top-down pose: instances, the crop geometry of the samples, the mirror
with left/right joints swapped, joints outside the crop, determinism, the loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scaledet.data import load_dataset, make_synthetic_dataset
from scaledet.data.pose import (
    PoseAugment,
    PoseCropDataset,
    build_pose_loader,
    crop_person,
    keypoint_instances,
)
from scaledet.ops.warp import apply_matrix

SIZE = (64, 48)


@pytest.fixture(scope="module")
def kp_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pose") / "coco"
    return make_synthetic_dataset(root, n_train=8, n_val=3, seed=5, imgsz=160, task="keypoints")


@pytest.fixture(scope="module")
def kp_train(kp_root):
    return load_dataset(kp_root, "train")


def test_instances_are_labelled_non_crowd_people(kp_train):
    inst = keypoint_instances(kp_train)
    expected = [(r, j) for r, rec in enumerate(kp_train.records) for j in range(len(rec.boxes))
                if not rec.iscrowd[j] and (rec.keypoints[j, :, 2] > 0).any()]
    assert inst == expected and len(inst) > 8


def test_instances_refuse_a_box_only_dataset(tmp_path):
    root = make_synthetic_dataset(tmp_path / "boxes", n_train=2, n_val=1, seed=0, imgsz=64)
    with pytest.raises(ValueError, match="not a keypoint dataset"):
        keypoint_instances(load_dataset(root, "train"))


def test_eval_sample_is_the_crop_of_the_box_with_joints_moved(kp_train):
    ds = PoseCropDataset(kp_train, SIZE, train=False, cache=False)
    for index in range(5):
        item = ds[index]
        r, j = ds.instances[index]
        rec = kp_train.records[r]
        image = ds.image(r)
        crop, matrix = crop_person(image, rec.boxes[j], SIZE, 1.25)
        assert torch.equal(item["image"], torch.from_numpy(crop).permute(2, 0, 1))
        np.testing.assert_allclose(item["matrix"].numpy(), matrix)
        xy = apply_matrix(rec.keypoints[j, :, :2], matrix)
        labelled = item["keypoints"][:, 2] > 0
        np.testing.assert_allclose(item["keypoints"][:, :2].numpy()[labelled.numpy()],
                                   xy[labelled.numpy()], atol=1e-4)
        # labelled joints only lose their flag by leaving the crop
        lost = (rec.keypoints[j, :, 2] > 0) & ~labelled.numpy()
        h, w = SIZE
        if lost.any():
            p = xy[lost]
            assert ((p[:, 0] < -0.5) | (p[:, 0] > w - 0.5) | (p[:, 1] < -0.5)
                    | (p[:, 1] > h - 0.5)).all()
        assert item["image_id"] == rec.image_id and item["ann_id"] == rec.ann_ids[j]


def test_mirror_swaps_left_and_right_joints(kp_train):
    plain = PoseCropDataset(kp_train, SIZE, train=False, cache=False)
    mirrored = PoseCropDataset(kp_train, SIZE, train=True, cache=False,
                               augment=PoseAugment(scale_range=(1, 1), rotation=0, flip=1.0,
                                                   hsv=0))
    flip = kp_train.flip_index()
    names = kp_train.keypoint_names
    assert names[flip[names.index("left_wrist")]] == "right_wrist"
    w = SIZE[1]
    for index in range(4):
        a, b = plain[index], mirrored[(index, 0)]
        # the image is the mirror image of the plain crop (bilinear sampling is symmetric)
        diff = (b["image"].int() - a["image"].flip(-1).int()).abs()
        assert diff.max() <= 1
        # joint k of the mirrored crop is joint flip[k] of the plain one, mirrored
        pa, pb = a["keypoints"], b["keypoints"]
        np.testing.assert_allclose(pb[:, 0], w - 1 - pa[flip, 0], atol=1e-4)
        np.testing.assert_allclose(pb[:, 1], pa[flip, 1], atol=1e-4)
        assert torch.equal(pb[:, 2], pa[flip, 2])


def test_training_samples_are_deterministic_per_seed_and_epoch(kp_train):
    ds = PoseCropDataset(kp_train, SIZE, train=True, seed=3, cache=False)
    a, b, c = ds[(2, 0)], ds[(2, 0)], ds[(2, 1)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["keypoints"], b["keypoints"])
    assert not torch.equal(a["image"], c["image"])


def test_loader_batches_crops_and_targets(kp_train):
    loader = build_pose_loader(kp_train, SIZE, batch_size=4, train=True, workers=0)
    crops, targets = next(iter(loader))
    assert crops.shape == (4, 3, *SIZE) and crops.dtype == torch.float32
    assert 0.0 <= float(crops.min()) and float(crops.max()) <= 1.0
    assert all(t["keypoints"].shape == (17, 3) for t in targets)
    assert len(loader) == len(loader.dataset) // 4


def test_augment_settings_are_checked():
    with pytest.raises(ValueError, match="scale_range"):
        PoseAugment(scale_range=(1.5, 1.0))
    with pytest.raises(ValueError, match="flip"):
        PoseAugment(flip=2.0)
