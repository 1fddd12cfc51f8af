"""The engine flags without their optional packages, and the flags that belong to them: one line
that says what to do (no Ray or Spark needed to run these)."""

from __future__ import annotations

import sys

import pytest

from scaledet.cli import main


def test_engine_ray_without_ray_prints_the_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    assert main(["predict", "--weights", str(tmp_path / "w.safetensors"), str(image),
                 "--engine", "ray", "--parquet", str(tmp_path / "d.parquet")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == ("scaledet predict: error: --engine ray needs Ray Data: "
                    "pip install 'scaledet[ray]'")


def test_spark_helper_without_pyspark_names_the_extra(monkeypatch):
    from scaledet.integrations import spark

    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(ValueError, match=r"pip install 'scaledet\[spark\]'"):
        spark.predict(object(), "w.safetensors")


def test_ray_flags_need_engine_ray(tmp_path, capsys):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    assert main(["predict", "--weights", "w.safetensors", str(image), "--workers", "2"]) == 2
    assert "--address and --workers apply to --engine ray" in capsys.readouterr().err
