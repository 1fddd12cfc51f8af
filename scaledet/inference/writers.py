"""Streaming, resumable writers for ``scaledet predict`` over large folders.

Results are written batch by batch, never held for the whole run:

* :class:`CocoJsonWriter`: one COCO-results json array ``[{image_id, category_id, bbox [x, y, w,
  h], score, file_name}, ...]``, appended entry by entry and closed with ``]`` at the end.
* :class:`ParquetWriter`: a Parquet dataset in the layout Spark writes and Hive, Spark, DuckDB
  (``read_parquet('OUT.parquet/*.parquet')``), pyarrow and pandas read directly: a folder
  ``OUT.parquet/`` of ``part-NNNNN.parquet`` files (one row per box) and a ``_SUCCESS`` marker
  when the run completed. pyarrow is optional (``pip install 'scaledet[parquet]'``).

Resume: each writer has a progress log (:class:`Progress`, lines ``token<TAB>image path``); an
image is logged only after its rows are durably in the output, and ``token`` is the output's
state at that point (byte offset of the json, number of Parquet parts). ``--resume`` reads the
log, cuts the output back to the last logged state (dropping rows of images not logged, which a
killed run may have left) and skips the logged images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# A Parquet part is written once this many rows or images are queued: the most work a killed
# run loses.
ROWS_PER_PART = 200_000
IMAGES_PER_PART = 2000
PARQUET_COLUMNS = ("image_id", "image_path", "x1", "y1", "x2", "y2", "score", "label",
                   "class_name")


class Progress:
    """The append-only log of images whose results are durably written."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.done: set[str] = set()
        self.token: str | None = None
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

    def mark(self, token: str, images: Iterable[str]) -> None:
        """Log ``images`` as done with the output in state ``token``."""
        lines = "".join(f"{token}\t{p}\n" for p in images)
        if not lines:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
        self.token = token


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

    def add(self, entries: list[dict[str, Any]]) -> None:
        """Queue COCO results entries of one image."""
        self._pending += entries

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
        self.path.mkdir(parents=True, exist_ok=True)
        keep = int(resume_token) if resume_token is not None else 0
        for part in self.path.glob("part-*.parquet"):
            if int(part.stem.split("-")[1]) >= keep:
                part.unlink()
        (self.path / "_SUCCESS").unlink(missing_ok=True)
        self.parts = keep
        self.rows_per_part = rows_per_part or ROWS_PER_PART
        self.images_per_part = images_per_part or IMAGES_PER_PART
        self._columns: dict[str, list] = {c: [] for c in PARQUET_COLUMNS}
        self._images = 0

    @staticmethod
    def progress_file(path: str | os.PathLike) -> Path:
        """Where the progress log of the output ``path`` lives (readers skip ``_`` names)."""
        return Path(path) / "_progress.tsv"

    @property
    def schema(self):
        pa = self.pa
        return pa.schema([("image_id", pa.int64()), ("image_path", pa.string()),
                          ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()),
                          ("y2", pa.float32()), ("score", pa.float32()), ("label", pa.int32()),
                          ("class_name", pa.string())])

    def add_boxes(self, image_id: int, image_path: str, boxes: list[list[float]],
                  scores: list[float], labels: list[int], names: list[str]) -> None:
        """Queue one image's boxes (xyxy original pixels)."""
        c = self._columns
        n = len(scores)
        c["image_id"] += [image_id] * n
        c["image_path"] += [image_path] * n
        for k, col in enumerate(("x1", "y1", "x2", "y2")):
            c[col] += [b[k] for b in boxes]
        c["score"] += scores
        c["label"] += labels
        c["class_name"] += names
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
            self._columns = {c: [] for c in PARQUET_COLUMNS}
            self._images = 0
        return str(self.parts)

    def close(self) -> None:
        """Write the last part and the ``_SUCCESS`` marker."""
        self.flush(force=True)
        (self.path / "_SUCCESS").write_text("", encoding="utf-8")

    def abort(self) -> None:
        """Leave the written parts for a later ``--resume``."""


def import_pyarrow():
    """``(pyarrow, pyarrow.parquet)``, or a clear error naming the extra to install."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("--parquet needs pyarrow: pip install 'scaledet[parquet]' "
                         "(or pip install pyarrow)") from None
    return pa, pq


def open_output(path: str | os.PathLike, parquet: bool, resume: bool
                ) -> tuple[CocoJsonWriter | ParquetWriter, Progress]:
    """The writer for ``path`` and its progress log, continued from the log when ``resume``."""
    path = Path(path)
    if parquet:
        import_pyarrow()  # fail before anything is written
        if path.is_file():
            raise ValueError(f"--parquet {path}: a file is in the way; the output is a folder "
                             "of parts (as Spark writes); remove it or pick another name")
    cls = ParquetWriter if parquet else CocoJsonWriter
    progress = Progress(cls.progress_file(path), resume)
    return cls(path, progress.token), progress


class ErrorLog:
    """``path<TAB>reason`` lines for images that could not be read (kept across ``--resume``)."""

    def __init__(self, path: str | os.PathLike, resume: bool) -> None:
        self.path = Path(path)
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume or not self.path.is_file():
            self.path.write_text("", encoding="utf-8")

    def write(self, errors: list[tuple[str, str]]) -> None:
        if errors:
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(f"{p}\t{' '.join(reason.split())}\n" for p, reason in errors)
            self.count += len(errors)
