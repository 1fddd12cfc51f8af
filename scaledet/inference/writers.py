"""Streaming, resumable writers for ``scaledet predict`` over large folders.

Results are written batch by batch, never held for the whole run. Both writers have one
interface (:class:`ResultWriter`): ``add(image_id, path, result)`` queues the
:class:`~scaledet.inference.results.Result` of one image, ``flush``, ``close``, ``abort``.

* :class:`CocoJsonWriter`: one COCO-results json array ``[{image_id, category_id, bbox [x, y, w,
  h], score, file_name}, ...]``, appended entry by entry and closed with ``]`` at the end; with a
  pose model, posed detections also carry ``keypoints`` (COCO's flat ``[x, y, score] * K``).
* :class:`ParquetWriter`: a Parquet dataset in the layout Spark writes and Hive, Spark, DuckDB
  (``read_parquet('OUT.parquet/*.parquet')``), pyarrow and pandas read directly: a folder
  ``OUT.parquet/`` of ``part-NNNNN.parquet`` files (one row per box) and a ``_SUCCESS`` marker
  when the run completed. pyarrow is optional (``pip install 'scaledet[parquet]'``).

Both carry the dataset's ``category_id`` (the ``categories`` id of a COCO ground truth), so the
json and the Parquet rows join to the ground truth the same way; the Parquet rows also keep the
model's 0-based class index as ``label_index``.

Resume: each writer has a progress log (:class:`Progress`, lines ``token<TAB>image path``); an
image is logged only after its rows are durably in the output, and ``token`` is the output's
state at that point (byte offset of the json, number of Parquet parts). ``--resume`` reads the
log, cuts the output back to the last logged state (dropping rows of images not logged, which a
killed run may have left) and skips the logged images. Several outputs of one run
(:class:`Outputs`) each keep their own log, marked at the same moments; a resume continues from
the images logged by all of them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from scaledet.inference.results import Result

# A Parquet part is written once this many rows or images are queued: the most work a killed
# run loses.
ROWS_PER_PART = 200_000
IMAGES_PER_PART = 2000
PARQUET_COLUMNS = ("image_id", "image_path", "x1", "y1", "x2", "y2", "score", "category_id",
                   "label_index", "class_name", "keypoints")


class Progress:
    """The append-only log of images whose results are durably written."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.done: set[str] = set()
        self.token: str | None = None
        self.lines: list[tuple[str, str]] = []  # (token, image) as read at a resume
        if resume and path.is_file():
            self._read()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

    def _read(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]  # a killed write may leave half a line
        if len(complete) != len(text):
            self.path.write_text(complete, encoding="utf-8")
        for line in complete.splitlines():
            token, _, image = line.partition("\t")
            self.done.add(image)
            self.token = token
            self.lines.append((token, image))

    def keep_first(self, n: int) -> None:
        """Forget all but the first ``n`` logged images, cut back to the end of a flush (the
        lines of one flush share a token), and rewrite the log accordingly."""
        while 0 < n < len(self.lines) and self.lines[n][0] == self.lines[n - 1][0]:
            n -= 1
        if n >= len(self.lines):
            return
        self.lines = self.lines[:n]
        self.done = {image for _, image in self.lines}
        self.token = self.lines[-1][0] if self.lines else None
        self.path.write_text("".join(f"{t}\t{p}\n" for t, p in self.lines), encoding="utf-8")

    def mark(self, token: str, images: Iterable[str]) -> None:
        """Log ``images`` as done with the output in state ``token``."""
        lines = "".join(f"{token}\t{p}\n" for p in images)
        if not lines:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
        self.token = token


class ResultWriter(Protocol):
    """What :func:`~scaledet.inference.stream.predict_stream` writes results through."""

    path: Path

    @staticmethod
    def progress_file(path: str | os.PathLike) -> Path:
        """Where the progress log of the output ``path`` lives."""
        ...

    def add(self, image_id: int, path: str, result: Result) -> None:
        """Queue the detections of one image (``path``: its file, written with each box)."""
        ...

    def flush(self, force: bool = False) -> str | None:
        """Write what is queued when due (always with ``force``); the token of the output's
        state when everything queued is durably written, else None."""
        ...

    def close(self) -> None:
        """Write everything and finish the output (a completed run)."""
        ...

    def abort(self) -> None:
        """Stop, leaving what is written for a ``--resume``."""
        ...


class CocoJsonWriter:
    """A COCO-results json array written incrementally (see the module docstring).

    Args:
        path: the json file.
        resume_token: the progress log's last token (``"offset:count"``) to continue from, or
            None to start a new file.
    """

    def __init__(self, path: str | os.PathLike, resume_token: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pending: list[dict[str, Any]] = []
        if resume_token is None or not self.path.is_file():
            self._file = open(self.path, "wb")  # noqa: SIM115 (closed in close / abort)
            self._file.write(b"[")
            self.count = 0
        else:
            offset, count = (int(v) for v in resume_token.split(":"))
            self._file = open(self.path, "r+b")  # noqa: SIM115
            self._file.truncate(offset)
            self._file.seek(offset)
            self.count = count
        self._file.flush()

    @staticmethod
    def progress_file(path: str | os.PathLike) -> Path:
        """Where the progress log of the output ``path`` lives."""
        return Path(path).with_name(Path(path).name + ".progress")

    def add(self, image_id: int, path: str, result: Result) -> None:
        """Queue the COCO results entries of one image, each with ``file_name`` = ``path``."""
        self._pending += [{**e, "file_name": path} for e in result.to_coco(image_id)]

    def flush(self, force: bool = False) -> str:
        """Write the queued entries; returns the token of the new state."""
        for e in self._pending:
            self._file.write((("," if self.count else "") + "\n" + json.dumps(e)).encode())
            self.count += 1
        self._pending = []
        self._file.flush()
        return f"{self._file.tell()}:{self.count}"

    def close(self) -> None:
        """Flush and terminate the array."""
        self.flush()
        self._file.write(b"\n]\n")
        self._file.close()

    def abort(self) -> None:
        """Close without terminating the array (an interrupted run, to be resumed)."""
        self._file.close()


_PART_NUMBER = re.compile(r"part-(\d+)")  # this writer's parts: part-00000, part-00001, ...


def refuse_ray_output(path: str | os.PathLike) -> None:
    """A ``ValueError`` when the folder ``path`` was written by ``--engine ray``: its parts are
    named by a hash of their images (``part-<hash>``), listed in ``_images/``, not numbered;
    this writer would neither resume nor cleanly replace them, so the run must use that
    engine."""
    if (Path(path) / "_images").is_dir():
        raise ValueError(f"--parquet {path}: this folder was written by --engine ray (it has "
                         "_images/); resume it with --engine ray, or remove it or pick another "
                         "name to write it with this engine")


class ParquetWriter:
    """One row per box in a Parquet dataset folder (see the module docstring).

    Args:
        path: the dataset folder (``OUT.parquet``).
        resume_token: number of parts to keep (later parts are removed), or None to start anew
            (the folder's ``part-*.parquet`` files are removed).
        rows_per_part, images_per_part: a part is written once this many rows or images are
            queued (default ``ROWS_PER_PART``, ``IMAGES_PER_PART``); at most this much work is
            lost if the run is killed.
    """

    def __init__(self, path: str | os.PathLike, resume_token: str | None = None,
                 rows_per_part: int | None = None, images_per_part: int | None = None) -> None:
        self.pa, self.pq = import_pyarrow()
        self.path = Path(path)
        refuse_ray_output(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        keep = int(resume_token) if resume_token is not None else 0
        self._check_schema_of_kept_parts(keep)
        for part in self.path.glob("part-*.parquet"):
            number = _PART_NUMBER.fullmatch(part.stem)
            if number is not None and int(number[1]) >= keep:
                part.unlink()
        (self.path / "_SUCCESS").unlink(missing_ok=True)
        self.parts = keep
        self.rows_per_part = rows_per_part or ROWS_PER_PART
        self.images_per_part = images_per_part or IMAGES_PER_PART
        self._columns: dict[str, list] = empty_columns()
        self._images = 0

    @staticmethod
    def progress_file(path: str | os.PathLike) -> Path:
        """Where the progress log of the output ``path`` lives (readers skip ``_`` names)."""
        return Path(path) / "_progress.tsv"

    def _check_schema_of_kept_parts(self, keep: int) -> None:
        """A resumed dataset must not mix parts of two schemas (readers would fail on it)."""
        first = self.path / "part-00000.parquet"
        if keep and first.is_file() and self.pq.read_schema(first).names != self.schema.names:
            raise ValueError(f"--resume: {self.path} was written with other columns "
                             f"({', '.join(self.pq.read_schema(first).names)}); run without "
                             "--resume to rewrite it")

    @property
    def schema(self):
        return parquet_schema()

    def add(self, image_id: int, path: str, result: Result) -> None:
        """Queue one image's boxes (:func:`add_rows`)."""
        add_rows(self._columns, image_id, path, result)
        self._images += 1

    def flush(self, force: bool = False) -> str | None:
        """Write the queued rows as a new part when enough are queued (or ``force``); returns
        the token (number of parts) when everything queued is now written, else None."""
        rows = len(self._columns["score"])
        if not force and rows < self.rows_per_part and self._images < self.images_per_part:
            return None
        if self._images:
            table = self.pa.table(self._columns, schema=self.schema)
            final = self.path / f"part-{self.parts:05d}.parquet"
            tmp = self.path / f".{final.name}.tmp"  # readers skip names starting with '.'
            self.pq.write_table(table, tmp)
            os.replace(tmp, final)
            self.parts += 1
            self._columns = empty_columns()
            self._images = 0
        return str(self.parts)

    def close(self) -> None:
        """Write the last part and the ``_SUCCESS`` marker."""
        self.flush(force=True)
        (self.path / "_SUCCESS").write_text("", encoding="utf-8")

    def abort(self) -> None:
        """Leave the written parts for a later ``--resume``."""


def parquet_schema():
    """The Arrow schema of the Parquet output, one row per box: the one definition every writer
    of it uses (this module, ``--engine ray`` and the Spark helper in
    :mod:`scaledet.integrations`), so every engine writes the same columns and types.

    ``keypoints`` is one ``list<float32>`` column: a posed box's joints flattened as COCO's
    ``[x, y, score] * K`` (x, y original-image pixels), null for a box without a pose (no pose
    model, or not of a posed class). One list column rather than ``3 K`` scalar columns
    (``kpt0_x``, ...): it holds any ``K`` (17 COCO joints, a hand's 21, a custom set) under one
    name, so the schema is the same with or without a pose model and for every pose model,
    and the parts of all runs and engines read as one dataset; readers take
    ``keypoints[3 * j]`` (DuckDB ``keypoints[3 * j + 1]``, 1-based) or reshape it to
    ``(K, 3)``."""
    pa, _ = import_pyarrow()
    return pa.schema([("image_id", pa.int64()), ("image_path", pa.string()),
                      ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()),
                      ("y2", pa.float32()), ("score", pa.float32()),
                      ("category_id", pa.int64()), ("label_index", pa.int32()),
                      ("class_name", pa.string()), ("keypoints", pa.list_(pa.float32()))])


def empty_columns() -> dict[str, list]:
    """One empty list per Parquet column, for :func:`add_rows`."""
    return {c: [] for c in PARQUET_COLUMNS}


def add_rows(columns: dict[str, list], image_id: int, path: str, result: Result) -> None:
    """Append one image's boxes to ``columns`` (:func:`empty_columns`): xyxy original pixels,
    the dataset's ``category_id`` (as in the json), the model's 0-based ``label_index`` and
    the ``keypoints`` list (None for a box without a pose; see :func:`parquet_schema`)."""
    c = columns
    n = len(result)
    c["image_id"] += [image_id] * n
    c["image_path"] += [path] * n
    boxes = result.boxes.tolist()
    for k, col in enumerate(("x1", "y1", "x2", "y2")):
        c[col] += [b[k] for b in boxes]
    c["score"] += result.scores.tolist()
    c["category_id"] += result.detection_category_ids
    c["label_index"] += result.labels.tolist()
    c["class_name"] += result.class_names
    if result.keypoints is None:
        c["keypoints"] += [None] * n
    else:
        flat = result.keypoints.flatten(1).tolist()
        c["keypoints"] += [k if ok else None for k, ok in zip(flat, result.posed.tolist())]


def import_pyarrow():
    """``(pyarrow, pyarrow.parquet)``, or a clear error naming the extra to install."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("--parquet needs pyarrow: pip install 'scaledet[parquet]' "
                         "(or pip install pyarrow)") from None
    return pa, pq


class Outputs:
    """The outputs of one run, fed the same results: a COCO-results json and / or a Parquet
    dataset, each with its progress log.

    The logs are marked together, once every writer has durably written what it was given
    (the json at each flush, the Parquet dataset when it writes a part), so they list the same
    images; at a resume each output is cut back to the images that all logs list (a run killed
    between two marks, or one that wrote only some of the outputs, is repaired that way).

    Args:
        json: the COCO-results json, or None.
        parquet: the Parquet dataset folder, or None.
        resume: continue the run that wrote these outputs.
    """

    def __init__(self, json: str | os.PathLike | None, parquet: str | os.PathLike | None,
                 resume: bool) -> None:
        specs: list[tuple[type, Path]] = []
        if json is not None:
            specs.append((CocoJsonWriter, Path(json)))
        if parquet is not None:
            import_pyarrow()  # fail before anything is written
            if Path(parquet).is_file():
                raise ValueError(f"--parquet {parquet}: a file is in the way; the output is a "
                                 "folder of parts (as Spark writes); remove it or pick another "
                                 "name")
            refuse_ray_output(parquet)  # before its progress log is read or reset
            specs.append((ParquetWriter, Path(parquet)))
        if not specs:
            raise ValueError("no output: give a json path, a Parquet path or both")
        if len({path.resolve() for _, path in specs}) < len(specs):
            raise ValueError(f"the json and the Parquet outputs are both {specs[0][1]}")
        self.logs = [Progress(cls.progress_file(path), resume) for cls, path in specs]
        common = 0  # images logged, in the same order, by every log
        while (all(common < len(log.lines) for log in self.logs)
               and len({log.lines[common][1] for log in self.logs}) == 1):
            common += 1
        for log in self.logs:
            log.keep_first(common)
        # The Parquet writer opens first: it may refuse (parts of another schema) before the
        # json is opened, which truncates it.
        pairs = list(zip(specs, self.logs))
        opened = [cls(path, log.token) for (cls, path), log in reversed(pairs)]
        self.writers: list[ResultWriter] = opened[::-1]
        self.done: set[str] = self.logs[0].done

    @property
    def paths(self) -> list[Path]:
        """Where the outputs go (json first)."""
        return [w.path for w in self.writers]

    def add(self, image_id: int, path: str, result: Result) -> None:
        """Queue one image's result in every output."""
        for w in self.writers:
            w.add(image_id, path, result)

    def flush(self, force: bool = False) -> list[str] | None:
        """Flush every writer; their tokens when all of them are durably written, else None."""
        tokens = [w.flush(force) for w in self.writers]
        return None if any(t is None for t in tokens) else tokens  # type: ignore[return-value]

    def mark(self, tokens: Sequence[str], images: Iterable[str]) -> None:
        """Log ``images`` as done in every output (``tokens`` from :meth:`flush`)."""
        images = list(images)
        for log, token in zip(self.logs, tokens):
            log.mark(token, images)

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def abort(self) -> None:
        for w in self.writers:
            w.abort()


class ErrorLog:
    """``path<TAB>reason`` lines for images that could not be read (kept across ``--resume``).

    The file exists only when some image was unreadable: a new run removes an earlier run's
    list, and the file (and its folder) is created at the first error. A resumed run does not
    list an image again (one it redoes because the outputs were cut back)."""

    def __init__(self, path: str | os.PathLike, resume: bool) -> None:
        self.path = Path(path)
        self.count = 0
        self._listed: set[str] = set()
        if not resume:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            self._listed = {line.partition("\t")[0] for line in text.splitlines()}

    @property
    def exists(self) -> bool:
        """Whether the list holds errors (of this run or of a resumed one)."""
        return self.path.is_file() and self.path.stat().st_size > 0

    def write(self, errors: list[tuple[str, str]]) -> None:
        errors = [(p, reason) for p, reason in errors if p not in self._listed]
        self._listed.update(p for p, _ in errors)
        if errors:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(f"{p}\t{' '.join(reason.split())}\n" for p, reason in errors)
            self.count += len(errors)
