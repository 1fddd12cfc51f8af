"""Where a model runs and in which precision: device names and autocast dtypes.

Both training (:mod:`scaledet.engine`) and inference (:mod:`scaledet.inference`) choose a device
the same way, so it lives here, below both.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a ``torch.device``; a ``ValueError`` naming the
    problem for an unknown name or a CUDA device on a machine without one."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full fp32)."""
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "fp16":
        raise ValueError("--amp fp16 is for CUDA; use --amp bf16 on CPU")
    if amp == "auto":  # by the flags; `scaledet train` times both on the model instead, as
        return torch.bfloat16 if cpu_has_native_bf16() else None  # some such CPUs lose with bf16
    return torch.bfloat16


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16, read from
    /proc/cpuinfo); without them bf16 autocast is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
