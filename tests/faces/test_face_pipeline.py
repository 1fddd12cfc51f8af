"""The detect -> align -> embed pipeline on unaligned photos (scaledet.inference.faces), with
rigged face-n detectors and an untrained embedder: what it returns, which face it picks, how a
photo without a face is counted, and that the synthetic photos align back onto their crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.data.images import read_image
from scaledet.data.synth_faces import make_face_identities
from scaledet.faces import align, read_pairs
from scaledet.faces.recognizer import load_face_embedder
from scaledet.inference.faces import MIN_SCORE, FacePipeline, verify_pairs
from scaledet.inference.predictor import Predictor
from tests.faces.face_models import plain_detector, rigged_face_detector, tiny_embedder

ONE_THREAD = True  # tiny models (tests/conftest.py)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ids")
    return make_face_identities(root / "ids", identities=2, per_identity=2, verify_identities=3,
                                verify_per_identity=2, pairs_per_fold=1, seed=0, size=32,
                                scenes=96)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"on": rigged_face_detector(d / "on.safetensors", 6.0),
            "emb": tiny_embedder(d / "emb.safetensors")}


def test_embed_returns_embedding_landmarks_box_and_times_stages(photos, models):
    pipe = FacePipeline(models["on"], models["emb"])
    image = read_image(photos / "verify_scenes" / "v00000" / "v00000_0001.jpg")
    embedding, landmarks, box = pipe.embed(image)
    assert embedding.shape == (128,) and abs(float(np.linalg.norm(embedding)) - 1) < 1e-5
    assert landmarks.shape == (5, 2) and box.shape == (4,)
    det = pipe.predictor.predict(image)[0]
    best = int(det["scores"].argmax())
    np.testing.assert_allclose(landmarks, det["keypoints"][best, :, :2].double().numpy())
    # the embedding is the embedder's on the aligned crop resized to its input side
    crop, _ = align(image, landmarks, 112)
    crop = np.array(Image.fromarray(crop).resize((32, 32), Image.BILINEAR))
    emb = load_face_embedder(models["emb"])
    x = torch.from_numpy(crop).permute(2, 0, 1)[None]
    np.testing.assert_allclose(embedding, emb(emb.normalize(x))[0].detach().numpy(), atol=1e-5)
    med = pipe.timings.medians()
    assert all(med[k] > 0 for k in ("detect", "align", "embed"))
    assert med["total"] == pytest.approx(med["detect"] + med["align"] + med["embed"])


def test_pick_largest_takes_the_largest_box(models):
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 60, 70], [5, 5, 30, 30]])
    keypoints = torch.zeros(3, 5, 3)
    keypoints[..., :2] = torch.tensor(LANDMARKS) + torch.arange(3.0)[:, None, None] * 40
    scores = torch.tensor([0.9, 0.5, 0.7])

    def detector(image):
        return {"boxes": boxes, "scores": scores, "keypoints": keypoints}

    emb = load_face_embedder(models["emb"])
    image = np.zeros((160, 160, 3), np.uint8)
    by_score = FacePipeline.from_models(detector, emb).embed(image)
    largest = FacePipeline.from_models(detector, emb, pick="largest").embed(image)
    np.testing.assert_array_equal(by_score.box, boxes[0].double().numpy())
    np.testing.assert_array_equal(largest.box, boxes[1].double().numpy())
    np.testing.assert_allclose(largest.landmarks, keypoints[1, :, :2].double().numpy())
    with pytest.raises(ValueError, match="pick must be one of score, largest"):
        FacePipeline.from_models(detector, emb, pick="central")


LANDMARKS = [[10.0, 12.0], [22.0, 12.0], [16.0, 18.0], [11.0, 24.0], [21.0, 24.0]]


def test_unalignable_landmarks_are_a_failure_not_an_error(models):
    def detector(image):  # every landmark on one point
        return {"boxes": torch.tensor([[0.0, 0, 20, 20]]), "scores": torch.tensor([0.9]),
                "keypoints": torch.full((1, 5, 3), 7.0)}

    pipe = FacePipeline.from_models(detector, load_face_embedder(models["emb"]))
    assert pipe.embed(np.zeros((32, 32, 3), np.uint8)) is None
    assert pipe.last_failure.startswith("landmarks not alignable")


def test_a_detector_without_landmarks_is_refused_by_name(tmp_path, models):
    det = plain_detector(tmp_path / "fcos.safetensors")
    with pytest.raises(ValueError, match=r"fcos\.safetensors: a detector without five face "
                                         "landmarks"):
        FacePipeline(det, models["emb"])


def test_a_photo_without_a_face_scores_its_pairs_minimum(tmp_path, photos, models):
    root = tmp_path / "scenes"
    root.mkdir()
    for d in (photos / "verify_scenes").iterdir():
        if d.is_dir():
            (root / d.name).mkdir()
            for f in d.iterdir():
                (root / d.name / f.name).write_bytes(f.read_bytes())
    blank = root / "v00001" / "v00001_0002.jpg"
    Image.new("RGB", (96, 96), (0, 0, 0)).save(blank)
    predictor = Predictor(models["on"], conf=0.3, batch_size=1)

    def detector(image):  # the rigged detector finds a face anywhere; not on black
        det = predictor.predict(image)[0]
        return {k: v[:0] for k, v in det.items()} if image.max() < 10 else det

    pipe = FacePipeline.from_models(detector, load_face_embedder(models["emb"]))
    result = verify_pairs(pipe, photos / "pairs.txt", root)
    assert result.failures == {str(blank): "no face detected"}
    paths = read_pairs(photos / "pairs.txt").image_paths(root)
    hit = np.array([blank in pair for pair in paths])
    assert hit.any() and result.failed_pairs == int(hit.sum())
    assert (result.scores[hit] == MIN_SCORE).all() and (result.scores[~hit] > MIN_SCORE).all()
    assert result.images == len({p for pair in paths for p in pair})
    assert len(pipe.timings.detect) == result.images
    assert len(pipe.timings.embed) == result.images - 1


def test_true_landmarks_align_a_photo_onto_its_crop(photos):
    truth = json.loads((photos / "verify_scenes" / "faces.json").read_text())
    assert len(truth) == 6
    other = read_image(photos / "verify" / "v00002" / "v00002_0001.png").astype(float)
    for rel, face in truth.items():
        scene = read_image(photos / "verify_scenes" / rel)
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
        assert 0.25 * 96 - 1 <= y2 - y1 <= 0.45 * 96 + 1  # a moderate size
        crop, _ = align(scene, face["landmarks"], 32)
        same = read_image(photos / "verify" / rel.replace(".jpg", ".png")).astype(float)
        inner = (slice(8, 24), slice(8, 24))
        err = np.abs(crop[inner] - same[inner]).mean()
        assert err < 12, (rel, err)  # the same photo (measured 5.6-7.0; another person 24-55)
        if not rel.startswith("v00002"):
            assert err < 0.5 * np.abs(crop[inner] - other[inner]).mean(), rel
