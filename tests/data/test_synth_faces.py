"""The synthetic faces: deterministic per seed, landmarks on the drawn features (pupil, nose,
lips), left / right as seen in the image, disjoint identity sets, LFW-format pairs that the
reader accepts, and detection scenes that load as a COCO keypoint dataset."""

from __future__ import annotations

import numpy as np
import pytest

from scaledet.cli import main
from scaledet.data import load_dataset
from scaledet.data.synth_faces import (
    FaceNuisance,
    make_face_identities,
    random_identity,
    render_face,
    synth_face_crop,
    synth_face_scene,
)
from scaledet.faces import read_pairs


def _pixel(image: np.ndarray, xy) -> np.ndarray:
    x, y = np.floor(np.asarray(xy) + 0.5).astype(int)
    return image[y, x].astype(int)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pose", [FaceNuisance(), FaceNuisance(roll=0.4, yaw=0.3, smile=0.05),
                                  FaceNuisance(roll=-0.3, yaw=-0.3, eye_open=0.6)])
def test_landmarks_lie_on_the_drawn_features(seed, pose):
    identity = random_identity(np.random.default_rng(seed))
    face = render_face(identity, pose, height=240)  # pupils >= 3 px wide
    lm = face.landmarks
    skin = np.array(identity.skin)
    for k in (0, 1):  # the eye landmark is the pupil's centre (drawn (15, 15, 15))
        assert _pixel(face.rgb, lm[k]).max() < 40
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left / right as seen in the image
    eyes_mid = lm[:2].mean(0)  # just above the nose tip: the nose's darker skin, not the cheek
    above_tip = _pixel(face.rgb, lm[2] + 4 * (eyes_mid - lm[2]) / np.linalg.norm(eyes_mid - lm[2]))
    assert np.abs(above_tip - 0.78 * skin).sum() < np.abs(above_tip - skin).sum()
    for k in (3, 4):  # the lip tapers to each mouth corner: lip pixels within 4 px
        x, y = np.floor(lm[k] + 0.5).astype(int)
        window = face.rgb[y - 4:y + 5, x - 4:x + 5].reshape(-1, 3).astype(int)
        to_lip = np.abs(window - np.array(identity.lip)).sum(1)
        assert (to_lip < np.abs(window - skin).sum(1)).any()
    x1, y1, x2, y2 = face.box
    assert (lm[:, 0] > x1).all() and (lm[:, 0] < x2).all() and (lm[:, 1] > y1).all() \
        and (lm[:, 1] < y2).all()


def test_crops_are_deterministic_per_seed():
    identity = random_identity(np.random.default_rng(3))
    a, la = synth_face_crop(identity, np.random.default_rng(7), 48)
    b, lb = synth_face_crop(identity, np.random.default_rng(7), 48)
    c, _ = synth_face_crop(identity, np.random.default_rng(8), 48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_identity_sets_are_disjoint_and_pairs_valid(tmp_path):
    kw = dict(identities=4, per_identity=2, verify_identities=3, verify_per_identity=2,
              pairs_per_fold=2, seed=1, size=32)
    root = make_face_identities(tmp_path / "a", **kw)
    again = make_face_identities(tmp_path / "b", **kw)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:  # byte-identical for one seed
        assert (root / rel).read_bytes() == (again / rel).read_bytes()
    train = {p.name for p in (root / "train").iterdir()}
    verify = {p.name for p in (root / "verify").iterdir()}
    assert len(train) == 4 and len(verify) == 3 and not train & verify
    vectors = [random_identity(np.random.default_rng((1, code, i, 2))).vector()
               for code, n in ((10, 4), (11, 3)) for i in range(n)]
    assert min(np.abs(a - b).max() for i, a in enumerate(vectors) for b in vectors[i + 1:]) > 0.01
    pf = read_pairs(root / "pairs.txt")
    assert (pf.folds, pf.per_fold, len(pf.pairs)) == (10, 2, 40)
    assert all(a.parent.parent.name == "verify" for a, _ in pf.image_paths(root / "verify"))
    other = make_face_identities(tmp_path / "c", **{**kw, "seed": 2})
    assert (other / "train" / "t00000" / "t00000_0001.png").read_bytes() != (
        root / "train" / "t00000" / "t00000_0001.png").read_bytes()
    with pytest.raises(ValueError, match="not an empty folder"):
        make_face_identities(root, **kw)


def test_scene_faces_at_every_scale_with_keypoints():
    heights, n_faces = [], 0
    for i in range(12):
        image, boxes, kps = synth_face_scene(np.random.default_rng((0, i)), 256)
        assert image.shape == (256, 256, 3) and kps.shape == (len(boxes), 5, 3)
        n_faces += len(boxes)
        heights += list(boxes[:, 3] - boxes[:, 1])
        labelled = kps[..., 2] > 0
        assert set(np.unique(kps[..., 2])) <= {0.0, 1.0, 2.0}
        assert (kps[..., 0][labelled] >= 0).all() and (kps[..., 0][labelled] < 256).all()
        assert (kps[..., :2][~labelled] == 0).all()
    assert n_faces > 20 and min(heights) < 16 and max(heights) > 96


def test_cli_writes_a_loadable_coco_face_dataset(tmp_path):
    out = tmp_path / "faces"
    assert main(["data", "synth", str(out), "--task", "faces", "--train", "3", "--val", "2",
                 "--imgsz", "128"]) == 0
    ds = load_dataset(out, "train")
    assert ds.class_names == ["face"] and len(ds.records) == 3
    assert ds.keypoint_names == ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"]
    assert all(r.keypoints.shape == (len(r.boxes), 5, 3) for r in ds.records)
    assert main(["data", "check", str(out)]) == 0
    ids = tmp_path / "ids"
    assert main(["data", "synth", str(ids), "--task", "face-identities", "--identities", "2",
                 "--per-identity", "2", "--verify-identities", "2", "--pairs-per-fold", "1",
                 "--imgsz", "32"]) == 0
    assert len(read_pairs(ids / "pairs.txt").pairs) == 20
