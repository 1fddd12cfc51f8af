import numpy as np
import pytest
from PIL import Image, ImageOps

from scaledet.data.images import ImageReadError, image_size, read_image, read_image_for_side
from tests.data.conftest import write_image


def _pattern(h: int = 20, w: int = 40) -> np.ndarray:
    """Asymmetric picture (smooth, so JPEG keeps it): red left half, blue right, green top row."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (220, 30, 30)
    a[:, w // 2:] = (30, 30, 220)
    a[:4] = (30, 220, 30)
    return a


def test_png_exact_and_jpeg_matches_pil(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, pixels)
    write_image(tmp_path / "b.jpg", 50, 30)
    with Image.open(tmp_path / "b.jpg") as im:
        reference = np.asarray(im.convert("RGB")).astype(int)
    fast = read_image(tmp_path / "b.jpg").astype(int)  # torchvision
    slow = read_image(tmp_path / "b.jpg", max_side=1000).astype(int)  # PIL path
    assert fast.shape == (30, 50, 3)
    assert np.abs(fast - reference).max() <= 2 and np.abs(slow - reference).max() == 0


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_applied(tmp_path, suffix, orientation):
    path = tmp_path / f"rot{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_pattern()).save(path, exif=exif.tobytes())
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(int)
    assert expected.shape[:2] == ((20, 40) if orientation == 3 else (40, 20))
    for max_side in (None, 1000):  # torchvision path, PIL path
        out = read_image(path, max_side=max_side).astype(int)
        assert out.shape == expected.shape
        assert np.abs(out - expected).mean() < 3
    assert image_size(path) == (expected.shape[1], expected.shape[0])


def test_grayscale_rgba_palette_cmyk(tmp_path):
    gray = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(gray[..., None], 3, 2))
    Image.fromarray(gray, "L").save(tmp_path / "g.jpg", quality=95)
    out = read_image(tmp_path / "g.jpg")
    assert out.shape == (12, 20, 3) and (out[..., 0] == out[..., 2]).all()

    rgba = np.random.default_rng(1).integers(0, 256, (10, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])

    palette = Image.fromarray(_pattern()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.save(tmp_path / "p.png")
    palette.save(tmp_path / "p.gif")
    expected = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expected)
    np.testing.assert_array_equal(read_image(tmp_path / "p.gif"), expected)

    Image.fromarray(_pattern()).convert("CMYK").save(tmp_path / "c.tif")
    assert np.abs(read_image(tmp_path / "c.tif").astype(int) - _pattern()).max() <= 2


def test_16bit_png_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(3, 0)
    Image.fromarray(values).save(tmp_path / "d.png")  # mode I;16 -> 16-bit PNG
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I")
    for max_side in (None, 1000):  # torchvision path, PIL path
        out = read_image(tmp_path / "d.png", max_side=max_side)
        assert out.dtype == np.uint8 and out.shape == (3, 4, 3)
        np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_and_corrupt(tmp_path, suffix):
    good = write_image(tmp_path / f"good{suffix}", 64, 64, fmt="JPEG" if suffix == ".jpg" else "PNG")
    data = good.read_bytes()
    (tmp_path / f"trunc{suffix}").write_bytes(data[: len(data) // 2])
    (tmp_path / f"garbage{suffix}").write_bytes(b"\x00\x01garbage" * 50)
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    for name in ("trunc", "garbage", "empty"):
        path = tmp_path / f"{name}{suffix}"
        for max_side in (None, 32):
            with pytest.raises(ImageReadError, match=str(path)):
                read_image(path, max_side=max_side)
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(tmp_path / f"trunc{suffix}")


def test_missing_file_is_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="missing.jpg: cannot read"):
        read_image(tmp_path / "missing.jpg")
    assert issubclass(ImageReadError, ValueError)
    with pytest.raises(ImageReadError):
        image_size(tmp_path / "missing.jpg")


def test_max_side_reduces_large_jpeg(tmp_path):
    big = np.zeros((1200, 2000, 3), np.uint8)
    big[:, :1000] = (200, 50, 50)
    big[:, 1000:] = (50, 50, 200)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    out = read_image(tmp_path / "big.jpg", max_side=200)
    assert out.shape == (120, 200, 3)
    assert abs(int(out[60, 20, 0]) - 200) < 8 and abs(int(out[60, 180, 2]) - 200) < 8
    assert read_image(tmp_path / "big.jpg", max_side=5000).shape == (1200, 2000, 3)  # no upscaling


@pytest.mark.parametrize("orientation", [1, 6])
def test_read_image_for_side_decodes_big_jpegs_reduced(tmp_path, orientation):
    """A JPEG 4x+ the target comes back at 1/2..1/8 scale but never below the target size,
    upright, with the full-size upright (H, W); small ones and PNGs come back in full."""
    big = np.zeros((1200, 2000, 3), np.uint8)
    big[:, :1000] = (200, 50, 50)
    big[:, 1000:] = (50, 50, 200)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90, exif=exif.tobytes())
    full = read_image(tmp_path / "big.jpg")
    out, size = read_image_for_side(tmp_path / "big.jpg", 300)
    assert size == full.shape[:2] == ((1200, 2000) if orientation == 1 else (2000, 1200))
    h, w = (180, 300) if orientation == 1 else (300, 180)
    assert h <= out.shape[0] < 2 * h and w <= out.shape[1] < 2 * w  # 1/4 scale: 300 x 500
    step = full.shape[0] // out.shape[0]
    assert np.abs(out.astype(int) - full[::step, ::step].astype(int)).mean() < 4
    out, size = read_image_for_side(tmp_path / "big.jpg", 1500)  # under 2x: a full decode
    np.testing.assert_array_equal(out, full)
    Image.fromarray(big).save(tmp_path / "big.png")
    out, size = read_image_for_side(tmp_path / "big.png", 300)
    assert out.shape == (1200, 2000, 3) and size == (1200, 2000)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_image_for_side(tmp_path / "bad.jpg", 300)


def test_pixel_limit_is_ours_not_pils(tmp_path, monkeypatch):
    write_image(tmp_path / "a.jpg", 64, 64)
    with pytest.raises(ImageReadError, match="max_pixels"):
        read_image(tmp_path / "a.jpg", max_pixels=1000)
    assert read_image(tmp_path / "a.jpg", max_side=16, max_pixels=1000).shape == (16, 16, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL would call this a bomb
    assert read_image(tmp_path / "a.jpg").shape == (64, 64, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored


def test_image_size_reads_header(tmp_path):
    write_image(tmp_path / "a.png", 33, 17, fmt="PNG")
    assert image_size(tmp_path / "a.png") == (33, 17)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_unidentified_image_error_names_the_file(tmp_path, suffix):
    """PIL's "cannot identify image file" names its in-memory buffer; ours names the file."""
    path = tmp_path / f"not_an_image{suffix}"
    path.write_bytes(b"this is not an image" * 10)
    for read in (read_image, image_size):
        with pytest.raises(ImageReadError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"{path}: not a readable image")
        assert f"not_an_image{suffix}" in message.removeprefix(str(path))
        assert "BytesIO" not in message and "object at 0x" not in message
