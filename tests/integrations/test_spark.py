"""The Spark helper on a local session (``local[2]``): the local engine's rows, the schema of
the Parquet output."""

from __future__ import annotations

import os
import sys

import pytest
from pyspark.sql import SparkSession

from scaledet.integrations import spark as sd
from scaledet.integrations.common import stable_image_id
from tests.integrations.conftest import CONF, assert_same_rows


@pytest.fixture(scope="module")
def session():
    # The Python workers run this interpreter (the one with scaledet), not the first on PATH.
    before = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    s = (SparkSession.builder.master("local[2]").appName("scaledet-test")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()
    if before is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = before


def test_spark_rows_equal_the_local_engine(session, weights, images, local_rows):
    paths = sorted(str(p) for p in images.iterdir())  # with bad.jpg: skipped, no rows
    df = session.createDataFrame([(p, i) for i, p in enumerate(paths)], "image string, n int")
    boxes = sd.predict(df.repartition(2), weights, path_col="image", batch=4, conf=float(CONF))
    assert boxes.schema == sd.spark_schema()
    assert [f.name for f in boxes.schema] == ["image_id", "image_path", "x1", "y1", "x2", "y2",
                                              "score", "category_id", "label_index",
                                              "class_name", "keypoints"]
    rows = [r.asDict() for r in boxes.collect()]
    assert_same_rows(rows, local_rows)
    assert all(r["image_id"] == stable_image_id(r["image_path"]) for r in rows)


def test_spark_names_a_wrong_column(session):
    df = session.createDataFrame([("a.jpg",)], "file string")
    with pytest.raises(ValueError, match="no column 'path'.*file"):
        sd.predict(df, "w.safetensors")
