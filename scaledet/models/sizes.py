"""The one rule for an input size (``imgsz``): a positive multiple of the model's largest stride.

A :class:`~scaledet.models.detector.Detector` pads its input at the bottom/right to a multiple
of ``size_divisor`` so that every level's map lines up with the next; a side that is not such a
multiple is therefore run at the next multiple anyway, with the extra pixels wasted on padding.
So every command takes ``imgsz`` through :func:`check_imgsz`: other positive values are rounded
up (with a one-line note saying so), zero and negative values are an error.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from scaledet.models.detector import SIZE_DIVISOR


class InputSize(NamedTuple):
    """What :func:`check_imgsz` returns: the side to use, and a note when it was rounded up
    (``None`` when ``imgsz`` was already a multiple of the stride)."""

    imgsz: int
    note: str | None


def check_imgsz(imgsz: int, stride: int) -> InputSize:
    """``imgsz`` as a multiple of ``stride`` (the model's largest stride), rounded up.

    Raises ``ValueError`` for a side below 1 or a non-integer one. A side that is not a multiple
    comes back rounded up to the next one together with a one-line note for the user, e.g.
    ``note: imgsz 33 rounded up to 64, a multiple of the largest stride 32``.
    """
    try:
        whole = not isinstance(imgsz, bool) and int(imgsz) == imgsz
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ValueError(f"imgsz must be a whole number of pixels, got {imgsz!r}")
    imgsz, stride = int(imgsz), int(stride)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if imgsz < 1:
        raise ValueError(f"imgsz must be a positive multiple of the largest stride {stride}, "
                         f"got {imgsz}")
    size = -(-imgsz // stride) * stride
    if size == imgsz:
        return InputSize(size, None)
    return InputSize(size, f"note: imgsz {imgsz} rounded up to {size}, a multiple of the "
                           f"largest stride {stride}")


def model_stride(model: Any) -> int:
    """Largest stride of a built model: the multiple its input is padded to
    (``size_divisor``), or a larger output stride of its head; 32 for every preset."""
    strides = [int(s) for s in getattr(getattr(model, "head", None), "strides", ())]
    return max([int(getattr(model, "size_divisor", SIZE_DIVISOR)), *strides])


def config_stride(strides: tuple[int, ...] | list[int]) -> int:
    """Largest stride of a model described by its config's ``strides`` (the backbone stages it
    uses), before the model exists: the same number :func:`model_stride` gives the built model.
    A dilated last stage keeps its stage in ``strides`` and runs it at stride 16, which divides
    the result, so the rule does not change with ``backbone.dilated``."""
    return max([SIZE_DIVISOR, *(int(s) for s in strides)])
