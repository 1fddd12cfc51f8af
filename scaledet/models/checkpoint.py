"""Checkpoints that are safe to load and safe to write.

* Weights: ``NAME.safetensors`` (tensors only, never code). The metadata (model preset and full
  config, class names, category ids, image size, training args, epoch/step, best mAP) is embedded
  in the safetensors header *and* written beside it as ``NAME.json`` for people to read, so a
  crash between the two writes cannot leave weights with someone else's metadata.
* The resume state of a training run (``NAME.state.pt``) is :mod:`scaledet.engine.checkpoint`'s.
* Every file is written atomically: a temp file in the same folder, flushed and fsync'ed, then
  ``os.replace``; a write killed midway leaves the previous file intact.
* An adapted model's checkpoint (:mod:`scaledet.models.adapters`) holds only the tensors it
  trained; its metadata names the adapter (``"adapter"``) and the base checkpoint it was
  trained on (``"base_weights"``: path and SHA-256), which :func:`model_from_weights` finds,
  checks and loads first. :func:`save_standalone` writes it as one self-contained file.
"""

from __future__ import annotations

import hashlib
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


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a ``.safetensors`` checkpoint without reading its tensors (header, else
    the ``.json`` beside it, else ``{}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        meta = _read_header_meta(path)
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    if meta is None:
        side = path.with_suffix(".json")
        meta = json.loads(side.read_text()) if side.is_file() else {}
    return meta


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_reference(path: str | os.PathLike) -> dict[str, str]:
    """How an adapted checkpoint names its base: absolute path and SHA-256."""
    path = Path(path).resolve()
    return {"path": str(path), "sha256": file_sha256(path)}


def resolve_base(path: str | os.PathLike, meta: dict[str, Any],
                 base: str | os.PathLike | None = None) -> Path:
    """The base checkpoint of the adapted checkpoint ``path``: ``base`` if given, else the
    first of the recorded path and a file of that name beside ``path`` whose SHA-256 is the
    recorded one. The hash is required (an adapted checkpoint holds only the trained tensors,
    which mean nothing on another base): a ``ValueError`` names ``path`` when it is not
    recorded, or lists the files tried and their hashes when none matches."""
    ref = meta.get("base_weights") or {}
    expected = ref.get("sha256")
    recorded = Path(str(ref.get("path", "")))
    if not expected:
        raise ValueError(f"{path}: its base_weights entry records no SHA-256, so its base "
                         f"checkpoint ({recorded}) cannot be verified; re-save it with the "
                         "base's sha256 in base_weights")
    candidates = [Path(base)] if base is not None else [recorded,
                                                        Path(path).parent / recorded.name]
    existing = list(dict.fromkeys(c for c in candidates if c.is_file()))
    if not existing:
        tried = ", ".join(str(c) for c in candidates)
        raise FileNotFoundError(f"{path}: its base checkpoint was not found (tried {tried}); it "
                                "holds only the adapted tensors: put the base there or pass "
                                "base=")
    digests = {}
    for candidate in existing:
        digests[candidate] = file_sha256(candidate)
        if digests[candidate] == expected:
            return candidate
    found = "; ".join(f"{c} has SHA-256 {d}" for c, d in digests.items())
    raise ValueError(f"{path}: no candidate base checkpoint is the one the model was adapted "
                     f"from (SHA-256 {expected}, recorded as {recorded}): {found}; pass the "
                     "right file as base=")


def model_from_weights(path: str | os.PathLike, device: str | torch.device = "cpu", *,
                       merge: bool = True, base: str | os.PathLike | None = None
                       ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a scaledet checkpoint describes and load its weights (eval mode).

    An adapted checkpoint is loaded onto its base (:func:`resolve_base`; ``base`` overrides
    the recorded path). ``merge``: fold LoRA updates into plain weights
    (:func:`~scaledet.models.adapters.merge_lora`), as every inference path wants (it folds
    BatchNorm into the convolutions next, which a separate low-rank branch would not
    follow); ``merge=False`` keeps the adapter layers and their ``requires_grad`` flags (to
    count or continue training them)."""
    from scaledet.models.adapters import AdapterConfig, apply_adapters, merge_lora
    from scaledet.models.factory import build_from_config

    state, meta = load_weights(path)
    if "model_config" not in meta:
        raise ValueError(f"{path}: no scaledet metadata (model_config) in the file or beside it")
    model = build_from_config(meta["model_config"], flip_index=meta.get("flip_index"))
    adapter = meta.get("adapter")
    if adapter is not None and meta.get("base_weights"):
        base_path = resolve_base(path, meta, base)
        base_model, _ = model_from_weights(base_path, "cpu")
        own = model.state_dict()
        from_base = {k: v for k, v in base_model.state_dict().items()
                     if k in own and k not in state and v.shape == own[k].shape}
        absent = [k for k in own if k not in from_base and k not in state]
        if absent:
            raise ValueError(f"{path}: its base {base_path} does not fit the model its metadata "
                             f"describes ({len(absent)} tensors missing or of another shape: "
                             f"{', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''})")
        model.load_state_dict(from_base, strict=False)
        del base_model
    if adapter is not None:
        apply_adapters(model, AdapterConfig.from_dict(adapter))
    own = model.state_dict()
    if adapter is not None and meta.get("base_weights"):
        unexpected = [k for k in state if k not in own]
        missing = [k for k in model.trained_keys if k not in state]
        reshaped = [k for k in state if k in own and state[k].shape != own[k].shape]
        if missing or unexpected or reshaped:
            raise ValueError(f"{path}: the adapted tensors do not match the model its metadata "
                             f"describes (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                             f"other shape {reshaped[:3]})")
        model.load_state_dict(state, strict=False)
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not match the model config "
                             f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)")
    if merge:
        merge_lora(model)
    return model.to(device).eval(), meta


def save_standalone(path: str | os.PathLike, out: str | os.PathLike,
                    base: str | os.PathLike | None = None) -> Path:
    """Write the checkpoint ``path`` as one self-contained file ``out``: an adapted one with
    its base's tensors included and LoRA merged (a LoRA model becomes a plain checkpoint; one
    with bottleneck adapters or prefixes keeps them, described by ``"adapter"``). The base it
    came from is kept in the metadata as ``"adapted_from"``."""
    model, meta = model_from_weights(path, "cpu", base=base)
    meta = dict(meta)
    if meta.get("base_weights"):
        meta["adapted_from"] = {**meta.pop("base_weights"),
                                "adapter": meta.get("adapter")}
    cfg = getattr(model, "adapter_config", None)
    if cfg is None or cfg.kind == "head":  # nothing beyond the plain model's structure
        meta.pop("adapter", None)
    else:
        meta["adapter"] = cfg.to_dict()
    return save_weights(out, model.state_dict(), meta)
