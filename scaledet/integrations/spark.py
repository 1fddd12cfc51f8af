"""Batch inference in Spark: a DataFrame of image paths to a DataFrame of box rows.

>>> from pyspark.sql import SparkSession
>>> from scaledet.integrations import spark as sd
>>> session = SparkSession.builder.master("local[2]").getOrCreate()
>>> paths = session.read.text("paths.txt").withColumnRenamed("value", "path")
>>> boxes = sd.predict(paths, "best.safetensors", conf=0.25)
>>> boxes.write.parquet("dets.parquet")       # the schema of `scaledet predict --parquet`

:func:`predict` is built on ``mapInPandas``: each Python worker loads the model once (kept for
the worker's later tasks) and turns its partitions' paths into box rows, one row per box, with
the columns and types of the Parquet output (:func:`scaledet.inference.writers.parquet_schema`,
converted to Spark's types), so a query reads Spark's result and ``scaledet predict``'s the same
way. ``image_id`` is a hash of the path, as with ``--engine ray``
(:func:`~scaledet.integrations.common.stable_image_id`). The weights and the images must be
readable where the executors run, and their Python workers must have scaledet installed
(``PYSPARK_PYTHON`` names that interpreter). Needs ``pip install 'scaledet[spark]'``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

INSTALL_HINT = "pip install 'scaledet[spark]'"
_PREDICTORS: dict[tuple, Any] = {}  # one loaded model per Python worker and settings


def spark_schema():
    """The Spark schema of the box rows: the Parquet output's Arrow schema, converted."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from scaledet.inference.writers import parquet_schema

    return from_arrow_schema(parquet_schema())


def predict(df: DataFrame, weights: str | os.PathLike, *, path_col: str = "path",
            batch: int = 8, threads: int | None = None, on_error: str = "skip",
            **options: Any) -> DataFrame:
    """Detect objects in the images whose paths are in ``df[path_col]``.

    Args:
        df: a Spark DataFrame with a string column of image paths (absolute, or relative to
            the executors' working folder).
        weights: a ``.safetensors`` checkpoint of ``scaledet train``.
        path_col: the column holding the paths.
        batch: images per forward pass (within a partition).
        threads: torch threads per Python worker (default: ``OMP_NUM_THREADS``, which Spark
            sets to the cores of a task, else 1).
        on_error: ``"skip"``: an unreadable or missing image gives no rows and a line naming
            it and the reason on the executor's stderr; ``"raise"``: the task fails naming it.
        options: :class:`~scaledet.inference.predictor.Predictor` keywords (``conf``,
            ``imgsz``, ``device``, ``nms``, ``iou``, ``max_det``, ``tta``, ``slicing``).

    Returns:
        A DataFrame of box rows (lazily evaluated, as any Spark transformation), the schema of
        ``scaledet predict --parquet``: ``image_id, image_path, x1, y1, x2, y2, score,
        category_id, label_index, class_name``.
    """
    try:
        import pandas  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError:
        raise ValueError(f"the Spark helper needs pyspark and pandas: {INSTALL_HINT}") from None
    if path_col not in df.columns:
        raise ValueError(f"predict: no column {path_col!r} in the DataFrame (it has "
                         f"{', '.join(df.columns)}); pass path_col=")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    settings = {"weights": os.fspath(weights), "threads": threads, "on_error": on_error,
                "options": {**options, "batch_size": batch}}
    column = path_col

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from _predict_frames(frames, column, settings)

    return df.select(path_col).mapInPandas(run, spark_schema())


def _predict_frames(frames: Iterator[pd.DataFrame], column: str,
                    settings: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """The ``mapInPandas`` function: paths in, box rows out (one frame per input frame)."""
    import pyarrow as pa

    from scaledet.inference.writers import parquet_schema

    predictor = _predictor(settings)
    schema = parquet_schema()
    for frame in frames:
        paths = [str(p) for p in frame[column].tolist() if p is not None and str(p).strip()]
        columns, records = predictor(paths)
        for r in records:
            if r.error is None:
                continue
            if settings["on_error"] == "raise":
                raise ValueError(r.error)
            print(f"scaledet: skipped {r.path}: {r.error}", file=sys.stderr)
        yield pa.table(columns, schema=schema).to_pandas()


def _predictor(settings: dict[str, Any]):
    """The worker's :class:`~scaledet.integrations.common.BatchPredictor` for ``settings``,
    loaded on first use."""
    from scaledet.integrations.common import BatchPredictor

    options = settings["options"]
    key = (settings["weights"], settings["threads"], repr(sorted(options.items())))
    if key not in _PREDICTORS:
        _PREDICTORS[key] = BatchPredictor(settings["weights"], threads=settings["threads"],
                                          **options)
    return _PREDICTORS[key]
