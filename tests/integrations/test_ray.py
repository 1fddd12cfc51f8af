"""``scaledet predict --engine ray`` on a local Ray cluster (2 CPUs, one per module): the same
rows as the local engine, unreadable and missing images as error rows, listings as sources, and
a resume after a killed run that leaves every image exactly once."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data

from scaledet.cli import main
from scaledet.inference.writers import parquet_schema
from scaledet.integrations import ray as ray_engine
from scaledet.integrations.common import stable_image_id
from tests.integrations.conftest import CONF, assert_same_rows


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _manifest(dataset) -> list[dict]:
    return pq.read_table(dataset / "_images").to_pylist()


def test_rows_equal_the_local_engine_and_bad_images_are_error_rows(weights, images, local_rows,
                                                                     tmp_path, capsys):
    dataset, out = tmp_path / "dets.parquet", tmp_path / "out"
    assert main(["predict", "--weights", weights, str(images), "--engine", "ray", "--workers",
                 "2", "--batch", "4", "--parquet", str(dataset), "--out", str(out), "--conf",
                 CONF]) == 0
    printed = capsys.readouterr().out
    assert "13 images (0 already done, 1 unreadable)" in printed and "on 2 Ray workers" in printed
    table = pq.read_table(dataset)  # the folder, as the local one is read
    assert table.schema.remove_metadata() == parquet_schema()
    rows = table.to_pylist()
    assert_same_rows(rows, local_rows)
    assert all(r["image_id"] == stable_image_id(r["image_path"]) for r in rows)
    assert (dataset / "_SUCCESS").is_file() and not (dataset / "_listing").exists()
    (line,) = (out / "errors.txt").read_text().splitlines()
    assert line.startswith(f"{images / 'bad.jpg'}\t") and "not a readable image" in line
    assert sorted(r["image_path"] for r in _manifest(dataset)) == sorted(
        str(p) for p in images.iterdir())


def test_listings_as_sources_with_a_missing_path(weights, images, local_rows, tmp_path):
    files = sorted(str(p) for p in images.iterdir() if p.name != "bad.jpg")
    missing = str(images / "gone.jpg")
    text = tmp_path / "paths.txt"
    text.write_text("\n".join(files[:6] + [missing, ""]) + "\n")
    listing = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"path": files[6:] + [str(images / "bad.jpg")]}), listing)
    dataset = tmp_path / "dets.parquet"
    summary = ray_engine.predict([text, listing], weights, dataset,
                                 errors=tmp_path / "errors.txt", workers=1, images_per_part=4,
                                 conf=float(CONF), batch_size=4)
    assert (summary["images"], summary["errors"]) == (14, 2)
    assert_same_rows(pq.read_table(dataset).to_pylist(), local_rows)
    errors = dict(line.split("\t") for line in (tmp_path / "errors.txt").read_text().splitlines())
    assert set(errors) == {missing, str(images / "bad.jpg")}
    assert "cannot read image" in errors[missing]


def test_resume_after_a_killed_run_gives_each_image_once(weights, images, local_rows, tmp_path,
                                                         capsys):
    dataset = tmp_path / "dets.parquet"
    ray_engine.predict([images], weights, dataset, errors=tmp_path / "errors.txt", workers=2,
                       images_per_part=3, conf=float(CONF), batch_size=4)
    parts = sorted(dataset.glob("part-*.parquet"))
    assert len(parts) >= 4
    sizes = {f.stem: pq.read_metadata(f).num_rows for f in (dataset / "_images").iterdir()}
    # A killed run: no _SUCCESS; one part lost with its record, one part whose record was never
    # written (killed between the renames), a part committed twice under two names, and a
    # half-written temporary file.
    (dataset / "_SUCCESS").unlink()
    lost, uncommitted, twice = (p.name[5:-8] for p in parts[:3])
    (dataset / f"part-{lost}.parquet").unlink()
    (dataset / "_images" / f"{lost}.parquet").unlink()
    (dataset / "_images" / f"{uncommitted}.parquet").unlink()
    shutil.copy(dataset / f"part-{twice}.parquet", dataset / "part-0000copy.parquet")
    shutil.copy(dataset / "_images" / f"{twice}.parquet", dataset / "_images" / "0000copy.parquet")
    (dataset / ".part-x.parquet.tmp").write_bytes(b"half")
    capsys.readouterr()
    assert main(["predict", "--weights", weights, str(images), "--engine", "ray", "--workers",
                 "1", "--parquet", str(dataset), "--out", str(tmp_path), "--conf", CONF,
                 "--resume"]) == 0
    printed = capsys.readouterr().out
    done_before = 13 - sizes[lost] - sizes[uncommitted]
    assert f"13 images ({done_before} already done, 1 unreadable)" in printed
    assert_same_rows(pq.read_table(dataset).to_pylist(), local_rows)
    paths = [r["image_path"] for r in _manifest(dataset)]
    assert sorted(paths) == sorted(str(p) for p in images.iterdir())  # each exactly once
    assert (dataset / "_SUCCESS").is_file() and not list(dataset.glob(".*"))
    (line,) = (tmp_path / "errors.txt").read_text().splitlines()
    assert line.startswith(str(images / "bad.jpg"))
