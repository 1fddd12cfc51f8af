"""scaledet.integrations: batch inference on distributed engines that users already run.

* :mod:`scaledet.integrations.ray`: ``scaledet predict --engine ray``, prediction over millions
  of images on a Ray cluster (Ray Data actors), writing the same Parquet dataset as the local
  ``--parquet`` path, resumable and idempotent (``pip install 'scaledet[ray]'``).
* :mod:`scaledet.integrations.spark`: :func:`scaledet.integrations.spark.predict`, a Spark
  DataFrame of image paths to a DataFrame of box rows with the Parquet output's schema
  (``pip install 'scaledet[spark]'``).

Both engines are optional dependencies, imported only when used; the rows they write come from
:mod:`scaledet.integrations.common`, which builds them with the local writer's schema
(:func:`scaledet.inference.writers.parquet_schema`).
"""
