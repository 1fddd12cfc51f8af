"""Multi-process data-parallel training with ``torch.distributed`` (``scaledet train --nproc N``).

Each process (a *rank*) holds a full copy of the model, trains on its own share of every batch
and averages gradients with the others (``DistributedDataParallel``): ``gloo`` on the CPU,
``nccl`` on CUDA (the process with local rank ``r`` on its machine uses ``cuda:r``). Rank 0
validates, writes checkpoints, metrics and plots; the others wait for it at the end of each
epoch (on a CPU rank 0 borrows their cores meanwhile: ``all_cores``).

Why it pays on a CPU: PyTorch's intra-op threads scale poorly on the small tensors of a light
detector, while separate processes do not share anything but one gradient all-reduce per step.

``launch`` starts the processes itself (``torch.multiprocessing`` with the ``spawn`` method and a
free localhost port); under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` set) the
process group is initialised from the environment instead.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["all_cores", "all_reduce_max", "auto_nproc", "barrier", "is_main", "launch", "local_rank",
           "rank", "world_size"]


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


def _worker(local_rank: int, nproc: int, port: int, device_type: str, fn: Callable,
            args: tuple, result_path: str) -> None:
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(threads_per_rank(nproc))
        _pin_to_cores(local_rank, nproc)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}",
                            rank=local_rank, world_size=nproc)
    try:
        out = fn(*args)
        if local_rank == 0:  # a file, not a pipe: a large result cannot block the exit
            Path(result_path).write_bytes(pickle.dumps(out))
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], nproc: int, args: tuple = (), device_type: str = "cpu") -> Any:
    """Run ``fn(*args)`` in ``nproc`` processes joined in one process group; return rank 0's
    result. ``nproc == 1`` or an already initialised group (torchrun): call ``fn`` here.

    A rank that raises makes ``launch`` raise (``torch.multiprocessing.ProcessRaisedException``
    carries its traceback); the other ranks are terminated.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if nproc == 1 or dist.is_initialized():
        return fn(*args)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend)
        return fn(*args)
    with tempfile.TemporaryDirectory(prefix="scaledet-launch-") as tmp:
        result = Path(tmp) / "rank0.pkl"
        mp.start_processes(_worker, args=(nproc, _free_port(), device_type, fn, args,
                                          str(result)), nprocs=nproc, join=True,
                           start_method="spawn")
        return pickle.loads(result.read_bytes())  # written by our own rank 0 just now
