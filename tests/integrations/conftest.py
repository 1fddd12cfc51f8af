"""Shared fixtures of the distributed-engine tests: a tiny checkpoint, a folder of generated
images with one corrupt file, and the local engine's Parquet rows for it (the reference)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.inference.conftest import CLASS_NAMES, tiny_model

CONF = "0.05"  # random weights: a low threshold so that every image has boxes


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> str:
    from scaledet.models.checkpoint import save_weights

    model = tiny_model()
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, model.state_dict(), {
        "model": "fcos-n", "model_config": asdict(model.config), "class_names": CLASS_NAMES,
        "category_ids": [1, 2, 3], "imgsz": 96})
    return str(path)


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """12 images of the built-in dataset (96 px) and one corrupt file, ``bad.jpg``."""
    from scaledet.cli import main

    root = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", str(root), "--train", "12", "--val", "0", "--imgsz", "96"]) == 0
    folder = root / "images" / "train"
    (folder / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


@pytest.fixture(scope="session")
def local_rows(weights, images, tmp_path_factory) -> list[dict]:
    """The local engine's Parquet rows for ``images``."""
    import pyarrow.parquet as pq

    from scaledet.cli import main

    out = tmp_path_factory.mktemp("local")
    assert main(["predict", "--weights", weights, str(images), "--parquet",
                 str(out / "dets.parquet"), "--out", str(out), "--no-images", "--conf", CONF,
                 "--batch", "4"]) == 0
    rows = pq.read_table(out / "dets.parquet").to_pylist()
    assert len({r["image_path"] for r in rows}) == 12
    return rows


def assert_same_rows(rows: list[dict], expected: list[dict], tol: float = 1e-4) -> None:
    """The same boxes, order-insensitive: path, label, category and class name equal, box
    corners and score within ``tol`` (``image_id`` is left out: engines number differently)."""
    assert len(rows) == len(expected)
    left = list(rows)
    keys = ("x1", "y1", "x2", "y2", "score")
    for e in expected:
        match = next((r for r in left if all(r[k] == e[k] for k in (
            "image_path", "label_index", "category_id", "class_name"))
            and all(abs(r[k] - e[k]) <= tol for k in keys)), None)
        assert match is not None, f"no row matches {e}"
        left.remove(match)
