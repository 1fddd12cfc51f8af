"""Box formats and simple box arithmetic.

Formats (the last dimension of every box tensor has 4 numbers, continuous pixel coordinates,
x to the right, y down):

- ``xyxy``: ``(x1, y1, x2, y2)`` top-left and bottom-right corners (scaledet's internal format),
- ``xywh``: ``(x1, y1, w, h)`` top-left corner and size (COCO),
- ``cxcywh``: ``(cx, cy, w, h)`` centre and size (YOLO labels, DETR).

``box_convert``, ``box_area`` and ``remove_small_boxes`` wrap torchvision's functions (adding
argument checks with clear messages); ``clip_boxes`` and ``scale_boxes`` are one-liners.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def check_boxes(boxes: Tensor, name: str = "boxes", ndim: int | None = None,
                finite: bool = True) -> None:
    """Raise ``ValueError`` unless ``boxes`` is a tensor of shape ``(..., 4)``.

    Args:
        boxes: the tensor to check.
        name: argument name used in the error message.
        ndim: required number of dimensions (``None``: any, at least 1).
        finite: also reject NaN/inf coordinates (one reduction; on CUDA it synchronises).
    """
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {tuple(boxes.shape)}")
    if ndim is not None and boxes.dim() != ndim:
        want = "(N, 4)" if ndim == 2 else f"{ndim} dimensions"
        raise ValueError(f"{name} must have shape {want}, got {tuple(boxes.shape)}")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise ValueError(f"{name} must be a real-valued tensor, got dtype {boxes.dtype}")
    if finite and not all_finite(boxes):
        bad = int((~torch.isfinite(boxes)).sum())
        raise ValueError(f"{name} contains {bad} NaN or inf coordinate(s)")


def all_finite(values: Tensor) -> bool:
    """True when no element is NaN or inf.

    Uses min/max (NaN propagates through both) rather than ``isfinite(x).all()``: one reduction,
    which stays cheap on a busy CPU where the two-pass form spends milliseconds in thread wake-ups.
    """
    if not values.is_floating_point() or values.numel() == 0:
        return True
    return bool(torch.isfinite(torch.stack(torch.aminmax(values))).all())


def _check_fmt(fmt: str, name: str) -> None:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``(..., 4)`` boxes between ``xyxy``, ``xywh`` and ``cxcywh``.

    Wraps ``torchvision.ops.box_convert``. Returns a new tensor (a copy when the formats
    are equal), same shape and dtype.
    """
    check_boxes(boxes, finite=False)
    _check_fmt(in_fmt, "in_fmt")
    _check_fmt(out_fmt, "out_fmt")
    return torchvision.ops.box_convert(boxes, in_fmt, out_fmt)


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area of ``(..., 4)`` boxes in ``fmt``, shape ``(...)``, in pixels squared.

    Wraps ``torchvision.ops.box_area``: float16/bfloat16 and integer boxes are upcast
    (float32 / int32) because areas overflow float16 above 65504 px^2.
    """
    check_boxes(boxes, finite=False)
    _check_fmt(fmt, "fmt")
    return torchvision.ops.box_area(boxes, fmt=fmt)


def _check_size(size: tuple[int, int]) -> tuple[float, float]:
    try:
        h, w = size
        h, w = float(h), float(w)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if not (h >= 0 and w >= 0):
        raise ValueError(f"size must be non-negative (height, width), got {size!r}")
    return h, w


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip ``(..., 4)`` xyxy boxes to an image of ``size=(height, width)`` pixels.

    x is clamped to ``[0, width]`` and y to ``[0, height]`` (continuous coordinates, so a box
    may touch the right border at ``x2 == width``). Same as torchvision's
    ``clip_boxes_to_image``, in one clamp.
    """
    check_boxes(boxes, finite=False)
    h, w = _check_size(size)
    limits = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
    return boxes.clamp(min=0).minimum(limits)


def to_original_pixels(boxes: Tensor, scale: float, orig_size: tuple[int, int]) -> Tensor:
    """Undo a letterbox: ``(K, 4)`` xyxy input-frame pixels divided by the letterbox ``scale``,
    as float32, clipped to the original image ``orig_size=(height, width)``."""
    return clip_boxes(boxes.float() / scale, orig_size)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64, ascending) of the ``(N, 4)`` xyxy boxes whose width and height are both
    ``>= min_size`` pixels. Wraps ``torchvision.ops.remove_small_boxes``."""
    check_boxes(boxes, ndim=2, finite=False)
    return torchvision.ops.remove_small_boxes(boxes, float(min_size))


def scale_boxes(boxes: Tensor, sx: float, sy: float) -> Tensor:
    """Scale ``(..., 4)`` boxes by ``sx`` horizontally and ``sy`` vertically (about the origin).

    Works for all three formats (``xyxy``, ``xywh``, ``cxcywh``): every x coordinate and width is
    multiplied by ``sx``, every y coordinate and height by ``sy``. Used to map boxes between a
    resized image and the original (``sx = original_width / resized_width``). Integer boxes
    come back as float32.
    """
    check_boxes(boxes, finite=False)
    if not boxes.is_floating_point():
        boxes = boxes.float()  # integer boxes would truncate the factors
    factors = torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)
    return boxes * factors
