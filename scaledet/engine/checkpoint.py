"""The resume state of a training run: ``NAME.state.pt``, a ``torch.save`` of plain
tensors/ints/floats/lists/dicts, written atomically and read back with
``torch.load(weights_only=True)`` (no code from the file is executed). Weight files are
:mod:`scaledet.models.checkpoint`'s.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from scaledet.models.checkpoint import atomic_write_bytes


def save_train_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a resume state made only of tensors/numbers/strings/lists/dicts."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a resume state with ``weights_only=True`` (no code is executed), onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which one
        raise ValueError(f"{path}: cannot read resume state ({type(e).__name__}: {e})") from None
