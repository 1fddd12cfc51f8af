"""The pose model from the command line: ``predict --pose-weights`` (annotated images, COCO
keypoint results that ``eval --iou-type keypoints`` scores, the Parquet column), ``export``
of a pose checkpoint and ``info`` of the pose presets."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.cli import main
from tests.inference.conftest import person_detector, save_detector, save_pose

K = 17


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    det = save_detector(folder / "person.safetensors", person_detector(), ["person"])
    return det, save_pose(folder / "pose.safetensors")


@pytest.fixture
def images_and_gt(tmp_path):
    """Two images and a COCO person-keypoints ground truth for them (one person each)."""
    from scaledet.data.synth_keypoints import KEYPOINT_NAMES, SKELETON

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i, (h, w) in enumerate([(96, 128), (120, 90)], start=1):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "height": h, "width": w})
        xy = rng.uniform(10, min(h, w) - 10, (K, 2))
        points = np.concatenate([xy, np.full((K, 1), 2.0)], 1)
        x0, y0 = xy.min(0)
        x1, y1 = xy.max(0)
        annotations.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                            "keypoints": points.reshape(-1).tolist(), "num_keypoints": K})
    gt = tmp_path / "person_keypoints.json"
    gt.write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": list(KEYPOINT_NAMES),
                        "skeleton": [list(p) for p in SKELETON]}]}))
    return folder, gt


def test_predict_with_pose_weights_writes_keypoint_results_eval_reads(
        checkpoints, images_and_gt, tmp_path, capsys):
    from scaledet.evaluation.keypoints import load_keypoint_ground_truth, read_keypoint_results

    det, pose = checkpoints
    folder, gt = images_and_gt
    out, dets = tmp_path / "pred", tmp_path / "kps.json"
    assert main(["predict", "--weights", det, "--pose-weights", pose, str(folder), "--out",
                 str(out), "--json", str(dets), "--gt", str(gt), "--conf", "0.05",
                 "--max-det", "3"]) == 0
    captured = capsys.readouterr()
    assert "pose: keypoints for boxes of class 'person'" in captured.err
    n = int(re.search(r"(\d+) detections", captured.out)[1])
    assert n > 0 and f"{n} with keypoints" in captured.out
    entries = json.loads(dets.read_text())
    assert len(entries) == n
    for e in entries:
        assert len(e["keypoints"]) == 3 * K and all(isinstance(v, float) for v in e["keypoints"])
        assert e["category_id"] == 1 and e["image_id"] in (1, 2)
    arrays, xy, _ = read_keypoint_results(dets, load_keypoint_ground_truth(gt))
    assert xy.shape == (n, K, 2)
    assert main(["eval", "--gt", str(gt), "--dt", str(dets), "--iou-type", "keypoints"]) == 0
    assert "AP" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.jpg")) == ["im1.jpg", "im2.jpg"]


def test_predict_parquet_gets_the_keypoints_column(checkpoints, images_and_gt, tmp_path, capsys):
    import pyarrow.parquet as pq
    det, pose = checkpoints
    folder, _ = images_and_gt
    for with_pose in (True, False):
        out = tmp_path / f"d{with_pose}.parquet"
        flags = ["--pose-weights", pose] if with_pose else []
        assert main(["predict", "--weights", det, *flags, str(folder), "--parquet", str(out),
                     "--no-images", "--conf", "0.05", "--max-det", "2"]) == 0
        table = pq.read_table(out)
        assert table.schema.names[-1] == "keypoints" and table.num_rows > 0
        values = table.column("keypoints").to_pylist()
        if with_pose:
            assert all(len(v) == 3 * K for v in values)
        else:
            assert all(v is None for v in values)
    capsys.readouterr()


def test_predict_names_a_checkpoint_of_the_wrong_kind(checkpoints, images_and_gt, capsys):
    det, pose = checkpoints
    folder, _ = images_and_gt
    assert main(["predict", "--weights", det, "--pose-weights", det, str(folder),
                 "--no-images"]) == 2
    err = capsys.readouterr().err
    assert "person.safetensors: a detector checkpoint (model fcos-n), not a pose model" in err
    assert main(["predict", "--weights", pose, str(folder), "--no-images"]) == 2
    assert "pose.safetensors: a pose model's checkpoint" in capsys.readouterr().err
    assert main(["predict", "--weights", det, "--pose-classes", "person", str(folder)]) == 2
    assert "--pose-classes applies with --pose-weights" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["pose-heatmap-n", "pose-rle-n"])
def test_export_of_a_pose_checkpoint(name, tmp_path, capsys):
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    weights = save_pose(tmp_path / f"{name}.safetensors", name)
    assert main(["export", "--weights", weights]) == 0
    lines = capsys.readouterr().out.splitlines()
    onnx_path = (tmp_path / f"{name}.onnx").resolve()
    assert lines[0].startswith(f"wrote {onnx_path} (beside the weights; --out to choose): ")
    assert "crops Bx3x128x96 (dynamic batch) -> keypoints Bx17x2, scores Bx17" in lines[0]
    assert len(lines) == 3
    for line, b in zip(lines[1:], (1, 2)):
        assert f"onnxruntime vs PyTorch on {b}x3x128x96 crops" in line
        assert "MISMATCH" not in line
    assert main(["export", "--weights", weights, "--nms"]) == 2
    assert "is a pose model" in capsys.readouterr().err


def test_info_of_pose_presets_and_checkpoints(tmp_path, capsys):
    from torch.utils.flop_counter import FlopCounterMode

    from scaledet.models import build

    assert main(["info", "--model", "pose-heatmap-n"]) == 0
    text = capsys.readouterr().out
    model = build("pose-heatmap-n").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 128, 96))
    params = sum(p.numel() for p in model.parameters())
    assert "17 keypoints, 128x96 person crops" in text
    assert f"parameters  {params / 1e6:.3f} M" in text
    assert f"FLOPs       {counter.get_total_flops() / 1e9:.3f} G per crop" in text
    weights = save_pose(tmp_path / "rle.safetensors", "pose-rle-n")
    assert main(["info", "--weights", weights]) == 0
    text = capsys.readouterr().out
    assert "pose-rle-n: 17 keypoints, 128x96" in text and "RLE flow, used only in training" in text
    assert "trainable" in text
    assert main(["info"]) == 0
    listing = capsys.readouterr().out
    detectors, poses = listing.split("pose preset")
    assert "fcos-n" in detectors and "pose-" not in detectors
    assert "pose-heatmap-n" in poses and "pose-rle-n" in poses and "128x96 crop" in poses
