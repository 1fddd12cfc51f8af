"""Multi-process data-parallel training with ``torch.distributed`` (``scaledet train --nproc N``).

Each process (a *rank*) holds a full copy of the model, trains on its own share of every batch
and averages gradients with the others (``DistributedDataParallel``): ``gloo`` on the CPU,
``nccl`` on CUDA (the process with local rank ``r`` on its machine uses ``cuda:r``). Rank 0
validates, writes checkpoints, metrics and plots; the others wait for it at the end of each
epoch (on a CPU rank 0 borrows their cores meanwhile: ``all_cores``).

Why it pays on a CPU: PyTorch's intra-op threads scale poorly on the small tensors of a light
detector, while separate processes do not share anything but one gradient all-reduce per step.

``launch`` starts the processes itself (``torch.multiprocessing`` with the ``spawn`` method and a
free localhost port), all on this machine. Across machines ``torchrun`` starts them, the same
command on each machine (``--nnodes``, ``--node-rank``, a rendezvous address); such a process
finds its place in the environment (:func:`torchrun_env`) and joins the group there
(:func:`torchrun_group`) instead of starting any. Its CPU threads, cores and data workers are
shared between the processes on its own machine (``LOCAL_WORLD_SIZE``), its GPU is
``LOCAL_RANK``'s.

Machines need not share a filesystem: what one process must decide or read for all (the run
folder, a resume state) rank 0 does alone and sends to the others (:func:`on_rank0`).
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["Torchrun", "all_cores", "all_reduce_max", "auto_nproc", "barrier", "broadcast_object",
           "is_main", "launch", "local_rank", "local_world_size", "on_rank0", "rank",
           "torchrun_env", "torchrun_group", "world_size"]

T = TypeVar("T")


@dataclass(frozen=True)
class Torchrun:
    """Where ``torchrun`` (or a launcher that sets the same variables) placed this process.

    Attributes:
        rank, world_size: the process's rank and the number of processes, all machines together.
        local_rank, local_world_size: its index among the processes on its own machine, and
            their number (what it shares that machine's cores, data workers and GPUs with).
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def torchrun_env(environ: dict[str, str] | None = None) -> Torchrun | None:
    """This process's :class:`Torchrun` place read from ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
    and ``LOCAL_WORLD_SIZE``, or None when ``RANK`` or ``WORLD_SIZE`` is not set (not started by
    a launcher). Without the ``LOCAL_*`` pair the run is taken to be on one machine."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        place = Torchrun(int(env["RANK"]), world, int(env.get("LOCAL_RANK", env["RANK"])),
                         int(env.get("LOCAL_WORLD_SIZE", world)))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers, got "
                         + ", ".join(f"{k}={env.get(k)!r}" for k in
                                     ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"))
                         ) from None
    if not (0 <= place.rank < place.world_size and 0 <= place.local_rank < place.local_world_size
            <= place.world_size):
        raise ValueError(f"inconsistent launcher environment: {place}")
    return place


def world_size() -> int:
    """Number of processes in the run (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's index on its own machine: the CUDA device it drives. ``torchrun`` sets
    ``LOCAL_RANK`` (the global rank counts across machines); ``launch`` runs on one machine,
    where the two are equal."""
    return int(os.environ.get("LOCAL_RANK", rank()))


def local_world_size() -> int:
    """Number of processes of the run on this machine: ``LOCAL_WORLD_SIZE`` in a group joined by
    :func:`torchrun_group`, else the whole group (``launch`` runs on one machine)."""
    place = torchrun_env()
    if place is not None and place.world_size == world_size() > 1:
        return place.local_world_size
    return world_size()


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_max(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise maximum of ``values`` over all ranks (the values themselves when alone)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank, pickled (tensors in it come back on the device they
    left from: send CPU tensors). Alone: ``obj``."""
    if world_size() == 1:
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_rank0(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` run by rank 0 alone, its result given to every rank; an exception it raises
    is raised on every rank (rather than leaving the others waiting for a result).

    For what one process must decide or read for all: the run folder, the state a run resumes
    from. Where machines do not share a filesystem, only rank 0's holds those files."""
    if world_size() == 1:
        return fn(*args)
    result, error = None, None
    if is_main():
        try:
            result = fn(*args)
        except Exception as e:
            error = e
    sent = error
    if error is not None:
        try:
            pickle.dumps(error)
        except Exception:  # an exception that cannot travel: its type and message do
            sent = RuntimeError(f"{type(error).__name__}: {error}")
    result, sent = broadcast_object((result, sent))
    if error is not None:
        raise error
    if sent is not None:
        raise sent
    return result


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def threads_per_rank(nproc: int) -> int:
    """The CPU cores this process may use, shared evenly between ``nproc`` ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // nproc)


def auto_nproc(device: str, batch: int) -> int:
    """``--nproc auto``: on a CPU, one rank per core while each rank keeps at least 8 images of
    the batch (BatchNorm statistics), so 2 ranks at batch 16; on CUDA, one rank per GPU."""
    if str(device).startswith("cuda"):
        return max(1, torch.cuda.device_count()) if str(device) == "cuda" else 1
    return max(1, min(threads_per_rank(1), batch // 8))


_LAUNCH_CORES: set[int] | None = None
"""The cores ``launch`` was allowed to use, before ``_pin_to_cores`` gave this rank its share."""


def _pin_to_cores(local_rank: int, nproc: int) -> None:
    """Give each rank its own share of the allowed cores (and its data workers, which inherit
    it). Unpinned ranks migrate between cores and wait for each other more at every step."""
    global _LAUNCH_CORES
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    _LAUNCH_CORES = set(cores)
    per = len(cores) // nproc
    if per >= 1:
        os.sched_setaffinity(0, cores[local_rank * per:(local_rank + 1) * per])


@contextmanager
def all_cores() -> Iterator[None]:
    """Inside: this rank may use every core ``launch`` had, with one torch thread each.

    For work that one rank does while the others wait in a barrier (rank 0's validation): a
    pinned rank would otherwise leave the other ranks' cores idle. Restores the rank's own
    cores and thread count on exit; does nothing outside a CPU ``launch`` run.
    """
    if _LAUNCH_CORES is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    own, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, _LAUNCH_CORES)
    torch.set_num_threads(len(_LAUNCH_CORES))
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)
        torch.set_num_threads(threads)


def _setup_rank(local_rank: int, local_world: int, device_type: str) -> str:
    """Give this process its GPU, or its threads and cores among the ``local_world`` processes
    on its machine; returns the backend: ``nccl`` on CUDA, ``gloo`` on the CPU."""
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        return "nccl"
    torch.set_num_threads(threads_per_rank(local_world))
    _pin_to_cores(local_rank, local_world)
    return "gloo"


@contextmanager
def torchrun_group(device_type: str = "cpu") -> Iterator[Torchrun | None]:
    """Inside: a process started by ``torchrun`` for a run of several processes is in their
    process group (joined from the environment: ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
    ``WORLD_SIZE``), with its GPU (``LOCAL_RANK``'s) or its share of its machine's cores. Yields
    its :class:`Torchrun` place, None when not started by a launcher. Leaves the group on exit;
    does nothing for a single process or in a group that already exists."""
    place = torchrun_env()
    if place is None or place.world_size == 1 or dist.is_initialized():
        yield place
        return
    backend = _setup_rank(place.local_rank, place.local_world_size, device_type)
    dist.init_process_group(backend)
    try:
        yield place
    finally:
        dist.destroy_process_group()


def _worker(local_rank: int, nproc: int, port: int, device_type: str, fn: Callable,
            args: tuple, result_path: str) -> None:
    backend = _setup_rank(local_rank, nproc, device_type)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}",
                            rank=local_rank, world_size=nproc)
    try:
        out = fn(*args)
        if local_rank == 0:  # a file, not a pipe: a large result cannot block the exit
            Path(result_path).write_bytes(pickle.dumps(out))
    finally:
        dist.destroy_process_group()


@contextmanager
def _main_script_not_rerun() -> Iterator[None]:
    """A spawned child re-runs the parent's main script from its ``__file__``; a script read
    from standard input (``python - <<EOF``) has ``__file__ == "<stdin>"``, no file to re-run,
    and the children hang. Hide such a name while the children start: they need nothing from
    the main script (``fn`` must be importable from a module, as spawn requires anyway)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def launch(fn: Callable[..., Any], nproc: int, args: tuple = (), device_type: str = "cpu") -> Any:
    """Run ``fn(*args)`` in ``nproc`` processes joined in one process group; return rank 0's
    result. ``nproc == 1``: call ``fn`` here. Started by ``torchrun`` (:func:`torchrun_env`) or in
    a group that already exists: ``nproc`` is ignored, ``fn`` runs here as one of the group's
    ranks and every rank returns rank 0's result.

    A rank that raises makes ``launch`` raise (``torch.multiprocessing.ProcessRaisedException``
    carries its traceback); the other ranks are terminated.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if dist.is_initialized():
        return broadcast_object(fn(*args))
    place = torchrun_env()
    if place is not None and place.world_size > 1:
        with torchrun_group(device_type):
            return broadcast_object(fn(*args))
    if nproc == 1:
        return fn(*args)
    with tempfile.TemporaryDirectory(prefix="scaledet-launch-") as tmp:
        result = Path(tmp) / "rank0.pkl"
        with _main_script_not_rerun():
            mp.start_processes(_worker, args=(nproc, _free_port(), device_type, fn, args,
                                              str(result)), nprocs=nproc, join=True,
                               start_method="spawn")
        return pickle.loads(result.read_bytes())  # written by our own rank 0 just now
