"""Prediction over many image files, as ``scaledet predict`` runs it.

:func:`predict_stream` streams over the images: decoding runs ahead in two threads, results are written batch by batch
(:mod:`scaledet.inference.writers`), nothing accumulates in memory; ``--resume`` skips the images
already written, unreadable images go to ``OUT/errors.txt``.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from torch import Tensor

from scaledet.inference.inputs import InputImage
from scaledet.inference.predictor import Predictor


def predict_stream(predictor: Predictor, files: Sequence[Path], output: Path, *,
                   parquet: bool = False, resume: bool = False, errors: Path,
                   images_dir: Path | None = None, progress_bar: bool | None = None
                   ) -> dict[str, Any]:
    """Run ``predictor`` over ``files`` writing COCO-results json (or a Parquet dataset) to
    ``output``; image ids are positions in ``files`` (1-based).

    Args:
        resume: continue the run that wrote ``output``, skipping its logged images.
        errors: the file listing unreadable images.
        images_dir: where annotated copies go (None: not written).
        progress_bar: tqdm bar (None: only on a terminal).

    Returns:
        ``{"images", "skipped", "errors", "boxes", "seconds", "images_per_s"}``.
    """
    from tqdm import tqdm

    from scaledet.inference.writers import ErrorLog, open_output

    writer, progress = open_output(output, parquet, resume)
    error_log = ErrorLog(errors, resume)
    keys = [str(Path(f).resolve()) for f in files]
    todo = [(i, f, k) for i, (f, k) in enumerate(zip(files, keys), start=1)
            if k not in progress.done]
    names = _annotated_names(files)
    stats = {"images": len(files), "skipped": len(files) - len(todo), "errors": 0, "boxes": 0}
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
            for (i, f, _), r in zip(good, results):
                stats["boxes"] += _write(writer, parquet, i, str(f), r)
                if images_dir is not None:
                    r.plot(images_dir / names[i - 1])
            pending += [k for _, _, k, _ in batch]
            _commit(writer.flush(), progress, error_log, pending, failed)
            bar.update(len(batch))
        _commit(writer.flush(force=True), progress, error_log, pending, failed)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    done = len(todo)
    return {**stats, "errors": error_log.count, "seconds": seconds,
            "images_per_s": done / max(seconds, 1e-9)}


def _write(writer, parquet: bool, image_id: int, path: str, r) -> int:
    if parquet:
        writer.add_boxes(image_id, path, r.boxes.tolist(), r.scores.tolist(), r.labels.tolist(),
                         r.class_names)
    else:
        writer.add([{**e, "file_name": path} for e in r.to_coco(image_id)])
    return len(r)


def _commit(token: str | None, progress, error_log, pending: list[str],
            failed: list[tuple[str, str]]) -> None:
    """Once the writer says everything queued is durable: log errors and the done images."""
    if token is None:
        return
    error_log.write(failed)
    progress.mark(token, pending)
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
