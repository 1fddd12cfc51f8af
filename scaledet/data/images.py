"""Reading images as ``(H, W, 3)`` uint8 RGB arrays, robustly.

``read_image`` decodes JPEG and PNG with ``torchvision.io.decode_image`` (libjpeg-turbo / libpng
called on the bytes already in memory, writing straight into a tensor) and everything else, and
every request for a reduced size, with PIL. Both call the same C libraries; torchvision skips
PIL's extra passes (its tile decoder writes into PIL's own buffer, ``convert`` and ``asarray``
copy the image again), so it is the faster reader (``benchmarks/bench_images.py`` compares
them). For huge JPEGs with ``max_side`` we use PIL's ``draft`` mode instead, which decodes at
1/2, 1/4 or 1/8 scale inside libjpeg (the full-resolution image never exists in memory);
torchvision cannot do that.

Every failure (missing, unreadable, corrupt or truncated file, too many pixels) raises
``ImageReadError`` naming the path, so a data loader can count and skip bad images.

Conversions: EXIF orientation is applied (the returned array is upright; ``image_size`` reports
the upright size), grayscale / palette / CMYK become RGB, an alpha channel is dropped, and 16-bit
images are scaled to 8 bit (``v * 255 / 65535``, not clipped as PIL's ``convert("RGB")`` does).
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Refuse to decode more pixels than this (about 800 MB as RGB uint8) unless a reduced size is
# requested. PIL's own guard (Image.MAX_IMAGE_PIXELS, a warning at 89 M pixels and an error at
# twice that) is replaced by this explicit limit while we open a file.
MAX_PIXELS = 2**28

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotate by 90 or 270 degrees: width and height swap


class ImageReadError(ValueError):
    """An image file is missing, unreadable, corrupt, truncated or too large; names the path."""


def read_image(path: str | Path, max_side: int | None = None, *,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as an upright ``(H, W, 3)`` uint8 RGB array.

    Args:
        path: image file.
        max_side: when given, shrink (never enlarge) so that ``max(H, W) <= max_side``, keeping
            the aspect ratio. JPEGs are then decoded at reduced scale (memory stays small even for
            gigapixel files); the caller rescales boxes by ``W / record.width``.
        max_pixels: refuse images with more pixels than this when ``max_side`` is not given.

    Raises:
        ImageReadError: the file is missing, unreadable, corrupt, truncated or too large.
    """
    path = Path(path)
    data = _read_bytes(path)
    with _open_pil(path, data) as im:
        return _decode(path, data, im, max_side, max_pixels)


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read image ({e.strerror or e})") from e
    if not data:
        raise ImageReadError(f"{path}: empty file")
    return data


def _decode(path: Path, data: bytes, im: Image.Image, max_side: int | None,
            max_pixels: int) -> np.ndarray:
    """``read_image`` once the file is read (``data``) and its header parsed (``im``)."""
    width, height = im.size
    if max_side is None and width * height > max_pixels:
        raise ImageReadError(
            f"{path}: {width}x{height} image has more than max_pixels={max_pixels} pixels; "
            "pass max_side to read it reduced")
    if max_side is None and im.format in ("JPEG", "PNG"):
        return _decode_torchvision(path, data)
    return _decode_pil(path, im, max_side)


def read_image_for_side(path: str | Path, max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image that is about to be resized so that its longer side is ``max_side``.

    A JPEG at least twice that size is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (PIL's
    ``draft`` mode: the smallest that is still at least the target size on both sides), which
    skips most of the decoding work; any other image is read in full by ``read_image``. The
    caller still resizes the result to the exact target size.

    Returns:
        ``(upright (h, w, 3) uint8 RGB array, upright (H, W) of the file at full size)``;
        ``h >= H * max_side / max(H, W)`` (up to rounding) and likewise for ``w``.

    Raises:
        ImageReadError: as ``read_image``.
    """
    path = Path(path)
    data = _read_bytes(path)
    with _open_pil(path, data) as im:
        width, height = im.size
        if _orientation(im) in _TRANSPOSING_ORIENTATIONS:
            upright = (width, height)
        else:
            upright = (height, width)
        scale = max_side / max(width, height)
        if im.format != "JPEG" or scale > 0.5:
            return _decode(path, data, im, None, MAX_PIXELS), upright
        try:
            im.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            im.load()
            return _pil_to_rgb_array(ImageOps.exif_transpose(im)), upright
        except Exception as e:
            raise ImageReadError(f"{path}: corrupt or truncated image ({_first_line(e)})") from e


def image_size(path: str | Path) -> tuple[int, int]:
    """Upright ``(width, height)`` of an image, read from the file header only (no decoding).

    Raises:
        ImageReadError: the file is missing or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: cannot read image (no such file)")
    with _open_pil(path, path) as im:  # PIL reads only the header from the file
        width, height = im.size
        if _orientation(im) in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        return width, height


_PIXEL_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pixel_limit(limit: int | None):
    """Set PIL's global ``MAX_IMAGE_PIXELS`` for the duration (locked: threads share the global,
    and interleaved save/restore pairs could otherwise leave it changed)."""
    with _PIXEL_LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


@contextmanager
def _open_pil(path: Path, source: bytes | Path):
    """PIL image opened lazily (header parsed, pixels not decoded) from bytes or a file.

    PIL names what it was given in its messages, which for bytes is the ``repr`` of an
    in-memory buffer (``<_io.BytesIO object at 0x...>``); the error names the file instead."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with _pixel_limit(None):  # our own MAX_PIXELS check replaces PIL's
            im = Image.open(stream)
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        detail = str(e).replace(repr(stream), path.name).replace(repr(str(path)), path.name)
        raise ImageReadError(f"{path}: not a readable image ({detail})") from e
    with im:
        yield im


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block is ignored, as browsers do
        return 1


def _decode_torchvision(path: Path, data: bytes) -> np.ndarray:
    import torch
    from torchvision.io import ImageReadMode, decode_image

    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 io notice
            chw = decode_image(buffer, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({_first_line(e)})") from e
    if chw.dtype != torch.uint8:  # 16-bit PNG
        chw = _to_uint8(chw.to(torch.int64).numpy(), 65535)
        return np.ascontiguousarray(chw.transpose(1, 2, 0))
    return np.ascontiguousarray(chw.permute(1, 2, 0).numpy())


def _decode_pil(path: Path, im: Image.Image, max_side: int | None) -> np.ndarray:
    try:
        if max_side is not None:
            im.thumbnail((max_side, max_side), reducing_gap=2.0)  # uses JPEG draft mode
        else:
            im.load()
        im = ImageOps.exif_transpose(im)
        return _pil_to_rgb_array(im)
    except Exception as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({_first_line(e)})") from e


def _pil_to_rgb_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(im).astype(np.float64)
        gray = _to_uint8(values, 65535 if values.max(initial=0) > 255 else 255)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def _to_uint8(values: np.ndarray, max_value: int) -> np.ndarray:
    values = np.clip(values, 0, max_value)
    return ((values * 255 + max_value // 2) // max_value).astype(np.uint8)


def _first_line(e: Exception) -> str:
    """The useful part of a decoder error (torchvision prefixes its C++ source location)."""
    text = str(e).strip().splitlines()
    return text[-1].rsplit(".cpp:", 1)[-1].lstrip("0123456789, ") if text else type(e).__name__


def collect_images(sources: list[str]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the given folders."""
    files: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"source not found: {p}")
    if not files:
        raise ValueError(f"no images found in {' '.join(sources)} "
                         f"(looked for {', '.join(IMAGE_SUFFIXES)})")
    return files
