import json

import pytest

from scaledet.cli import main
from scaledet.data.check import check_dataset, format_report
from tests.data.conftest import coco_dict, write_image
from tests.data.test_voc import make_voc
from tests.data.test_yolo import make_yolo


def _ann(ann_id, image_id, bbox, category_id=1):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox}


@pytest.fixture
def broken_coco(tmp_path):
    """A COCO folder with every problem `data check` knows about, once each."""
    root = tmp_path / "broken"
    images_dir = root / "images" / "train"
    write_image(images_dir / "ok.jpg", 40, 30)
    good = write_image(images_dir / "trunc.jpg", 40, 30).read_bytes()
    (images_dir / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (images_dir / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    write_image(images_dir / "rotated.jpg", 30, 40)
    write_image(images_dir / "empty.jpg", 40, 30)
    names = ["ok.jpg", "trunc.jpg", "corrupt.jpg", "rotated.jpg", "empty.jpg", "gone.jpg"]
    images = [{"id": i + 1, "file_name": n, "width": 40, "height": 30}
              for i, n in enumerate(names)]
    annotations = [
        _ann(1, 1, [1, 1, 10, 10]),
        _ann(2, 1, [1, 1, 10, 10]),                 # duplicate of 1
        _ann(3, 1, [5, 5, 0, 10]),                  # zero width
        _ann(4, 1, [5, 5, 10, -3]),                 # negative height
        _ann(5, 1, [50, 5, 10, 10]),                # entirely outside (x >= 40)
        _ann(6, 1, [35, 20, 10, 10]),               # 5 px past the right edge
        _ann(7, 1, [1, 2, 3]),                      # malformed
        _ann(8, 1, [1, 2, float("nan"), 4]),        # NaN
        _ann(9, 1, [1, 2, 3, 4], category_id=99),   # unknown class
        _ann(10, 1, [20, 5, 10.5, 10]),             # fine
        _ann(11, 1, [20.2, 5, 10.5, 10]),           # fine: IoU 0.96 but another class
        _ann(12, 1, [30, 20, 10.5, 10.5]),          # fine: 0.5 px overhang is tolerated
    ]
    annotations[10]["category_id"] = 2
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(
        coco_dict(images, annotations, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])))
    return root


EXPECTED = {
    "image_missing": ["gone.jpg: no such file"],
    "image_unreadable": ["corrupt.jpg: not a readable image", "trunc.jpg: corrupt or truncated"],
    "size_mismatch": ["rotated.jpg: declared 40x30, actual 30x40"],
    "malformed": ["instances_train.json: annotation id 7: bbox must be 4 numbers"],
    "non_finite": ["instances_train.json: annotation id 8: bbox [1, 2, nan, 4] is not finite"],
    "unknown_class": ["annotation id 9: category_id 99 is not in 'categories'"],
    "empty_box": ["annotation id 3 (ok.jpg): width 0, height 10",
                  "annotation id 4 (ok.jpg): width 10, height -3"],
    "box_outside": ["annotation id 5 (ok.jpg): box [50.0, 5.0, 60.0, 15.0] misses the 40x30"],
    "box_out_of_bounds": ["annotation id 6 (ok.jpg): box [35.0, 20.0, 45.0, 30.0] extends 5.0 px"],
    "duplicate_box": ["annotation id 2 (ok.jpg): IoU 1.000 with annotation id 1, same class"],
    "no_labels": ["images/train/corrupt.jpg", "images/train/empty.jpg",
                  "images/train/gone.jpg", "images/train/rotated.jpg", "images/train/trunc.jpg"],
}


def test_every_problem_found(broken_coco):
    report = check_dataset(broken_coco)
    issues = report["splits"]["train"]["issues"]
    assert set(issues) == set(EXPECTED)
    for kind, fragments in EXPECTED.items():
        assert issues[kind]["count"] == len(fragments), kind
        for fragment, example in zip(sorted(fragments), sorted(issues[kind]["examples"])):
            assert fragment in example, (kind, example)
    warnings = {"box_out_of_bounds", "duplicate_box", "no_labels"}
    assert report["num_warnings"] == sum(len(EXPECTED[k]) for k in warnings)
    assert report["num_errors"] == sum(len(v) for k, v in EXPECTED.items() if k not in warnings)
    split = report["splits"]["train"]
    assert split["classes"] == {"a": 8, "b": 1}
    assert split["sizes"] == {"small": 9, "medium": 0, "large": 0}
    text = format_report(report)
    assert "FAILED" in text and "box partly outside the image" in text and "gone.jpg" in text


def test_cli_exit_codes_and_json(broken_coco, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["data", "check", str(broken_coco), "--json", str(out)]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert json.loads(out.read_text())["num_errors"] > 0


def test_warnings_do_not_fail(coco_folder, capsys):
    """The clean fixture only has an image without labels: a warning, exit code 0."""
    assert main(["data", "check", str(coco_folder)]) == 0
    text = capsys.readouterr().out
    assert "image without labels" in text and "OK: 0 errors, 1 warnings" in text


def test_yolo_problems_name_file_and_line(tmp_path):
    yaml_path = make_yolo(tmp_path, labels={
        "x": "0 0.5 0.5 0.2 0.4\n0 0.5 0.5 0.2 0.4\n1 0.5 0.5 0.2\n7 0.5 0.5 0.1 0.1\n"
             "1 0.95 0.5 0.2 0.2\n",
    })
    (tmp_path / "images" / "train" / "sub" / "y.png").write_bytes(b"broken")
    report = check_dataset(yaml_path)
    issues = report["splits"]["train"]["issues"]
    assert issues["malformed"]["examples"] == [
        "labels/train/x.txt:3: expected 5 numbers, got 4"]
    assert issues["unknown_class"]["examples"] == ["labels/train/x.txt:4: class id 7 is not in 0..2"]
    assert issues["duplicate_box"]["examples"] == [
        "labels/train/x.txt:2: IoU 1.000 with line 1, same class"]
    assert issues["box_out_of_bounds"]["examples"][0].startswith("labels/train/x.txt:5: box")
    assert "images/train/sub/y.png: not a readable image" in issues["image_unreadable"]["examples"][0]
    assert report["splits"]["val"]["issues"]["no_labels"]["count"] == 1


def test_voc_problems(tmp_path):
    root = make_voc(tmp_path / "VOC", {"1": (60, 40, [("dog", (10, 10, 5, 20), False)])},
                    {"train": ["1", "2"]})
    issues = check_dataset(root)["splits"]["train"]["issues"]
    assert issues["malformed"]["examples"] == ["Annotations/2.xml: annotation file is missing"]
    assert issues["empty_box"]["examples"][0].startswith("Annotations/1.xml: object 1:")


def test_unreadable_yolo_image_counts_the_boxes_of_its_labels(tmp_path, capsys):
    """A YOLO image that cannot be read is reported with its labels' boxes, named by file,
    not as an image without labels."""
    yaml_path = make_yolo(tmp_path, labels={
        "x": "0 0.5 0.5 0.2 0.4\n",
        "sub/y": "0 0.5 0.5 0.2 0.4\n1 0.2 0.2 0.1 0.1\n2 0.7 0.7 0.1 0.1\n"
                 "0 0.3 0.6 0.2 0.2\n1 0.5 0.5\n",
    })
    (tmp_path / "images" / "train" / "sub" / "y.png").write_bytes(b"broken")
    issues = check_dataset(yaml_path)["splits"]["train"]["issues"]
    assert issues["image_unreadable"]["examples"] == [
        "images/train/sub/y.png: not a readable image (cannot identify image file y.png); "
        "4 boxes in its labels"]
    assert "no_labels" not in issues
    assert issues["malformed"]["examples"] == [
        "labels/train/sub/y.txt:5: expected 5 numbers, got 3"]
    assert main(["data", "check", str(yaml_path)]) == 1
    text = capsys.readouterr().out
    assert "4 boxes in its labels" in text and "BytesIO" not in text
    assert "y.png: no boxes" not in text
