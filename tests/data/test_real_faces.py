"""Real LFW faces: the test scenes are deterministic, hold only the held-out faces (checked on
the pixels), square boxes of the promised sizes inside the image, and load, check and score as a
COCO face set; mixing into the synthetic set uses only the training faces, never touches the
test split and, at 0, changes nothing."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from scaledet.cli import main
from scaledet.data import load_dataset
from scaledet.data import synth_faces as sf
from scaledet.data.real_faces import (
    GAP,
    LFW_NON_FACES,
    LFW_TEST,
    LFW_TRAIN,
    SIZE_BUCKETS,
    lfw_subset,
    make_real_face_dataset,
    real_face_scene,
    skin_tone,
    tint_patch,
)
from scaledet.data.wider_face import image_key
from scaledet.evaluation import evaluate_coco
from scaledet.evaluation.wider_face import evaluate_wider


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _best_lfw_match(image: np.ndarray, box) -> tuple[int, float]:
    """The LFW item (0-199) whose grey, resized to the box, correlates best with the image's
    grey inside the box: ``(index, correlation)``."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    region = image[y1:y2, x1:x2].astype(np.float64).mean(-1).ravel()
    best, score = -1, -2.0
    for k, grey in enumerate(lfw_subset()):
        ref = tint_patch(grey, x2 - x1, (255, 255, 255)).astype(np.float64)[..., 0].ravel()
        c = np.corrcoef(region, ref)[0, 1] if ref.std() > 0 else -1.0
        if c > score:
            best, score = k, c
    return best, score


def test_lfw_split_is_fixed_and_disjoint():
    lfw = lfw_subset()
    assert lfw.shape == (200, 25, 25) and lfw.min() >= 0 and lfw.max() <= 1
    assert set(LFW_TRAIN).isdisjoint(LFW_TEST)
    assert sorted(LFW_TRAIN + LFW_TEST) == list(range(100))
    assert LFW_NON_FACES == tuple(range(100, 200))


def test_tint_keeps_the_grey_pattern_in_skin_colours():
    skin = skin_tone(np.random.default_rng(0))
    patch = tint_patch(lfw_subset()[70], 50, skin)
    assert patch.shape == (50, 50, 3) and patch.dtype == np.uint8
    # a mid-grey pixel becomes about the skin colour; the channels keep the skin's order
    np.testing.assert_allclose(tint_patch(np.full((25, 25), 0.5), 4, skin)[0, 0], skin, atol=0.5)
    assert (np.argsort(patch.reshape(-1, 3).mean(0)) == np.argsort(skin)).all()


def test_scenes_are_deterministic():
    a = real_face_scene(np.random.default_rng((0, 2, 5, 7)))
    b = real_face_scene(np.random.default_rng((0, 2, 5, 7)))
    c = real_face_scene(np.random.default_rng((0, 2, 6, 7)))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.distractors, b.distractors)
    assert not np.array_equal(a.image, c.image)


def test_boxes_inside_of_the_promised_sizes_and_apart():
    sides, n_scenes = [], 30
    for i in range(n_scenes):
        s = real_face_scene(np.random.default_rng((1, i)), 256)
        assert s.image.shape == (256, 256, 3) and len(s.boxes) >= 1 and len(s.distractors) >= 1
        assert set(s.faces.tolist()) <= set(LFW_TEST)
        assert set(s.distractor_ids.tolist()) <= set(LFW_NON_FACES)
        assert len(set(s.faces.tolist())) == len(s.faces)  # no face twice in a scene
        every = np.concatenate([s.boxes, s.distractors])
        assert (every >= 0).all() and (every <= 256).all()
        w, h = every[:, 2] - every[:, 0], every[:, 3] - every[:, 1]
        np.testing.assert_array_equal(w, h)  # squares
        assert (w >= SIZE_BUCKETS[0][0]).all() and (w <= SIZE_BUCKETS[-1][1]).all()
        for j in range(len(every)):  # no two squares closer than GAP
            for k in range(j):
                a, b = every[j], every[k]
                assert (a[0] >= b[2] + GAP or b[0] >= a[2] + GAP or a[1] >= b[3] + GAP
                        or b[1] >= a[3] + GAP), (i, j, k)
        sides += list(w[:len(s.boxes)])
    sides = np.array(sides)
    assert len(sides) >= 3 * n_scenes
    for lo, hi in ((10, 30), (30, 50), (50, np.inf)):  # hard-only, medium, easy heights
        assert ((sides >= lo) & (sides < hi)).mean() > 0.2, (lo, hi)


def test_pixels_in_the_boxes_are_the_named_held_out_faces():
    s = real_face_scene(np.random.default_rng(3))
    checked = 0
    for box, k in zip(s.boxes, s.faces):
        if box[2] - box[0] >= 30:
            best, corr = _best_lfw_match(s.image, box)
            assert best == k and corr > 0.75, (k, best, corr)
            checked += 1
    assert checked >= 1


def test_cli_writes_a_set_the_reader_checker_and_evaluation_accept(tmp_path):
    out = tmp_path / "real"
    assert main(["data", "synth", str(out), "--task", "real-faces", "--test", "4",
                 "--imgsz", "192", "--seed", "1"]) == 0
    ds = load_dataset(out, "test")
    assert ds.class_names == ["face"] and len(ds.records) == 4
    assert ds.keypoint_names == list(sf.FACE_LANDMARK_NAMES)
    for r in ds.records:
        assert r.width == r.height == 192 and len(r.boxes) >= 1
        assert r.keypoints.shape == (len(r.boxes), 5, 3) and not r.keypoints.any()
    anns = json.loads((out / "annotations" / "instances_test.json").read_text())["annotations"]
    assert all(a["num_keypoints"] == 0 for a in anns)
    truth = json.loads((out / "real_faces_test.json").read_text())
    assert sorted(truth) == sorted(r.file_name for r in ds.records)
    assert {k for v in truth.values() for k in v["faces"]} <= set(LFW_TEST)
    assert main(["data", "check", str(out)]) == 0
    # the bench's evaluations take it: the ground truth as detections scores 1
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in anns]
    assert evaluate_coco(out / "annotations" / "instances_test.json", dets).stats[0] == 1.0
    preds = {image_key(r.file_name): np.c_[r.boxes[:, :2], r.boxes[:, 2:] - r.boxes[:, :2],
                                           np.linspace(1, 0.5, len(r.boxes))]
             for r in ds.records}
    assert evaluate_wider(ds, preds) == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    again = tmp_path / "again"
    make_real_face_dataset(again, 4, seed=1, imgsz=192)
    assert _digest(out) == _digest(again)
    assert main(["data", "synth", str(tmp_path / "small"), "--task", "real-faces",
                 "--imgsz", "96"]) == 2  # too small for 96 px faces: an error, no crash


def test_real_faces_zero_writes_the_synthetic_set_unchanged(tmp_path):
    splits = {"train": 3, "val": 1, "test": 1}
    sf.make_face_dataset(tmp_path / "a", splits, seed=2, imgsz=128)
    sf.make_face_dataset(tmp_path / "b", splits, seed=2, imgsz=128, real_faces=0.0)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert main(["data", "synth", str(tmp_path / "c"), "--task", "faces", "--train", "2",
                 "--val", "1", "--imgsz", "128", "--real-faces", "0"]) == 0
    assert main(["data", "synth", str(tmp_path / "d"), "--task", "faces", "--train", "2",
                 "--val", "1", "--imgsz", "128"]) == 0
    assert _digest(tmp_path / "c") == _digest(tmp_path / "d")


def test_mixing_uses_training_faces_only_and_spares_the_test_split(tmp_path, monkeypatch):
    drawn = []
    original = sf._lfw_face

    def spy(index, skin, height):
        drawn.append(index)
        return original(index, skin, height)

    monkeypatch.setattr(sf, "_lfw_face", spy)
    splits = {"train": 4, "val": 2, "test": 2}
    sf.make_face_dataset(tmp_path / "mixed", splits, seed=0, imgsz=160, real_faces=0.6)
    assert drawn and set(drawn) <= set(LFW_TRAIN)
    sf.make_face_dataset(tmp_path / "pure", splits, seed=0, imgsz=160)
    mixed, pure = _digest(tmp_path / "mixed"), _digest(tmp_path / "pure")
    for name in ("images/test/000000.jpg", "images/test/000001.jpg"):
        assert mixed[name] == pure[name]
    test_m = json.loads((tmp_path / "mixed/annotations/instances_test.json").read_text())
    test_p = json.loads((tmp_path / "pure/annotations/instances_test.json").read_text())
    assert test_m["annotations"] == test_p["annotations"]
    ds = load_dataset(tmp_path / "mixed", "train")
    pure_ds = load_dataset(tmp_path / "pure", "train")
    unlabelled = checked = 0
    for r, p in zip(ds.records, pure_ds.records):
        image = np.asarray(Image.open(ds.image_root / r.file_name).convert("RGB"))
        for box, kp in zip(r.boxes, r.keypoints):
            if kp[:, 2].any():  # a synthetic face: the same box as without mixing
                assert np.abs(p.boxes - box).max(1).min() < 1e-6
                continue
            unlabelled += 1
            assert not kp.any()  # an LFW face: landmarks unlabelled at 0, 0
            others = r.boxes[(r.boxes != box).any(1)]
            alone = ((others[:, :2] >= box[2:]) | (others[:, 2:] <= box[:2])).any(1).all()
            if box[2] - box[0] >= 30 and (box[:2] > 0).all() and (box[2:] < 160).all() \
                    and alone:  # wholly in the image and not overlapped by another face
                best, corr = _best_lfw_match(image, box)
                assert best in LFW_TRAIN and corr > 0.75, (best, corr)
                checked += 1
    assert unlabelled >= 3 and checked >= 1
    assert main(["data", "check", str(tmp_path / "mixed")]) == 0


def test_bad_fractions_and_tasks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="real_faces"):
        sf.make_face_dataset(tmp_path / "x", {"train": 1}, real_faces=1.5)
    with pytest.raises(ValueError, match="real_rng"):
        sf.synth_face_scene(np.random.default_rng(0), 128, 0.5)
    assert main(["data", "synth", str(tmp_path / "y"), "--real-faces", "0.5"]) == 2
    assert not (tmp_path / "y").exists()
