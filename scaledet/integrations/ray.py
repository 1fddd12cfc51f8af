"""``scaledet predict --engine ray``: batch inference over millions of images on Ray Data.

Pipeline. The sources become one Ray Data dataset of image paths (column ``path``): a text
listing is read with ``ray.data.read_text``, a Parquet listing with ``ray.data.read_parquet``
(column ``path``, else ``image_path``, else its only column), so the driver never holds a listing
as Python objects; folders are streamed (``os.scandir``) into a text listing inside the output
folder and read the same way. Each batch of ``images_per_part`` paths goes to a Ray Data actor
(``map_batches`` with a callable class, an actor pool of ``workers``) that loaded the model once,
runs it with its share of the cores as torch threads, and writes the batch's output itself.

Output: the folder the local ``--parquet`` path writes, read the same way by any query engine
(``read_parquet('OUT.parquet/*.parquet')``; names starting with ``_`` or ``.`` are skipped)::

    OUT.parquet/part-<H>.parquet     box rows, one per box: the local writer's schema
    OUT.parquet/_images/<H>.parquet  one row per image of part H: image_path, image_id, boxes,
                                     error (the reason an image could not be read, else null)
    OUT.parquet/_listing/            the folders' listing of a run (removed when it completes)
    OUT.parquet/_SUCCESS             written when every image is in the output exactly once

``image_id`` is a 63-bit hash of the path (:func:`~scaledet.integrations.common.stable_image_id`):
a distributed listing has no cheap position, and a hash is the same in every retry and resume.
An unreadable or missing image is a row of ``_images`` with its ``error``, listed in the errors
file (``path<TAB>reason`` lines, as the local path writes them), never a failed job.

Why a killed worker leaves no duplicate or missing rows:

* ``H`` is a hash of the batch's sorted paths, so a batch Ray retries (an actor that died is
  restarted and its task resubmitted with the same input) writes the same file names again;
  every file is written to a hidden temporary name and renamed into place (atomic), so a reader
  sees a whole file or none.
* The part is renamed first and its ``_images`` file second: the ``_images`` file is the commit
  record. A part without one (a worker killed between the two renames) is removed.
* A reconcile step (:func:`reconcile`, a Ray task, so the driver holds no list of images) runs
  at ``--resume`` and at the end: it removes temporary files and uncommitted parts, and where
  an image is committed in more than one part (a listing that names it twice, a batch that ran
  twice with different neighbours) keeps it in the part whose name sorts first and rewrites the
  others without it. Only then is ``_SUCCESS`` written.
* ``--resume`` skips the images committed in ``_images`` (those with an ``error`` too, as the
  local path does): the reconcile task returns them as one Arrow array in Ray's object store,
  and the listing's read tasks drop them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scaledet.data.images import IMAGE_SUFFIXES

INSTALL_HINT = "pip install 'scaledet[ray]'"
IMAGES_PER_PART = 256  # images per part file: the most work a killed worker redoes
LISTING_SUFFIXES = (".txt",)
READ_CPUS = 0.25  # logical CPUs of a listing's read task
# Logical CPUs the actors leave free for Ray Data's own tasks (listing files, reading listings),
# which would otherwise wait for the actors to finish; the actors' torch threads are set apart.
RESERVED_CPUS = 1.0


def import_ray():
    """``ray`` with Ray Data, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ValueError(f"--engine ray needs Ray Data: {INSTALL_HINT}") from None
    return ray


def manifest_schema():
    """The Arrow schema of ``_images/<H>.parquet``: one row per image of a part."""
    import pyarrow as pa

    return pa.schema([("image_path", pa.string()), ("image_id", pa.int64()),
                      ("boxes", pa.int32()), ("error", pa.string())])


def predict(sources: Sequence[str | os.PathLike], weights: str | os.PathLike,
            parquet: str | os.PathLike, *, errors: str | os.PathLike,
            address: str | None = None, workers: int | None = None, resume: bool = False,
            images_per_part: int = IMAGES_PER_PART, progress_bar: bool | None = None,
            **options: Any) -> dict[str, Any]:
    """Predict over ``sources`` on a Ray cluster into the Parquet dataset ``parquet``.

    Args:
        sources: image files, folders, ``.txt`` listings (one path a line) and ``.parquet``
            listings; relative paths in a listing are read from the current folder.
        weights: the checkpoint; it, the images and ``parquet`` must be reachable from every
            node (a shared filesystem) when the cluster has several.
        parquet: the output dataset folder (see the module docstring).
        errors: the file listing unreadable images (written only when there is one).
        address: a running cluster to join (``ray.init(address=...)``); default: start a local
            one sized to this machine.
        workers: actors (model copies); default one per 4 CPUs of the cluster, at least 1.
        resume: skip the images already committed in ``parquet``.
        images_per_part: images per part file.
        progress_bar: tqdm bar (None: only on a terminal).
        options: :class:`~scaledet.inference.predictor.Predictor` keywords (``device``,
            ``conf``, ``batch_size``, ...).

    Returns:
        ``{"images", "skipped", "errors", "boxes", "seconds", "images_per_s", "workers",
        "errors_file"}``: ``images`` in the output now, ``skipped`` those a resume kept.
    """
    ray = import_ray()
    import pyarrow as pa  # a dependency of ray[data]
    from tqdm import tqdm

    out = Path(parquet)
    if out.is_file():
        raise ValueError(f"--parquet {out}: a file is in the way; the output is a folder of "
                         "parts; remove it or pick another name")
    if resume and (out / "_progress.tsv").is_file():
        raise ValueError(f"--resume: {out} was written by the local engine; resume it without "
                         "--engine ray, or run without --resume to rewrite it")
    plan = _plan_sources(sources)  # checks the sources before anything is written
    started = _connect(ray, address)
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        if not resume:
            _clear(out)
        (out / "_images").mkdir(parents=True, exist_ok=True)
        (out / "_SUCCESS").unlink(missing_ok=True)
        reconcile_task = ray.remote(num_cpus=READ_CPUS)(reconcile)
        done_ref = None
        skipped = 0
        if resume:
            done_ref, summary_ref = reconcile_task.options(num_returns=2).remote(str(out))
            skipped = ray.get(summary_ref)["images"]
        cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
        n = workers if workers is not None else max(1, int(cpus) // 4)
        if n < 1:
            raise ValueError(f"--workers must be >= 1, got {n}")
        threads = max(1, round(cpus / n))
        ds = _paths_dataset(ray, plan, out, done_ref if skipped else None)
        gpu = str(options.get("device", "cpu")).startswith("cuda")
        ds = ds.map_batches(
            _PartWriter, batch_size=images_per_part, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=n),
            num_cpus=max(cpus - RESERVED_CPUS, cpus / 2) / n, num_gpus=1 if gpu else None,
            fn_constructor_kwargs={"out": str(out), "weights": str(Path(weights).resolve()),
                                   "threads": threads, "base": os.getcwd(),
                                   "options": options})
        bar = tqdm(unit="img", dynamic_ncols=True, initial=skipped,
                   disable=None if progress_bar is None else not progress_bar)
        start = time.perf_counter()
        done_now = 0
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                images = int(pa.compute.sum(batch["images"]).as_py() or 0)
                done_now += images
                bar.update(images)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        _, summary_ref = reconcile_task.options(num_returns=2).remote(str(out))
        summary = ray.get(summary_ref)
    finally:
        if started:
            ray.shutdown()
    errors_file = _write_errors(Path(errors), summary["errors"])
    shutil.rmtree(out / "_listing", ignore_errors=True)
    (out / "_SUCCESS").write_text("", encoding="utf-8")
    return {"images": summary["images"], "skipped": skipped, "errors": len(summary["errors"]),
            "boxes": summary["boxes"], "seconds": seconds,
            "images_per_s": done_now / max(seconds, 1e-9), "workers": n,
            "errors_file": errors_file}


def _connect(ray, address: str | None) -> bool:
    """Join ``address``, or start a local cluster with this machine's cores; True when this
    call started Ray (and so shuts it down). A session already initialised is used as is."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    return True


def _plan_sources(sources: Sequence[str | os.PathLike]) -> dict[str, list[Any]]:
    """Sort the sources into ``{"images": files and folders, "text": listings, "parquet":
    (listing, column)}``; a missing or unrecognised source is an error naming it."""
    plan: dict[str, list[Any]] = {"images": [], "text": [], "parquet": []}
    for s in sources:
        p = Path(s)
        suffix = p.suffix.lower()
        if p.is_dir():
            plan["images"].append(p)
        elif not p.exists():
            raise FileNotFoundError(f"source not found: {p}")
        elif suffix in IMAGE_SUFFIXES:
            plan["images"].append(p)
        elif suffix in LISTING_SUFFIXES:
            plan["text"].append(p)
        elif suffix == ".parquet":
            plan["parquet"].append((p, _listing_column(p)))
        else:
            raise ValueError(f"{p}: not an image ({', '.join(IMAGE_SUFFIXES)}), a folder, a "
                             ".txt listing (one path a line) or a .parquet listing")
    return plan


def _listing_column(path: Path) -> str:
    """The column of a Parquet listing that holds the paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    for name in ("path", "image_path"):
        if name in schema.names:
            return name
    strings = [f.name for f in schema if pa.types.is_string(f.type)
               or pa.types.is_large_string(f.type)]
    if len(strings) == 1:
        return strings[0]
    raise ValueError(f"{path}: a Parquet listing needs a 'path' (or 'image_path') column, or a "
                     f"single string column; it has {', '.join(schema.names) or 'none'}")


def _paths_dataset(ray, plan: dict[str, list[Any]], out: Path, done=None):
    """One Ray dataset with a ``path`` column: every image of every source, less ``done`` (an
    Arrow array, or a reference to one in the object store)."""
    reads = []
    if plan["images"]:
        listing = _write_listing(plan["images"], out / "_listing")
        reads.append((ray.data.read_text(str(listing), num_cpus=READ_CPUS), "text"))
    for p in plan["text"]:
        reads.append((ray.data.read_text(str(p.resolve()), num_cpus=READ_CPUS), "text"))
    for p, column in plan["parquet"]:
        d = ray.data.read_parquet(str(p.resolve()), num_cpus=READ_CPUS)
        reads.append((d.select_columns([column]), column))
    # A map with the read's resources fuses into the read task (no stage of its own to
    # schedule beside the actors).
    parts = [d.map_batches(_paths, fn_kwargs={"column": column, "done": done},
                           batch_size=None, batch_format="pyarrow", num_cpus=READ_CPUS)
             for d, column in reads]
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def _paths(batch, column: str, done):
    """A listing's block as the ``path`` column, without empty lines and ``done`` paths."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray

    paths = pc.utf8_trim_whitespace(batch[column].cast(pa.string()))
    keep = pc.and_(pc.is_valid(paths), pc.not_equal(paths, ""))
    if done is not None:
        if isinstance(done, ray.ObjectRef):
            done = ray.get(done)
        keep = pc.and_(keep, pc.invert(pc.is_in(paths, value_set=done)))
    return pa.table({"path": paths}).filter(keep)


def _write_listing(sources: list[Path], folder: Path) -> Path:
    """Stream the image files of ``sources`` (files, and folders listed without recursion)
    into one text listing of absolute paths; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "images.txt"
    tmp = folder / f".{listing.name}.{uuid.uuid4().hex}.tmp"
    count = 0
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
        for src in sources:
            if not src.is_dir():
                f.write(os.path.abspath(src) + "\n")
                count += 1
                continue
            with os.scandir(src) as entries:
                for e in entries:
                    if (os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
                            and e.is_file()):
                        f.write(os.path.abspath(e.path) + "\n")
                        count += 1
    if not count:
        tmp.unlink()
        raise ValueError(f"no images found in {' '.join(map(str, sources))} "
                         f"(looked for {', '.join(IMAGE_SUFFIXES)})")
    os.replace(tmp, listing)
    return listing


def _clear(out: Path) -> None:
    """Remove an earlier run's dataset files (a new run, not a resume)."""
    for part in out.glob("part-*.parquet"):
        part.unlink()
    for name in ("_images", "_listing"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("_SUCCESS", "_progress.tsv"):
        (out / name).unlink(missing_ok=True)


def part_name(paths: Sequence[str]) -> str:
    """The name ``H`` of the part holding ``paths``: a hash of the sorted paths, so a batch that
    runs again writes the same files."""
    h = hashlib.sha1()
    for p in sorted(paths):
        h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:20]


def write_atomic(table, path: Path) -> None:
    """Write ``table`` to ``path`` through a hidden temporary name and a rename."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class _PartWriter:
    """The Ray Data actor: loads the model once; each call predicts a batch of paths and writes
    its part and ``_images`` file (see the module docstring). Returns one summary row."""

    def __init__(self, out: str, weights: str, threads: int, base: str,
                 options: dict[str, Any]) -> None:
        from scaledet.integrations.common import BatchPredictor

        self.out = Path(out)
        self.predict = BatchPredictor(weights, threads=threads, base=base, **options)

    def __call__(self, batch):
        import pyarrow as pa

        from scaledet.inference.writers import parquet_schema

        paths = list(dict.fromkeys(p for p in batch["path"].to_pylist() if p))
        name = part_name(paths)
        columns, records = self.predict(paths)
        write_atomic(pa.table(columns, schema=parquet_schema()),
                     self.out / f"part-{name}.parquet")
        manifest = pa.table({"image_path": [r.path for r in records],
                             "image_id": [r.image_id for r in records],
                             "boxes": [r.boxes for r in records],
                             "error": [r.error for r in records]}, schema=manifest_schema())
        write_atomic(manifest, self.out / "_images" / f"{name}.parquet")
        return pa.table({"part": [name], "images": [len(records)],
                         "boxes": [sum(r.boxes for r in records)],
                         "errors": [sum(r.error is not None for r in records)]})


def reconcile(out: str) -> tuple[Any, dict[str, Any]]:
    """Make the dataset ``out`` consistent (see the module docstring) and describe it.

    Returns:
        ``(the committed image paths as an Arrow array, {"images", "boxes", "errors":
        [(path, reason), ...]})``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = Path(out)
    images = root / "_images"
    images.mkdir(parents=True, exist_ok=True)
    for tmp in [*root.glob(".*.tmp"), *images.glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)
    parts = {p.name[len("part-"):-len(".parquet")] for p in root.glob("part-*.parquet")}
    committed = {p.stem for p in images.glob("*.parquet")}
    for name in parts - committed:  # killed between the part's rename and its record's
        (root / f"part-{name}.parquet").unlink(missing_ok=True)
    for name in committed - parts:  # a record without its rows: its images run again
        (images / f"{name}.parquet").unlink(missing_ok=True)
    names = sorted(parts & committed)
    if not names:
        return pa.array([], pa.string()), {"images": 0, "boxes": 0, "errors": []}
    tables = []
    for n in names:  # the part a row belongs to is the name of its file
        t = pq.read_table(images / f"{n}.parquet", schema=manifest_schema())
        tables.append(t.append_column("part", pa.repeat(pa.scalar(n, pa.string()), len(t))))
    table = pa.concat_tables(tables)
    counts = table.group_by("image_path").aggregate([("part", "count")])
    twice = counts.filter(pc.greater(counts["part_count"], 1))["image_path"]
    if len(twice):
        table = _drop_duplicates(root, table, twice)
    errors = table.filter(pc.is_valid(table["error"]))
    return table["image_path"].combine_chunks(), {
        "images": table.num_rows, "boxes": int(pc.sum(table["boxes"]).as_py() or 0),
        "errors": list(zip(errors["image_path"].to_pylist(), errors["error"].to_pylist()))}


def _drop_duplicates(root: Path, table, twice):
    """Keep each image of ``twice`` only in the first part (by name) that holds it: rewrite the
    other parts, then their records, without it. Returns ``table`` without those rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = table.filter(pc.is_in(table["image_path"], value_set=twice)).to_pylist()
    owner: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: r["part"]):
        owner.setdefault(r["image_path"], r["part"])
    drop: dict[str, list[str]] = {}
    for r in rows:
        if owner[r["image_path"]] != r["part"]:
            drop.setdefault(r["part"], []).append(r["image_path"])
    for name, paths in sorted(drop.items()):
        for file in (root / f"part-{name}.parquet", root / "_images" / f"{name}.parquet"):
            t = pq.read_table(file)
            keep = pc.invert(pc.is_in(t["image_path"], value_set=pa.array(paths, pa.string())))
            write_atomic(t.filter(keep), file)
    key = pc.binary_join_element_wise(table["image_path"], table["part"], "\0")
    dropped = pa.array([f"{p}\0{name}" for name, paths in drop.items() for p in paths],
                       pa.string())
    return table.filter(pc.invert(pc.is_in(key, value_set=dropped)))


def _write_errors(path: Path, errors: list[tuple[str, str]]) -> Path | None:
    """The errors file, rewritten from every committed record (``path<TAB>reason``); removed
    when no image failed. Returns it, or None."""
    if not errors:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{p}\t{' '.join(r.split())}\n" for p, r in sorted(errors)),
                   encoding="utf-8")
    os.replace(tmp, path)
    return path
