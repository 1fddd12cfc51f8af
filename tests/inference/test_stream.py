import json
import sys

import numpy as np
import pytest
from PIL import Image

from scaledet.cli import main
from scaledet.inference import Predictor, writers
from scaledet.inference.stream import predict_stream
from tests.inference.conftest import CLASS_NAMES


@pytest.fixture
def folder(tmp_path):
    """Five readable images of various sizes, one corrupt file, one non-image file."""
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(64, 64), (40, 90), (90, 40), (64, 64), (50, 50)]):
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"im{i}{suffix}")
    (d / "im2b_bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (d / "notes.txt").write_text("not an image")
    return d


def _files(folder):
    return sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))


def test_predict_json_errors_and_images(weights, folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--weights", weights, str(folder), "--out", str(out),
                 "--batch", "2"]) == 0
    text = capsys.readouterr().out
    assert "6 images" in text and "1 unreadable" in text
    results = json.loads((out / "predictions.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score", "file_name"} <= set(results[0])
    files = [str(p) for p in _files(folder)]
    assert {r["file_name"] for r in results} <= set(files) - {files[3]}
    assert all(files[r["image_id"] - 1] == r["file_name"] for r in results)
    (line,) = (out / "errors.txt").read_text().splitlines()
    assert line.startswith(str(folder / "im2b_bad.jpg") + "\t")
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"im{i}.jpg" for i in range(5)]


def test_parquet_schema_and_row_counts(weights, folder, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out, dataset = tmp_path / "out", tmp_path / "dets.parquet"
    common = ["predict", "--weights", weights, str(folder), "--out", str(out), "--no-images"]
    assert main([*common, "--json", str(tmp_path / "dets.json")]) == 0
    assert main([*common, "--parquet", str(dataset)]) == 0
    table = pq.read_table(dataset)  # the folder, as Spark / Hive / DuckDB read it
    assert table.schema.names == ["image_id", "image_path", "x1", "y1", "x2", "y2", "score",
                                  "label", "class_name"]
    assert [str(t) for t in table.schema.types] == ["int64", "string", "float", "float",
                                                    "float", "float", "float", "int32", "string"]
    coco = json.loads((tmp_path / "dets.json").read_text())
    assert table.num_rows == len(coco) > 0
    rows = table.to_pylist()
    per_image = {}
    for r in coco:
        per_image[r["file_name"]] = per_image.get(r["file_name"], 0) + 1
    assert {p: sum(r["image_path"] == p for r in rows) for p in per_image} == per_image
    for r, c in zip(sorted(rows, key=lambda r: (r["image_id"], -r["score"])),
                    sorted(coco, key=lambda c: (c["image_id"], -c["score"]))):
        assert r["class_name"] == CLASS_NAMES[r["label"]] and r["label"] + 1 == c["category_id"]
        assert r["x2"] - r["x1"] == pytest.approx(c["bbox"][2], abs=0.02)
    assert (dataset / "_SUCCESS").is_file() and not (out / "predictions.json").exists()
    assert not list(out.glob("*.jpg"))


class Interrupted(Exception):
    pass


def _interrupt_on_call(predictor, n):
    """Make the predictor's n-th call fail, as a killed run would stop."""
    calls = {"n": 0}
    original = predictor.__call__

    class Flaky:
        def __getattr__(self, name):
            return getattr(predictor, name)

        def __call__(self, images):
            calls["n"] += 1
            if calls["n"] == n:
                raise Interrupted
            return original(images)

    return Flaky(), calls


@pytest.mark.parametrize("parquet", [False, True])
def test_resume_skips_written_images_and_repairs_a_killed_output(weights, folder, tmp_path,
                                                                 monkeypatch, parquet):
    if parquet:
        pytest.importorskip("pyarrow")
        monkeypatch.setattr(writers, "IMAGES_PER_PART", 1)  # a part per batch
    files = _files(folder)
    predictor = Predictor(weights, batch_size=2)
    name = "dets.parquet" if parquet else "dets.json"
    kw = {"parquet": parquet, "errors": tmp_path / "errors.txt", "progress_bar": False}
    fresh = predict_stream(predictor, files, tmp_path / "fresh" / name, **kw)
    flaky, _ = _interrupt_on_call(predictor, 3)  # batches [0, 1], [2, 3] done, [4, 5] not
    with pytest.raises(Interrupted):
        predict_stream(flaky, files, tmp_path / name, **kw)
    if not parquet:  # a kill in the middle of a write: half an entry, half a log line
        with open(tmp_path / name, "a") as f:
            f.write(',\n{"image_id": 6, "categ')
        with open(tmp_path / (name + ".progress"), "a") as f:
            f.write("999:9\t/half/a/li")
    counting, calls = _interrupt_on_call(predictor, -1)
    resumed = predict_stream(counting, files, tmp_path / name, resume=True, **kw)
    assert resumed["skipped"] == 4 and calls["n"] == 1  # one batch of 2 images left
    assert fresh["errors"] == 1 and resumed["errors"] == 0  # the bad file was in batch 2
    assert _read(tmp_path / name, parquet) == _read(tmp_path / "fresh" / name, parquet)
    # Everything done: a further resume reads nothing and leaves the output as it is.
    again = predict_stream(counting, files, tmp_path / name, resume=True, **kw)
    assert again["skipped"] == 6 and calls["n"] == 1
    assert _read(tmp_path / name, parquet) == _read(tmp_path / "fresh" / name, parquet)
    assert len((tmp_path / "errors.txt").read_text().splitlines()) == 1


def _read(path, parquet: bool):
    if parquet:
        import pyarrow.parquet as pq

        return sorted(pq.read_table(path).to_pylist(), key=lambda r: (r["image_id"], r["x1"]))
    return json.loads(path.read_text())


def test_tta_slice_and_nms_flags(weights, folder, tmp_path):
    base = ["predict", "--weights", weights, str(folder / "im1.png"), "--no-images"]
    for flags in (["--tta", "scales=1,1.5,flip,snip", "--nms", "diou"],
                  ["--tta", "scales=0.5,1", "--merge", "nms", "--nms", "soft-gaussian"],
                  ["--slice", "48", "--overlap", "0.25", "--max-det", "5"],
                  ["--slice", "48", "--full", "--merge", "nms", "--iou", "0.5"]):
        out = tmp_path / "_".join(flags).replace("=", "").replace(",", "")
        assert main([*base, "--out", str(out), *flags]) == 0, flags
        results = json.loads((out / "predictions.json").read_text())
        assert isinstance(results, list)
        if "--max-det" in flags:
            assert len(results) <= 5
    for flags in (["--tta", "scales=1", "--slice", "48"], ["--slice", "48", "--merge", "wbf"],
                  ["--merge", "nmm"], ["--tta", "sizes=1"]):
        assert main([*base, "--out", str(tmp_path / "bad"), *flags]) == 2, flags


def test_parquet_without_pyarrow_is_a_clear_error(weights, folder, tmp_path, monkeypatch,
                                                   capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["predict", "--weights", weights, str(folder), "--out", str(tmp_path),
                 "--parquet", str(tmp_path / "x.parquet")]) == 2
    assert "scaledet[parquet]" in capsys.readouterr().err
