"""scaledet.plots: every picture scaledet writes, in one place.

* :mod:`~scaledet.plots.draw`: boxes drawn on images (annotated predictions, the training
  batch ``train_batch.jpg``).
* :mod:`~scaledet.plots.training`: ``losses.png`` and ``map.png`` from ``metrics.csv``.
* :mod:`~scaledet.plots.labels`: ``labels.png``, objects per class and object sizes.
* :mod:`~scaledet.plots.pr`: precision-recall curves of a COCO evaluation.
* :mod:`~scaledet.plots.confusion`: the confusion-matrix heat map.

Charts use matplotlib's Agg canvas directly (no pyplot, no global backend switch), so they work
headless and inside other programs. The package sits at the evaluation layer: it imports
``ops``, ``data`` and ``evaluation`` only, so training, inference and the CLI can all use it.
"""
