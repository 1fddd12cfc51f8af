"""Checkpoints that are safe to load and safe to write.

* Weights: ``NAME.safetensors`` (tensors only, never code). The metadata (model preset and full
  config, class names, category ids, image size, training args, epoch/step, best mAP) is embedded
  in the safetensors header *and* written beside it as ``NAME.json`` for people to read, so a
  crash between the two writes cannot leave weights with someone else's metadata.
* The resume state of a training run (``NAME.state.pt``) is :mod:`scaledet.engine.checkpoint`'s.
* Every file is written atomically: a temp file in the same folder, flushed and fsync'ed, then
  ``os.replace``; a write killed midway leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from torch import nn

META_KEY = "scaledet"
FORMAT_VERSION = 1


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one.

    The file gets the permissions of any file the process creates (``0o666`` less the umask,
    0644 under the usual 022), not the owner-only 0600 of ``tempfile.mkstemp``: the temp file
    is created with ``os.open(..., 0o666)``, which applies the umask without changing it (reading
    the umask means setting it, which races with other threads creating files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:  # O_EXCL: a name no one else holds (64 random bits; a clash just tries again)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_jsonable(obj: Any) -> Any:
    """Paths -> str, tuples -> lists, numpy/torch scalars -> Python numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalar
        return obj.item()
    return obj


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor],
                 meta: dict[str, Any]) -> Path:
    """Atomically write ``path`` (``.safetensors``) and ``path.with_suffix('.json')``.

    Args:
        state_dict: name -> tensor (copied to CPU, contiguous; shared storage is fine).
        meta: JSON-serialisable metadata (see module docstring).
    Returns:
        the safetensors path.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights path must end with .safetensors, got {path}")
    meta = {"format_version": FORMAT_VERSION, **to_jsonable(meta)}
    text = json.dumps(meta, indent=1)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    atomic_write_bytes(path, save(tensors, metadata={META_KEY: text}))
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())
    return path


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a ``.safetensors`` file: ``(state_dict on CPU, metadata dict)``.

    The metadata comes from the file's header; for third-party files without it, from the
    ``.json`` beside (or ``{}``).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = load_file(str(path), device="cpu")
        meta = _read_header_meta(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    if meta is None:
        side = path.with_suffix(".json")
        meta = json.loads(side.read_text()) if side.is_file() else {}
    return state, meta


def _read_header_meta(path: Path) -> dict[str, Any] | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    text = header.get(META_KEY)
    return json.loads(text) if text else None


def model_from_weights(path: str | os.PathLike,
                       device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a scaledet checkpoint describes and load its weights (eval mode)."""
    from scaledet.models.factory import build_from_config

    state, meta = load_weights(path)
    if "model_config" not in meta:
        raise ValueError(f"{path}: no scaledet metadata (model_config) in the file or beside it")
    model = build_from_config(meta["model_config"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the model config "
                         f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)")
    return model.to(device).eval(), meta
