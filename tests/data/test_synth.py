import numpy as np
import pytest

from scaledet.cli import main
from scaledet.data import load_dataset, make_synthetic_dataset, read_image
from scaledet.data.check import check_dataset
from scaledet.data.synth import CLASS_NAMES, _object, synth_image


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_deterministic_for_a_seed(tmp_path):
    a = files(make_synthetic_dataset(tmp_path / "a", n_train=5, n_val=3, seed=7, imgsz=128))
    b = files(make_synthetic_dataset(tmp_path / "b", n_train=5, n_val=3, seed=7, imgsz=128))
    assert a.keys() == b.keys() and len(a) == 10
    assert a == b  # byte-identical annotation json and images
    c = files(make_synthetic_dataset(tmp_path / "c", n_train=5, n_val=3, seed=8, imgsz=128))
    assert c["annotations/instances_train.json"] != a["annotations/instances_train.json"]
    pixels = [read_image(tmp_path / r / "images" / "val" / "000002.jpg") for r in "ab"]
    np.testing.assert_array_equal(*pixels)


def test_coco_and_yolo_layouts_agree(tmp_path):
    assert main(["data", "synth", str(tmp_path / "c"), "--train", "4", "--val", "2",
                 "--seed", "3", "--imgsz", "160"]) == 0
    assert main(["data", "synth", str(tmp_path / "y"), "--train", "4", "--val", "2",
                 "--seed", "3", "--imgsz", "160", "--format", "yolo"]) == 0
    for split, n in (("train", 4), ("val", 2)):
        coco, yolo = load_dataset(tmp_path / "c", split), load_dataset(tmp_path / "y", split)
        assert len(coco) == len(yolo) == n
        assert coco.class_names == yolo.class_names == list(CLASS_NAMES)
        for rc, ry in zip(coco.records, yolo.records):
            assert (rc.width, rc.height) == (ry.width, ry.height) == (160, 160)
            np.testing.assert_allclose(ry.boxes, rc.boxes, atol=1e-4)
            np.testing.assert_array_equal(ry.labels, rc.labels)
    report = check_dataset(tmp_path / "c")
    assert report["num_errors"] == 0


def test_statistics():
    """Objects per image, sizes (a third small), classes and box validity over 80 images."""
    counts, boxes, labels = [], [], []
    for i in range(80):
        image, b, lab = synth_image(np.random.default_rng((0, 0, i)), 320)
        assert image.shape == (320, 320, 3) and image.dtype == np.uint8
        counts.append(len(b))
        boxes.append(b)
        labels.append(lab)
    boxes, labels = np.concatenate(boxes), np.concatenate(labels)
    assert max(counts) <= 12 and 4 <= np.mean(counts) <= 10
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 320).all()
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert side.min() >= 5 and side.max() <= 160 * 1.2
    assert 0.2 <= (side < 32).mean() <= 0.45
    assert (side >= 96).mean() >= 0.05
    assert set(labels.tolist()) == set(range(len(CLASS_NAMES)))


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_boxes_are_tight_around_the_drawn_shape(name):
    """The rendered mask of each class fills its box to within a pixel on every side."""
    rng = np.random.default_rng(5)
    for _ in range(5):
        mask, (x, y), box = _object(rng, 320, name)
        ys, xs = np.nonzero(np.asarray(mask) > 127)
        drawn = [x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1]
        np.testing.assert_allclose(drawn, box, atol=1.0)


def test_bad_arguments(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        make_synthetic_dataset(tmp_path / "full", 1, 1)
    with pytest.raises(ValueError, match="format"):
        make_synthetic_dataset(tmp_path / "o", 1, 1, format="voc")
    with pytest.raises(ValueError, match="imgsz"):
        make_synthetic_dataset(tmp_path / "o", 1, 1, imgsz=16)
