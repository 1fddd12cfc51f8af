"""WIDER FACE box files and RetinaFace landmark files on hand-written examples: every quirk,
the COCO round trip, and each check naming its file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scaledet.cli import main
from scaledet.data import read_coco, write_coco_json
from scaledet.data.io import available_splits, dataset_format, load_dataset
from scaledet.data.records import LabelProblem
from scaledet.data.wider_face import (
    FACE_LANDMARK_NAMES,
    WIDER_ATTRIBUTES,
    image_key,
    read_face_labels,
    read_retinaface,
    read_wider_face,
    wider_event,
)
from scaledet.faces.align import ARCFACE_TEMPLATE_112
from tests.data.conftest import write_image

# line numbers (1-based) on the right
WIDER = """\
0--Parade/0_Parade_marchingband_1_849.jpg
2
449 330 122 149 0 0 0 0 0 0
10 20 30 40 2 1 1 0 2 1
0--Parade/0_Parade_Parade_0_904.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/1_Handshaking_x_1.jpg
1
5 6 7 8 1 0 0 1 1 0
1--Handshaking/1_Handshaking_x_2.jpg
0
"""  # 1..4 first image; 5..7 count 0 with its placeholder line; 8..10; 11..12 count 0, no line

RETINA = """\
# 0--Parade/0_Parade_marchingband_1_849.jpg
449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 485.174 425.893 1.0 538.357 431.491 0.0 0.82
# 0--Parade/0_Parade_Parade_0_904.jpg
361 98 263 339 424.143 251.656 0.0 547.134 232.571 0.0 494.121 325.875 0.0 453.83 368.286 0.0 561.978 342.839 0.0 0.89
78 221 7 8 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 0.2
12 13 14 15
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_wider_blocks_boxes_attributes_and_the_count_zero_quirk(tmp_path):
    ds = read_wider_face(_write(tmp_path, "wider_face_val_bbx_gt.txt", WIDER))
    assert [r.file_name for r in ds.records] == [
        "0--Parade/0_Parade_marchingband_1_849.jpg", "0--Parade/0_Parade_Parade_0_904.jpg",
        "1--Handshaking/1_Handshaking_x_1.jpg", "1--Handshaking/1_Handshaking_x_2.jpg"]
    assert [len(r) for r in ds.records] == [2, 0, 1, 0]  # the placeholder line is not a face
    np.testing.assert_array_equal(ds.records[0].boxes, [[449, 330, 571, 479], [10, 20, 40, 60]])
    np.testing.assert_array_equal(ds.records[2].boxes, [[5, 6, 12, 14]])
    assert ds.records[0].ann_ids.tolist() == [3, 4] and ds.records[2].ann_ids.tolist() == [10]
    assert ds.attribute_names == WIDER_ATTRIBUTES
    attrs = ds.face_attributes(ds.records[0])
    assert attrs["blur"].tolist() == [0, 2] and attrs["occlusion"].tolist() == [0, 2]
    assert attrs["pose"].tolist() == [0, 1]
    assert ds.face_attributes(ds.records[2])["invalid"].tolist() == [1]
    assert ds.keypoint_names == FACE_LANDMARK_NAMES and ds.num_keypoints == 5
    assert ds.flip_index() == [1, 0, 2, 4, 3]
    assert (ds.records[0].keypoints[..., 2] == 0).all()  # a box file labels no landmark
    assert ds.class_names == ["face"] and ds.records[0].width == 0  # no images: size unknown
    assert wider_event(ds.records[2].file_name) == "1--Handshaking"
    assert image_key(ds.records[2].file_name) == "1--Handshaking/1_Handshaking_x_1"


def test_landmark_order_matches_the_alignment_template():
    """Left and right in the image: the left eye has the smaller x in the template."""
    assert FACE_LANDMARK_NAMES[0] == "left_eye" and FACE_LANDMARK_NAMES[3] == "left_mouth"
    assert ARCFACE_TEMPLATE_112[0, 0] < ARCFACE_TEMPLATE_112[1, 0]
    assert ARCFACE_TEMPLATE_112[3, 0] < ARCFACE_TEMPLATE_112[4, 0]


def test_retinaface_landmarks_flags_and_quality(tmp_path):
    ds = read_retinaface(_write(tmp_path, "train/label.txt", RETINA))
    assert [len(r) for r in ds.records] == [1, 3]
    k0 = ds.records[0].keypoints[0]
    np.testing.assert_allclose(k0[:, :2], [[488.906, 373.643], [542.089, 376.442],
                                           [515.031, 412.83], [485.174, 425.893],
                                           [538.357, 431.491]], rtol=1e-6)
    assert k0[:, 2].tolist() == [2, 2, 2, 1, 2]  # file 0.0 visible -> 2, 1.0 occluded -> 1
    absent = ds.records[1].keypoints[1]
    assert (absent == 0).all()  # -1 triples: unlabelled, at 0, 0
    assert (ds.records[1].keypoints[2] == 0).all()  # a box-only line
    np.testing.assert_array_equal(ds.records[1].boxes[2], [12, 13, 26, 28])
    np.testing.assert_allclose(ds.face_attributes(ds.records[1])["quality"], [0.89, 0.2, -1])
    assert ds.records[1].ann_ids.tolist() == [4, 5, 6]
    assert read_face_labels(tmp_path / "train" / "label.txt").attribute_names == ("quality",)


def test_header_with_image_size_and_landmark_outside_the_image(tmp_path):
    text = "# a/x.jpg 100 80\n10 10 20 20 15 15 0.0 25 15 0.0 20 20 0.0 15 25 0.0 125 25 0.0 0.5\n"
    path = _write(tmp_path, "label.txt", text)
    with pytest.raises(ValueError, match=r"label\.txt:2: landmark 5 \(right_mouth\).*100x80"):
        read_retinaface(path)
    problems: list[LabelProblem] = []
    ds = read_retinaface(path, problems=problems)
    assert [p.kind for p in problems] == ["keypoint_outside_image"] and len(ds.records[0]) == 0
    assert (ds.records[0].width, ds.records[0].height) == (100, 80)
    assert len(read_retinaface(path, strict=False).records[0]) == 1


def test_bad_visibility_flag_names_the_line(tmp_path):
    bad = "# a/x.jpg\n1 1 5 5 1 1 0.0 2 2 0.0 3 3 2.0 4 4 0.0 5 5 0.0 0.3\n"
    with pytest.raises(ValueError, match=r"label\.txt:2: landmark 3 \(nose\) has flag 2"):
        read_retinaface(_write(tmp_path, "label.txt", bad))


@pytest.mark.parametrize("text, where, message", [
    # count says 3, two faces follow, then the next image's name
    ("a/1.jpg\n3\n1 1 5 5 0 0 0 0 0 0\n2 2 5 5 0 0 0 0 0 0\nb/2.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n",
     ":2:", "count says 3 faces but 2 face lines follow"),
    # count says 1, two faces follow: the surplus line is where a name was expected
    ("a/1.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n2 2 5 5 0 0 0 0 0 0\nb/2.jpg\n0\n",
     ":4:", "count at line 2 says 1 faces but more face lines follow"),
    # the file ends early
    ("a/1.jpg\n2\n1 1 5 5 0 0 0 0 0 0\n", ":2:", "the file ends"),
    ("a/1.jpg\ntwo\n", ":2:", "expected the number of faces"),
    ("a/1.jpg\n1\n1 1 5 x 0 0 0 0 0 0\n", ":3:", "value 4 of the face line, 'x'"),
    ("a/1.jpg\n1\n1 1 5 5 0 0 0 0 0\n", ":3:", "expected 10 numbers"),
    ("a/1.jpg\n1\n1 1 5 nan 0 0 0 0 0 0\n", ":3:", "NaN or inf"),
    ("a/1.jpg\n2\n1 1 5 5 0 0 0 0 0 0\n1 1 0 5 0 0 0 0 0 0\n", ":4:", "width 0, height 5"),
])
def test_each_problem_names_its_line(tmp_path, text, where, message):
    path = _write(tmp_path, "wider_face_train_bbx_gt.txt", text)
    with pytest.raises(ValueError) as info:
        read_wider_face(path)
    assert f"wider_face_train_bbx_gt.txt{where}" in str(info.value)
    assert message in str(info.value)


def test_collecting_reader_skips_bad_faces_and_reads_on(tmp_path):
    text = ("a/1.jpg\n3\n1 1 5 5 0 0 0 0 0 0\n1 1 -2 5 0 0 0 0 0 0\n2 2 5 z 0 0 0 0 0 0\n"
            "b/2.jpg\n1\n3 3 4 4 0 0 0 0 0 0\n")
    problems: list[LabelProblem] = []
    ds = read_wider_face(_write(tmp_path, "wider_face_val_bbx_gt.txt", text), problems=problems)
    assert sorted((p.kind, p.where) for p in problems) == [
        ("empty_box", "wider_face_val_bbx_gt.txt:4"), ("malformed", "wider_face_val_bbx_gt.txt:5")]
    assert [len(r) for r in ds.records] == [1, 1]
    assert ds.attributes[1].shape == (1, 6)
    # not strict: the degenerate box is kept (the official evaluation scores every line)
    loose = read_wider_face(tmp_path / "wider_face_val_bbx_gt.txt", strict=False,
                            problems=[])
    assert len(loose.records[0]) == 2


def test_box_outside_a_known_image(tmp_path):
    write_image(tmp_path / "WIDER_val" / "images" / "a" / "1.jpg", 40, 30)
    split = tmp_path / "wider_face_split"
    path = _write(split, "wider_face_val_bbx_gt.txt",
                  "a/1.jpg\n2\n1 1 5 5 0 0 0 0 0 0\n50 1 5 5 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match=r"wider_face_val_bbx_gt\.txt:4: .*misses the 40x30"):
        read_wider_face(path)
    ds = read_wider_face(path, problems=[])
    assert (ds.records[0].width, ds.records[0].height) == (40, 30) and len(ds.records[0]) == 1


def test_coco_round_trip_and_convert_command(tmp_path, capsys):
    text = RETINA.replace("12 13 14 15", "12 13 14 15 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 "
                          "0.0 0.0 0.0 0.0 0.0")  # 19 values: 5 visible points at 0, 0
    root = tmp_path / "retina" / "train"
    write_image(root / "images" / "0--Parade" / "0_Parade_marchingband_1_849.jpg", 640, 520)
    write_image(root / "images" / "0--Parade" / "0_Parade_Parade_0_904.jpg", 640, 480, seed=1)
    label = _write(root, "label.txt", text)
    ds = read_retinaface(label)
    assert (ds.records[0].width, ds.records[0].height) == (640, 520)
    back = read_coco(write_coco_json(ds, tmp_path / "faces.json"))
    assert back.keypoint_names == FACE_LANDMARK_NAMES and back.skeleton == ds.skeleton
    for a, b in zip(ds.records, back.records):
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-9)
        np.testing.assert_allclose(b.keypoints, a.keypoints, atol=1e-4)
        assert b.ann_ids.tolist() == a.ann_ids.tolist()

    assert dataset_format(label) == "retinaface" and available_splits(label) == ["train"]
    assert main(["data", "convert", str(label), str(tmp_path / "out"), "--to", "coco"]) == 0
    converted = load_dataset(tmp_path / "out", "train")
    assert sum(len(r) for r in converted.records) == 4
    np.testing.assert_allclose(
        np.concatenate([r.boxes for r in converted.records]),
        np.concatenate([r.boxes for r in ds.records]), atol=1e-9)
    assert "converted" in capsys.readouterr().out


def test_wider_file_and_folder_are_detected(tmp_path):
    split = tmp_path / "wider_face_split"
    _write(split, "wider_face_val_bbx_gt.txt", WIDER)
    _write(split, "wider_face_train_bbx_gt.txt", WIDER)
    assert dataset_format(split / "wider_face_val_bbx_gt.txt") == "wider"
    assert dataset_format(tmp_path) == "wider"
    assert available_splits(tmp_path) == ["train", "val"]
    assert len(load_dataset(tmp_path, "val")) == 4
    assert len(load_dataset(split / "wider_face_val_bbx_gt.txt")) == 4
