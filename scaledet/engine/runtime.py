"""Process-level setup of a training run: seeds and RNG state (for exact resume), and the heap
settings a CPU training process runs with."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

MALLOC_TRIM_THRESHOLD = 1 << 30
MALLOC_MMAP_THRESHOLD = 32 << 20


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the OS.

    By default glibc serves blocks above a (dynamic) threshold with their own ``mmap`` and
    returns freed memory at the top of the heap: a training step's activations (a few MB each)
    are then faulted in page by page at every step, which costs several microseconds a page
    on a virtual machine. Blocks up to 32 MB come from the heap and up to 1 GB of free memory
    is kept, so those pages are reused; memory freed during training then stays with the
    process. Does nothing when
    a ``MALLOC_*`` environment variable is set (the user's choice wins) or off glibc. Returns
    whether the settings were applied.
    """
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)
                    and libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        return False


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global RNG is what user code may use
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors/ints/lists (``weights_only``-loadable)."""
    py = random.getstate()
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopRequest:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM becomes a request to stop after the
    current step (``requested`` turns True), so that the run can save a resumable state at a
    step boundary; a second one interrupts at once (``KeyboardInterrupt``). Outside the main
    thread, where signal handlers cannot be installed, it does nothing."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, message: str | None = None) -> None:
        self.requested = False
        self.signal_name = ""
        self.message = message
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                num = getattr(signal, name)
                self._previous[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for num, handler in self._previous.items():
            signal.signal(num, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        import signal
        import sys

        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self.message:
            print(self.message.format(signal=self.signal_name), file=sys.stderr, flush=True)
