import json
import os
import sys
from dataclasses import asdict

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from scaledet.cli import main
from scaledet.inference import Predictor, writers
from scaledet.inference.stream import predict_stream
from tests.inference.conftest import CLASS_NAMES, ColourBoxDetector, draw, tiny_model


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


@pytest.fixture(scope="module")
def weights_7_8_9(tmp_path_factory) -> str:
    """The tiny checkpoint with dataset category ids 7, 8, 9 (not index + 1)."""
    from scaledet.models.checkpoint import save_weights

    model = tiny_model()
    path = tmp_path_factory.mktemp("weights") / "tiny789.safetensors"
    save_weights(path, model.state_dict(), {
        "model": "fcos-n", "model_config": asdict(model.config), "class_names": CLASS_NAMES,
        "category_ids": [7, 8, 9], "imgsz": 96})
    return str(path)


def test_json_and_parquet_in_one_run_join_the_same_way(weights_7_8_9, folder, tmp_path,
                                                         capsys):
    out, dataset, coco_path = tmp_path / "out", tmp_path / "dets.parquet", tmp_path / "dets.json"
    assert main(["predict", "--weights", weights_7_8_9, str(folder), "--out", str(out),
                 "--no-images", "--json", str(coco_path), "--parquet", str(dataset)]) == 0
    printed = capsys.readouterr().out
    assert f"COCO results: {coco_path}\n" in printed
    assert f"Parquet dataset: {dataset}{os.sep}\n" in printed
    table = pq.read_table(dataset)  # the folder, as Spark / Hive / DuckDB read it
    assert table.schema.names == ["image_id", "image_path", "x1", "y1", "x2", "y2", "score",
                                  "category_id", "label_index", "class_name", "keypoints"]
    assert [str(t) for t in table.schema.types] == ["int64", "string", "float", "float",
                                                    "float", "float", "float", "int64", "int32",
                                                    "string", "list<element: float>"]
    assert table.column("keypoints").null_count == table.num_rows  # no pose model
    coco = json.loads(coco_path.read_text())
    assert table.num_rows == len(coco) > 0
    assert len({c["category_id"] for c in coco}) > 1
    # Every box is the same row in both: image id and file, category id, score and box.
    rows = sorted(table.to_pylist(), key=lambda r: (r["image_id"], -r["score"], r["x1"]))
    for r, c in zip(rows, sorted(coco, key=lambda c: (c["image_id"], -c["score"], c["bbox"][0]))):
        assert (r["image_id"], r["image_path"]) == (c["image_id"], c["file_name"])
        assert r["category_id"] == c["category_id"] == [7, 8, 9][r["label_index"]]
        assert r["class_name"] == CLASS_NAMES[r["label_index"]]
        assert r["score"] == pytest.approx(c["score"], abs=1e-5)
        assert [r["x1"], r["y1"], r["x2"] - r["x1"], r["y2"] - r["y1"]] == pytest.approx(
            c["bbox"], abs=0.02)
    assert (dataset / "_SUCCESS").is_file() and not (out / "predictions.json").exists()
    assert not list(out.glob("*.jpg"))


def test_parquet_alone_writes_no_json(weights, folder, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--weights", weights, str(folder), "--out", str(out), "--no-images",
                 "--parquet", str(tmp_path / "dets.parquet")]) == 0
    assert (tmp_path / "dets.parquet" / "_SUCCESS").is_file()
    assert not (out / "predictions.json").exists()


def test_every_place_written_to_is_printed(weights, folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no --out: annotated images go to ./runs/predict
    assert main(["predict", "--weights", weights, str(folder), "--json", "only.json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    default = os.path.join("runs", "predict")
    assert lines[1:] == [f"annotated images: {default}{os.sep} (5 written)",
                         "COCO results: only.json",
                         f"unreadable images listed in {os.path.join(default, 'errors.txt')}"]
    assert len(list((tmp_path / default).glob("*.jpg"))) == 5
    assert (tmp_path / "only.json").is_file()
    # Nothing unreadable, no images: only the json is written, and only it is named.
    good = tmp_path / "good"
    good.mkdir()
    for f in _files(folder)[:2]:
        (good / f.name).write_bytes(f.read_bytes())
    assert main(["predict", "--weights", weights, str(good), "--json", "two.json", "--out",
                 "elsewhere", "--no-images"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["COCO results: two.json"]
    assert not (tmp_path / "elsewhere").exists()


def test_predict_numbers_images_with_the_ground_truth_ids(weights, folder, tmp_path, capsys):
    files = _files(folder)
    gt = {"images": [{"id": 40 + k, "file_name": f"x/{f.name}"} for k, f in enumerate(files[1:])],
          "categories": [{"id": c} for c in (1, 2, 3)], "annotations": []}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    out = tmp_path / "out"
    assert main(["predict", "--weights", weights, str(folder), "--out", str(out), "--no-images",
                 "--gt", str(tmp_path / "gt.json")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"image ids of {tmp_path / 'gt.json'}: 5 of 6 images matched by file name; the other 1 "
        "are not in it, numbered from 45")
    ids = {f.name: 40 + k for k, f in enumerate(files[1:])} | {files[0].name: 45}
    results = json.loads((out / "predictions.json").read_text())
    assert results and all(ids[os.path.basename(r["file_name"])] == r["image_id"]
                           for r in results)


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


def test_resume_of_both_outputs_killed_between_their_logs(weights, folder, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr(writers, "IMAGES_PER_PART", 1)  # a part per batch
    files = _files(folder)
    predictor = Predictor(weights, batch_size=2)
    kw = {"errors": tmp_path / "errors.txt", "progress_bar": False}
    fresh = tmp_path / "fresh"
    predict_stream(predictor, files, fresh / "d.json", parquet=fresh / "d.parquet", **kw)
    flaky, _ = _interrupt_on_call(predictor, 3)  # batches [0, 1], [2, 3] done, [4, 5] not
    with pytest.raises(Interrupted):
        predict_stream(flaky, files, tmp_path / "d.json", parquet=tmp_path / "d.parquet", **kw)
    # Killed after the json's log was marked for batch [2, 3] but before the Parquet one was.
    log = tmp_path / "d.parquet" / "_progress.tsv"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 4
    log.write_text("".join(lines[:2]))
    counting, calls = _interrupt_on_call(predictor, -1)
    resumed = predict_stream(counting, files, tmp_path / "d.json", parquet=tmp_path / "d.parquet",
                             resume=True, **kw)
    assert resumed["skipped"] == 2 and calls["n"] == 2  # both outputs redo batch [2, 3]
    assert _read(tmp_path / "d.json", False) == _read(fresh / "d.json", False)
    assert _read(tmp_path / "d.parquet", True) == _read(fresh / "d.parquet", True)
    assert len((tmp_path / "errors.txt").read_text().splitlines()) == 1  # not listed twice



def test_resume_refuses_parts_of_the_older_columns(weights, folder, tmp_path):
    import pyarrow as pa

    dataset = tmp_path / "d.parquet"
    dataset.mkdir()
    old = pa.table({"image_id": [1], "label": pa.array([0], pa.int32())})  # "label", no ids
    pq.write_table(old, dataset / "part-00000.parquet")
    done = _files(folder)[0].resolve()
    (dataset / "_progress.tsv").write_text(f"1\t{done}\n")
    (tmp_path / "d.json").write_text("[")
    (tmp_path / "d.json.progress").write_text(f"1:0\t{done}\n")
    with pytest.raises(ValueError, match="written with other columns"):
        predict_stream(Predictor(weights), _files(folder), tmp_path / "d.json", parquet=dataset,
                       resume=True, errors=tmp_path / "errors.txt", progress_bar=False)
    assert (dataset / "part-00000.parquet").is_file()

# ---- each option of predict takes effect ------------------------------------------------------
# ColourBoxDetector (one box per class colour in its input, see conftest) behind the CLI, so that
# the detections each option must give are known: a 400 x 400 image, letterboxed to 64 px.
SCENE = [(2, (300, 40, 305, 45)),      # tiny: 0.8 px at 64 px, lost by the letterbox
         (1, (110, 100, 150, 140)),    # cut by the tile edges x = 128 (128 px tiles)
         (0, (20, 250, 270, 370))]     # larger than a tile


@pytest.fixture
def stub_cli(tmp_path, monkeypatch):
    """``scaledet predict`` on the scene with the stub detector: flags -> {class: [(score,
    [x1, y1, x2, y2]), ...]} of the json."""
    def stub(weights, *, imgsz=None, **kw):
        return Predictor.from_model(ColourBoxDetector(), CLASS_NAMES, imgsz=imgsz or 64, **kw)

    monkeypatch.setattr("scaledet.cli.predict.Predictor", stub)
    image = tmp_path / "scene.png"
    Image.fromarray(draw(400, 400, SCENE).permute(1, 2, 0).numpy()).save(image)

    def run(*flags: str) -> dict[int, list[tuple[float, list[float]]]]:
        out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
        assert main(["predict", "--weights", "stub", str(image), "--out", str(out),
                     "--no-images", "--conf", "0.01", *flags]) == 0, flags
        found: dict[int, list] = {}
        for d in json.loads((out / "predictions.json").read_text()):
            x, y, w, h = d["bbox"]
            found.setdefault(d["category_id"] - 1, []).append((d["score"], [x, y, x + w, y + h]))
        return found

    return run


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def test_slicing_finds_the_tiny_object_in_image_pixels(stub_cli):
    plain = stub_cli()
    assert sorted(plain) == [0, 1]  # the letterboxed pass misses the tiny object
    sliced = stub_cli("--slice", "128", "--overlap", "0.25")
    # Tiles run at native resolution: exact boxes, shifted from tile to image pixels.
    assert sliced[2] == [(0.7, [300, 40, 305, 45])]
    assert sliced[1] == [(0.8, [110, 100, 150, 140])]  # the cut pieces joined (NMM)
    assert len(sliced[0]) > 1  # the large object in pieces: no tile holds it whole
    # --full: the whole-image pass joins them into one box.
    full = stub_cli("--slice", "128", "--full")
    assert len(full[0]) == 1 and full[0][0][1] == pytest.approx([20, 250, 270, 370], abs=400 / 64)
    # --merge nms keeps the pieces of the cut object apart (IoU, not intersection over smaller).
    assert len(stub_cli("--slice", "128", "--overlap", "0.25", "--merge", "nms")[1]) == 2


def test_tta_adds_the_upscaled_pass(stub_cli):
    tta = stub_cli("--tta", "scales=1,4")
    # At 4x (256 px) the tiny object is visible; WBF averages it over the 2 passes.
    (score, box), = tta[2]
    assert score == pytest.approx(0.7 / 2) and box == pytest.approx([300, 40, 305, 45], abs=1)
    assert len(tta[0]) == len(tta[1]) == 1  # the two passes' boxes fused


def test_nms_variants_keep_the_scores_their_definitions_give(stub_cli):
    # Two passes (64 and 128 px) see each object: two overlapping boxes of equal score.
    flags = ("--tta", "scales=1,2", "--merge", "nms")
    hard = stub_cli(*flags, "--nms", "hard")
    assert {c: len(v) for c, v in hard.items()} == {0: 1, 1: 1, 2: 1}  # the overlap removed
    assert stub_cli(*flags, "--nms", "diou") == hard
    both = stub_cli(*flags, "--nms", "hard", "--iou", "0.99")  # below --iou: both kept
    assert {c: len(v) for c, v in both.items()} == {0: 2, 1: 2, 2: 1}
    gaussian = stub_cli(*flags, "--nms", "soft-gaussian")
    linear = stub_cli(*flags, "--nms", "soft-linear")
    for c, score in ((0, 0.9), (1, 0.8)):
        (s1, b1), (s2, b2) = both[c]
        iou = _iou(b1, b2)
        assert iou > 0.6  # the default --iou: soft-linear decays it
        # Soft-NMS keeps the overlapping box with its score decayed: gaussian s * exp(-iou^2 /
        # 0.5), linear s * (1 - iou); the best box keeps its score.
        assert [s for s, _ in gaussian[c]] == pytest.approx(
            [score, score * np.exp(-iou**2 / 0.5)], abs=2e-3)
        assert [s for s, _ in linear[c]] == pytest.approx([score, score * (1 - iou)], abs=2e-3)
    assert gaussian[2] == linear[2] == hard[2]  # one box: nothing to decay


def test_max_det_and_bad_combinations(stub_cli, tmp_path):
    capped = stub_cli("--slice", "128", "--max-det", "2")
    assert sum(len(v) for v in capped.values()) == 2
    assert list(capped) == [0] and [s for s, _ in capped[0]] == [0.9, 0.9]  # the best two
    base = ["predict", "--weights", "stub", str(tmp_path / "scene.png"), "--no-images"]
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


@pytest.mark.parametrize("resume", [False, True])
def test_a_parquet_folder_written_by_ray_is_refused_and_left_as_it_is(tmp_path, resume):
    """``--engine ray`` names its parts by a hash and lists them in ``_images/``: the local
    writer must say so (not crash parsing ``part-<hash>`` as a number) and touch nothing."""
    dataset = tmp_path / "dets.parquet"
    (dataset / "_images").mkdir(parents=True)
    part = dataset / "part-3fa2c9e1.parquet"
    part.write_bytes(b"a part")
    log = dataset / "_progress.tsv"
    log.write_text("3fa2c9e1\t/images/a.jpg\n")
    for open_it in (lambda: writers.Outputs(None, dataset, resume),
                    lambda: writers.ParquetWriter(dataset, "1" if resume else None)):
        with pytest.raises(ValueError, match="written by --engine ray") as e:
            open_it()
        assert str(dataset) in str(e.value) and "resume it with --engine ray" in str(e.value)
    assert part.read_bytes() == b"a part" and log.read_text() == "3fa2c9e1\t/images/a.jpg\n"


def test_the_local_writer_parses_only_its_own_numbered_parts(tmp_path):
    dataset = tmp_path / "dets.parquet"
    dataset.mkdir()
    for name in ("part-00000", "part-00001", "part-00002", "part-3fa2c9e1"):
        pq.write_table(writers.parquet_schema().empty_table(), dataset / f"{name}.parquet")
    writers.ParquetWriter(dataset, "1")  # keeps part 0, removes 1 and 2, leaves the stranger
    left = sorted(p.name for p in dataset.iterdir())
    assert left == ["part-00000.parquet", "part-3fa2c9e1.parquet"]
