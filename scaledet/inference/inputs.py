"""Turn whatever a user passes as images into ``(3, H, W)`` uint8 RGB tensors.

Accepted, alone or in a list / tuple / iterator (mixed freely):

* a path (``str`` or ``os.PathLike``): decoded with :func:`scaledet.data.read_image` (EXIF
  orientation applied);
* a folder: its image files (sorted, not recursive; :func:`scaledet.data.images.collect_images`);
* a glob pattern (a ``str`` with ``*``, ``?`` or ``[`` that is not an existing path, e.g.
  ``"shots/*.jpg"``, ``"data/**/*.png"`` recursive): the image files it matches, sorted;
* a ``PIL.Image.Image`` (any mode; converted to RGB);
* a numpy array ``(H, W, 3)``, ``(H, W, 4)`` (alpha dropped), ``(H, W)`` (grey) or a batch
  ``(B, H, W, 3)`` - numpy images are **HWC**;
* a torch tensor ``(3, H, W)``, ``(H, W)`` or a batch ``(B, 3, H, W)`` - tensors are **CHW**.

Pixel values: uint8 in ``0..255``, or floating point in ``[0, 1]`` (quantised to uint8, the form a
decoded image file has, so every input goes through the same letterbox).

:func:`iter_images` is lazy: folders and patterns are listed when reached and each file is
decoded only when its image is asked for, so a big folder can be streamed.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


@dataclass
class InputImage:
    """One image ready for inference: ``image`` ``(3, H, W)`` uint8 RGB, and its file if any."""

    image: Tensor
    path: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])


def as_images(images) -> list[InputImage]:
    """Normalise one image, a batch, or a list of images (see the module docstring)."""
    return list(iter_images(images))


def iter_images(images) -> Iterator[InputImage]:
    """:func:`as_images`, one image at a time: files are read only when reached."""
    items = images if isinstance(images, (list, tuple, Iterator)) else (images,)
    for item in items:
        files = image_files(item) if isinstance(item, (str, os.PathLike)) else None
        if files is None:
            yield from _one_or_batch(item)
        else:
            for f in files:
                yield from _one_or_batch(f)


def image_files(source: str | os.PathLike) -> list[Path] | None:
    """The image files a folder or a glob pattern stands for (sorted), or None when ``source``
    is neither (a file, or a path that does not exist: reading it says so)."""
    from scaledet.data.images import IMAGE_SUFFIXES, collect_images

    path = Path(source)
    if path.is_dir():
        return collect_images([str(path)])
    pattern = os.fspath(source)
    if path.exists() or not any(c in pattern for c in "*?["):
        return None
    files = sorted(Path(f) for f in glob.iglob(pattern, recursive=True)
                   if Path(f).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(f))
    if not files:
        raise ValueError(f"{pattern}: no image file matches this pattern (looked for "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    return files


def _one_or_batch(item) -> list[InputImage]:
    if isinstance(item, InputImage):
        return [item]
    if isinstance(item, (str, os.PathLike)):
        from scaledet.data import read_image

        return [InputImage(_from_hwc(read_image(item), "image file"), str(item))]
    if isinstance(item, Image.Image):
        return [InputImage(_from_hwc(np.asarray(item.convert("RGB")), "PIL image"))]
    if isinstance(item, np.ndarray):
        if item.ndim == 4:
            return [InputImage(_from_hwc(a, "numpy batch item")) for a in item]
        return [InputImage(_from_hwc(item, "numpy image"))]
    if isinstance(item, Tensor):
        if item.dim() == 4:
            return [InputImage(_from_chw(t, "tensor batch item")) for t in item]
        return [InputImage(_from_chw(item, "tensor image"))]
    raise ValueError(f"images: cannot use a {type(item).__name__}; pass paths, PIL images, "
                     "numpy (H, W, 3) arrays or (3, H, W) tensors (or lists / batches of them)")


def _from_hwc(a: np.ndarray, what: str) -> Tensor:
    """numpy ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` -> ``(3, H, W)`` uint8 tensor."""
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        hint = (" (numpy images are HWC: use a.transpose(1, 2, 0))"
                if a.ndim == 3 and a.shape[0] in (1, 3) else "")
        raise ValueError(f"{what}: expected an (H, W, 3) array, got shape {a.shape}{hint}")
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only memory
        a = a.copy()
    chw = torch.from_numpy(a).permute(2, 0, 1)
    return _rgb_uint8(chw, what)


def _from_chw(t: Tensor, what: str) -> Tensor:
    """tensor ``(H, W)``, ``(1|3|4, H, W)`` -> ``(3, H, W)`` uint8 on the CPU."""
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        hint = (" (tensors are CHW: use t.permute(2, 0, 1))"
                if t.dim() == 3 and t.shape[2] in (1, 3) else "")
        raise ValueError(f"{what}: expected a (3, H, W) tensor, got shape {tuple(t.shape)}{hint}")
    return _rgb_uint8(t.detach().cpu(), what)


def _rgb_uint8(chw: Tensor, what: str) -> Tensor:
    if chw.shape[-2] < 1 or chw.shape[-1] < 1:
        raise ValueError(f"{what}: empty image of shape {tuple(chw.shape)}")
    chw = chw[:3] if chw.shape[0] == 4 else chw
    chw = chw.expand(3, -1, -1) if chw.shape[0] == 1 else chw
    if chw.dtype == torch.uint8:
        return chw
    if not chw.is_floating_point():
        raise ValueError(f"{what}: pixels must be uint8 (0..255) or float in [0, 1], "
                         f"got {chw.dtype}")
    lo, hi = float(chw.min()), float(chw.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
        raise ValueError(f"{what}: float pixels must be in [0, 1], got values in "
                         f"[{lo:g}, {hi:g}] (pass uint8 for 0..255 images)")
    return (chw.float() * 255).round_().to(torch.uint8)

