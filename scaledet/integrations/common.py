"""What every distributed engine runs on a batch of image paths: read the files, predict, and
return the box rows in the Parquet output's columns (:mod:`scaledet.inference.writers`), plus one
record per image (its boxes or why it could not be read).

A worker of any engine (a Ray actor, a Spark Python worker) builds one :class:`BatchPredictor`,
which loads the model once, and calls it on each batch it is given.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scaledet.inference.inputs import InputImage
from scaledet.inference.predictor import Predictor
from scaledet.inference.writers import add_rows, empty_columns


def stable_image_id(path: str) -> int:
    """The ``image_id`` of an image predicted by a distributed engine: a 63-bit hash of its path.

    The local path numbers images by their position in the input; a distributed listing has no
    cheap global position, and a hash is the same on every worker, in every retry and resume,
    so the id is as stable as the path (join on ``image_path`` or on this id)."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class ImageRecord:
    """One image of a batch: its boxes, or ``error`` (the reason it could not be read)."""

    path: str
    image_id: int
    boxes: int
    error: str | None = None


def default_threads() -> int:
    """Torch threads for a worker that was not told: ``OMP_NUM_THREADS`` (Spark and Ray set it
    to the worker's CPU share), else 1."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


class BatchPredictor:
    """A model loaded once, called on batches of image paths.

    Args:
        weights: a ``.safetensors`` checkpoint of ``scaledet train``; it must be readable where
            the worker runs (a shared filesystem on a cluster).
        threads: ``torch.set_num_threads`` for this worker (its share of the cores); default
            :func:`default_threads`.
        base: folder that relative image paths are read from (default: the worker's own).
        options: :class:`~scaledet.inference.predictor.Predictor` keywords (``device``,
            ``conf``, ``imgsz``, ``batch_size``, ``nms``, ``iou``, ``max_det``, ``tta``,
            ``slicing``).
    """

    def __init__(self, weights: str | os.PathLike, *, threads: int | None = None,
                 base: str | os.PathLike | None = None, **options: Any) -> None:
        torch.set_num_threads(threads or default_threads())
        self.predictor = Predictor(weights, **options)
        self.base = Path(base) if base is not None else None
        self._pool = ThreadPoolExecutor(max_workers=2)  # decodes the next chunk meanwhile

    def __call__(self, paths: Sequence[str]) -> tuple[dict[str, list], list[ImageRecord]]:
        """Box rows (``{column: values}``, the Parquet output's columns) and one record per path,
        in order. An unreadable or missing file gives a record with ``error``, no rows."""
        columns = empty_columns()
        records: list[ImageRecord] = []
        for chunk, images in self._read_ahead(list(paths)):
            good = [(p, im) for p, im in zip(chunk, images) if isinstance(im, Tensor)]
            results = self.predictor([InputImage(im, p) for p, im in good]) if good else []
            found = {p: r for (p, _), r in zip(good, results)}
            for p, im in zip(chunk, images):
                image_id = stable_image_id(p)
                if p in found:
                    add_rows(columns, image_id, p, found[p])
                    records.append(ImageRecord(p, image_id, len(found[p])))
                else:
                    records.append(ImageRecord(p, image_id, 0, " ".join(str(im).split())))
        return columns, records

    def _read_ahead(self, paths: list[str]) -> Iterator[tuple[list[str], list]]:
        """``(chunk of batch_size paths, their images or read errors)``, the next chunk being
        decoded while the caller predicts the current one."""
        size = self.predictor.batch_size
        chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
        futures: list[list[Future]] = []
        for k, chunk in enumerate(chunks):
            while len(futures) <= min(k + 1, len(chunks) - 1):
                futures.append([self._pool.submit(self._read, p) for p in chunks[len(futures)]])
            yield chunk, [f.result() for f in futures[k]]
            futures[k] = []

    def _read(self, path: str) -> Tensor | Exception:
        from scaledet.data import ImageReadError, read_image
        from scaledet.inference.inputs import as_images

        file = Path(path)
        if self.base is not None and not file.is_absolute():
            file = self.base / file
        try:
            return as_images(read_image(file))[0].image
        except ImageReadError as e:
            return e
