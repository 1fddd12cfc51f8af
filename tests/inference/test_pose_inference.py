"""Top-down pose at inference: crops of the detected boxes, joints mapped back to the image
exactly, which boxes are posed, the Result / json / Parquet forms, and ONNX export of both
pose heads with onnxruntime parity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import scaledet
from scaledet.data.pose import crop_person
from scaledet.inference import Predictor
from scaledet.inference.pose import PoseEstimator, pose_labels, to_image_pixels
from scaledet.ops.warp import apply_matrix, invert_matrix
from tests.inference.conftest import (
    BrightestPixelPose,
    ColourBoxDetector,
    FixedPose,
    draw,
    person_detector,
    save_detector,
    save_pose,
)

K = 17


@pytest.fixture(scope="module")
def pose_weights(tmp_path_factory) -> str:
    return save_pose(tmp_path_factory.mktemp("pose") / "pose.safetensors")


@pytest.fixture(scope="module")
def person_weights(tmp_path_factory) -> str:
    return save_detector(tmp_path_factory.mktemp("det") / "person.safetensors",
                         person_detector(), ["person"])


def _image(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- the geometry ----------------------------------------------------------------------------

def test_joints_map_back_through_the_inverse_crop_matrix():
    coords = torch.tensor([[0.0, 0.0], [95.0, 127.0], [47.5, 63.5], [10.25, 100.75]])
    pose = PoseEstimator.from_model(FixedPose(coords), padding=1.25)
    image = _image()
    boxes = torch.tensor([[10.0, 20.0, 60.0, 110.0],      # tall
                          [0.0, 50.0, 150.0, 80.0],       # wide
                          [-20.0, -10.0, 30.0, 40.0],     # past the image's corner
                          [70.5, 33.25, 71.5, 34.0]])     # about a pixel
    out = pose(image, boxes)
    assert out.shape == (4, 4, 3) and out.dtype == torch.float32
    for box, joints in zip(boxes, out):
        _, matrix = crop_person(image, box.numpy(), (128, 96), 1.25)
        expected = apply_matrix(coords.numpy(), invert_matrix(matrix))
        np.testing.assert_allclose(joints[:, :2].numpy(), expected, rtol=0, atol=1e-4)
        # and forward again: the crop pixels the model answered
        np.testing.assert_allclose(apply_matrix(joints[:, :2].double().numpy(), matrix),
                                   coords.numpy(), rtol=0, atol=1e-3)
    assert torch.equal(out[..., 2], torch.full((4, 4), 0.9))


def test_to_image_pixels_is_the_inverse_of_each_matrix():
    rng = np.random.default_rng(1)
    matrices = np.concatenate([rng.normal(size=(5, 2, 2)) + 2 * np.eye(2),
                               rng.normal(size=(5, 2, 1)) * 50], axis=2)
    image_points = rng.uniform(0, 200, (5, 7, 2))
    crop_points = np.stack([apply_matrix(p, m) for p, m in zip(image_points, matrices)])
    np.testing.assert_allclose(to_image_pixels(crop_points, matrices), image_points, atol=1e-9)


def test_crops_use_the_model_input_size_and_box_padding():
    model = FixedPose(torch.zeros(1, 2), input_size=(64, 48))
    image = _image()
    box = np.array([40.0, 30.0, 80.0, 100.0])
    for padding in (1.0, 1.5):
        pose = PoseEstimator.from_model(model, padding=padding)
        crops, matrices = pose.crops(image, torch.from_numpy(box[None]))
        crop, matrix = crop_person(image, box, (64, 48), padding)
        assert crops.shape == (1, 3, 64, 48) and crops.dtype == torch.uint8
        assert np.array_equal(crops[0].permute(1, 2, 0).numpy(), crop)
        np.testing.assert_array_equal(matrices[0], matrix)


def test_a_bright_spot_is_found_where_it_is_in_the_image():
    """End to end against the image itself (not the matrices): a bright 3x3 spot at a known
    place is found there after the crop, the model and the way back."""
    pose = PoseEstimator.from_model(BrightestPixelPose(), padding=1.25)
    for (cx, cy), box in [((50, 60), [30, 20, 100, 130]), ((121, 33), [90, 0, 150, 70]),
                          ((12, 100), [0, 70, 40, 118])]:
        image = np.zeros((120, 160, 3), np.uint8)
        image[cy - 1:cy + 2, cx - 1:cx + 2] = 255
        (joint,) = pose(image, torch.tensor([box], dtype=torch.float32))[:, 0]
        assert abs(float(joint[0]) - cx) < 0.6 and abs(float(joint[1]) - cy) < 0.6, (cx, cy, joint)


def test_no_boxes_no_model_call():
    model = FixedPose(torch.zeros(K, 2))
    out = PoseEstimator.from_model(model)(_image(), torch.zeros(0, 4))
    assert out.shape == (0, K, 3) and not model.seen


def test_crops_go_in_batches():
    model = FixedPose(torch.zeros(2, 2))
    pose = PoseEstimator.from_model(model, batch_size=3)
    pose(_image(), torch.tensor([[10.0, 10.0, 50.0, 90.0]] * 7))
    assert [len(c) for c in model.seen] == [3, 3, 1]


# ---- which boxes, and the Result --------------------------------------------------------------

def _posing_predictor(names, pose_classes=None, coords=None) -> Predictor:
    coords = torch.tensor([[5.0, 6.0], [40.0, 80.0]]) if coords is None else coords
    pose = PoseEstimator.from_model(FixedPose(coords), keypoint_names=["left_a", "right_a"],
                                    skeleton=[(1, 2)])
    return Predictor.from_model(ColourBoxDetector(), names, imgsz=96, conf=0.1, pose=pose,
                                pose_classes=pose_classes)


def test_only_person_boxes_get_keypoints(capsys, tmp_path):
    predictor = _posing_predictor(["person", "square", "star"])
    assert "keypoints for boxes of class 'person'" in capsys.readouterr().err
    image = draw(96, 96, [(0, (10, 10, 40, 80)), (1, (50, 20, 90, 60))])
    (r,) = predictor(image)
    assert r.labels.tolist() == [0, 1]
    assert r.keypoints.shape == (2, 2, 3)
    assert r.posed.tolist() == [True, False]
    assert torch.isnan(r.keypoints[1]).all() and torch.isfinite(r.keypoints[0]).all()
    entries = r.to_coco(image_id=7)
    assert len(entries[0]["keypoints"]) == 6 and "keypoints" not in entries[1]
    xy = np.array(entries[0]["keypoints"]).reshape(2, 3)
    np.testing.assert_allclose(xy[:, :2], r.keypoints[0, :, :2].numpy(), atol=0.006)
    assert xy[:, 2].tolist() == pytest.approx([0.9, 0.9])
    as_dict = r.to_dict()
    assert as_dict["keypoints"][1] is None and len(as_dict["keypoints"][0]) == 2
    json.dumps(as_dict)  # no NaN leaks into JSON
    plain = predictor.predict(image)[0]
    assert torch.equal(plain["keypoints"][0], r.keypoints[0])
    im = r.plot(tmp_path / "a.jpg")
    assert (tmp_path / "a.jpg").is_file() and im.size == (96, 96)


def test_pose_classes_choose_and_are_checked(capsys):
    predictor = _posing_predictor(["person", "square", "star"], pose_classes=["square", "star"])
    image = draw(96, 96, [(0, (10, 10, 40, 80)), (1, (50, 20, 90, 60)), (2, (5, 85, 20, 95))])
    (r,) = predictor(image)
    assert r.labels.tolist() == [0, 1, 2] and r.posed.tolist() == [False, True, True]
    with pytest.raises(ValueError, match="dog are not classes of the detector.*person, square"):
        _posing_predictor(["person", "square", "star"], pose_classes=["dog"])
    with pytest.raises(ValueError, match="needs a pose model"):
        Predictor.from_model(ColourBoxDetector(), ["a", "b", "c"], pose_classes=["a"])


def test_without_a_person_class_every_box_is_posed(capsys):
    predictor = _posing_predictor(["circle", "square", "star"])
    assert "no 'person' class: keypoints for every box" in capsys.readouterr().err
    (r,) = predictor(draw(96, 96, [(0, (10, 10, 40, 80)), (1, (50, 20, 90, 60))]))
    assert r.posed.tolist() == [True, True]
    assert pose_labels(["a", "person"]) [0] == [1]


def test_without_a_pose_model_results_have_no_keypoints():
    predictor = Predictor.from_model(ColourBoxDetector(), ["person", "b", "c"], imgsz=96)
    (r,) = predictor(draw(96, 96, [(0, (10, 10, 40, 80))]))
    assert r.keypoints is None and r.posed.tolist() == [False]
    assert "keypoints" not in r.to_coco(1)[0] and "keypoints" not in r.to_dict()


def test_load_with_pose_weights(person_weights, pose_weights):
    predictor = scaledet.load(person_weights, pose_weights=pose_weights, conf=0.05, max_det=4)
    assert predictor.pose is not None and predictor.pose.padding == 1.25
    results = predictor([_image(), _image(80, 60, seed=1)])
    for r in results:
        assert len(r) and r.keypoints.shape == (len(r), K, 3)
        assert r.posed.all() and torch.isfinite(r.keypoints).all()
        assert r.keypoint_names[5] == "left_shoulder" and (16, 14) in r.skeleton
        for e in r.to_coco(1):
            assert len(e["keypoints"]) == 3 * K


def test_wrong_kind_of_checkpoint_is_named(person_weights, pose_weights):
    with pytest.raises(ValueError, match=r"person\.safetensors: a detector checkpoint \(model "
                                         r"fcos-n\), not a pose model; --pose-weights"):
        scaledet.load(person_weights, pose_weights=person_weights)
    with pytest.raises(ValueError, match=r"pose\.safetensors: a pose model's checkpoint.*"
                                         r"--pose-weights"):
        scaledet.load(pose_weights)


def test_parquet_has_a_keypoints_list_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from scaledet.inference.stream import predict_stream
    from scaledet.inference.writers import parquet_schema

    files = []
    for i, objects in enumerate([[(0, (10, 10, 40, 80)), (1, (50, 20, 90, 60))], []]):
        files.append(tmp_path / f"im{i}.png")
        Image.fromarray(draw(96, 96, objects).permute(1, 2, 0).numpy()).save(files[-1])
    for posed, predictor in [(True, _posing_predictor(["person", "square", "star"])),
                             (False, Predictor.from_model(ColourBoxDetector(),
                                                          ["person", "square", "star"],
                                                          imgsz=96))]:
        out = tmp_path / f"out_{posed}.parquet"
        summary = predict_stream(predictor, files, out, parquet=True, errors=tmp_path / "e.txt")
        assert summary["poses"] == int(posed)
        table = pq.read_table(out)
        assert table.schema.remove_metadata() == parquet_schema()
        kind = table.schema.field("keypoints").type
        assert pa.types.is_list(kind) and kind.value_type == pa.float32()
        rows = table.to_pylist()
        assert [r["class_name"] for r in rows] == ["person", "square"]
        if posed:
            assert len(rows[0]["keypoints"]) == 6 and rows[1]["keypoints"] is None
            (r,) = predictor(files[0])
            np.testing.assert_allclose(rows[0]["keypoints"], r.keypoints[0].flatten().numpy(),
                                       rtol=1e-6)
        else:
            assert all(r["keypoints"] is None for r in rows)


# ---- ONNX -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pose-heatmap-n", "pose-rle-n"])
def test_onnx_export_matches_pytorch_and_leaves_the_flow_out(name, tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from scaledet.inference.export import check_images, export_pose_onnx
    from scaledet.models import build

    torch.manual_seed(0)
    model = build(name).fuse()
    path = export_pose_onnx(model, tmp_path / "pose.onnx", batch=2)
    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["crops"]
    assert [o.name for o in proto.graph.output] == ["keypoints", "scores"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["task"] == "pose" and json.loads(meta["input_size"]) == [128, 96]
    # no flow parameter: neither by name nor by size (the initializers hold about the
    # parameters that run, the flow's 54k would show)
    sizes = sum(numpy_helper.to_array(i).size for i in proto.graph.initializer)
    flow = getattr(model.head, "flow", None)
    flow_params = sum(p.numel() for p in flow.parameters()) if flow is not None else 0
    running = sum(p.numel() for n, p in model.named_parameters() if ".flow." not in n)
    assert not any("flow" in i.name for i in proto.graph.initializer)
    if flow is not None:
        # at most the parameters outside the flow (fewer where the head reads one neck level
        # and the exporter drops the unused ones); the flow would add its 54k
        assert flow_params > 50_000 and sizes < running + flow_params // 10
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):  # the batch is free
        x = check_images(b, 128, 96)
        with torch.no_grad():
            coords, scores = model(x)
        got_coords, got_scores = sess.run(None, {"crops": x.numpy()})
        assert got_coords.shape == (b, K, 2) and got_scores.shape == (b, K)
        np.testing.assert_allclose(got_coords, coords.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(got_scores, scores.numpy(), rtol=0, atol=1e-5)


def test_onnx_export_of_argmax_decoding(tmp_path):
    import onnx  # noqa: F401
    import onnxruntime as ort

    from scaledet.inference.export import check_images, export_pose_onnx
    from scaledet.models import build

    torch.manual_seed(0)
    model = build("pose-heatmap-n", head={"decode": "argmax"}).fuse()
    path = export_pose_onnx(model, tmp_path / "argmax.onnx")
    x = check_images(2, 128, 96)
    with torch.no_grad():
        coords, _ = model(x)
    got, _ = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"crops": x.numpy()})
    np.testing.assert_allclose(got, coords.numpy(), rtol=0, atol=1e-4)
    assert not math.isnan(float(got.sum()))
