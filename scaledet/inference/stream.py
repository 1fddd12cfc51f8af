"""Prediction over many image files, as ``scaledet predict`` runs it.

:func:`predict_stream` streams over the images: decoding runs ahead in two threads, results are
written batch by batch to a COCO-results json, a Parquet dataset or both
(:mod:`scaledet.inference.writers`), nothing accumulates in memory; ``--resume`` skips the images
already written, unreadable images go to ``OUT/errors.txt``.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from scaledet.inference.inputs import InputImage
from scaledet.inference.predictor import Predictor

if TYPE_CHECKING:
    from scaledet.inference.writers import ErrorLog, Outputs


def predict_stream(predictor: Predictor, files: Sequence[Path],
                   output: str | os.PathLike | None = None, *,
                   parquet: str | os.PathLike | bool | None = None, resume: bool = False,
                   errors: Path, images_dir: Path | None = None,
                   progress_bar: bool | None = None,
                   image_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """Run ``predictor`` over ``files`` writing a COCO-results json to ``output`` and / or a
    Parquet dataset to ``parquet`` (at least one of them; both get the same detections).

    Args:
        parquet: the Parquet dataset folder; ``True`` means ``output`` is one (and no json).
        resume: continue the run that wrote the outputs, skipping its logged images.
        errors: the file listing unreadable images.
        images_dir: where annotated copies go (None: not written).
        progress_bar: tqdm bar (None: only on a terminal).
        image_ids: the image id written for each file (e.g. a ground truth's ids); default
            the positions in ``files``, 1-based.

    Returns:
        ``{"images", "skipped", "errors", "boxes", "poses", "annotated", "seconds",
        "images_per_s", "outputs", "errors_file"}``: ``poses`` the detections with keypoints,
        ``annotated`` images written to ``images_dir`` by this
        run, ``outputs`` the json and / or Parquet paths, ``errors_file`` the list of
        unreadable images (None when there is none).
    """
    from tqdm import tqdm

    from scaledet.inference.writers import ErrorLog, Outputs

    if image_ids is not None and len(image_ids) != len(files):
        raise ValueError(f"{len(image_ids)} image ids for {len(files)} files")
    ids = list(image_ids) if image_ids is not None else list(range(1, len(files) + 1))
    if isinstance(parquet, bool):
        output, parquet = (None, output) if parquet else (output, None)
    writer = Outputs(output, parquet, resume)
    error_log = ErrorLog(errors, resume)
    keys = [str(Path(f).resolve()) for f in files]
    todo = [(n, f, k) for n, (f, k) in enumerate(zip(files, keys)) if k not in writer.done]
    names = _annotated_names(files)
    stats = {"images": len(files), "skipped": len(files) - len(todo), "errors": 0, "boxes": 0,
             "poses": 0, "annotated": 0}
    bar = tqdm(total=len(files), initial=stats["skipped"], unit="img", dynamic_ncols=True,
               disable=None if progress_bar is None else not progress_bar)
    pending: list[str] = []
    failed: list[tuple[str, str]] = []
    start = time.perf_counter()
    try:
        for batch in _batches(_read_ahead(todo, 2 * predictor.batch_size), predictor.batch_size):
            good = [(i, f, im) for i, f, _, im in batch if isinstance(im, Tensor)]
            failed += [(str(f), str(im)) for _, f, _, im in batch if not isinstance(im, Tensor)]
            results = predictor([InputImage(im, str(f)) for _, f, im in good])
            for (n, f, _), r in zip(good, results):
                writer.add(ids[n], str(f), r)
                stats["boxes"] += len(r)
                stats["poses"] += int(r.posed.sum())
                if images_dir is not None:
                    r.plot(images_dir / names[n])
                    stats["annotated"] += 1
            pending += [k for _, _, k, _ in batch]
            _commit(writer, writer.flush(), error_log, pending, failed)
            bar.update(len(batch))
        _commit(writer, writer.flush(force=True), error_log, pending, failed)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    done = len(todo)
    return {**stats, "errors": error_log.count, "seconds": seconds,
            "images_per_s": done / max(seconds, 1e-9), "outputs": writer.paths,
            "errors_file": error_log.path if error_log.exists else None}


def _commit(writer: Outputs, tokens: list[str] | None, error_log: ErrorLog, pending: list[str],
            failed: list[tuple[str, str]]) -> None:
    """Once the writers say everything queued is durable: log errors and the done images."""
    if tokens is None:
        return
    error_log.write(failed)
    writer.mark(tokens, pending)
    pending.clear()
    failed.clear()


def _read(path: Path) -> Tensor | Exception:
    from scaledet.data import ImageReadError, read_image
    from scaledet.inference.inputs import as_images

    try:
        return as_images(read_image(path))[0].image
    except ImageReadError as e:
        return e


def _read_ahead(todo: list[tuple[int, Path, str]], window: int
                ) -> Iterator[tuple[int, Path, str, Tensor | Exception]]:
    """Decode images in two threads, at most ``window`` ahead of the consumer."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        queue: deque = deque()
        items = iter(todo)
        for item in items:
            queue.append((item, pool.submit(_read, item[1])))
            if len(queue) >= window:
                break
        while queue:
            (i, f, k), fut = queue.popleft()
            nxt = next(items, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(_read, nxt[1])))
            yield i, f, k, fut.result()


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _annotated_names(files: Sequence[Path]) -> list[str]:
    """``stem.jpg`` per image, ``stem_ID.jpg`` where stems repeat (stable across resumes)."""
    stems = Counter(Path(f).stem for f in files)
    return [f"{Path(f).stem}.jpg" if stems[Path(f).stem] == 1 else f"{Path(f).stem}_{i}.jpg"
            for i, f in enumerate(files, start=1)]
