"""``maskformer.images``: image files read as people see them, failures naming the file."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from maskformer.images import image_to_rgb, read_image

ORIENTATION = 0x0112  # the EXIF tag


def _halves(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue (large flat areas survive JPEG compression)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    ("orientation", "top_is_red"),
    [(1, None), (6, True), (8, False), (3, None)],
)
def test_exif_orientation_is_applied(tmp_path, orientation, top_is_red):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "photo.jpg"
    _halves().save(path, exif=exif.tobytes(), quality=95)
    assert Image.open(path).getexif()[ORIENTATION] == orientation

    image = read_image(path)
    assert image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    if orientation in (6, 8):  # a quarter turn: 40 wide x 20 high becomes 20 x 40
        assert image.size == (20, 40)
        top, bottom = pixels[:10].mean(axis=(0, 1)), pixels[-10:].mean(axis=(0, 1))
        red, blue = (top, bottom) if top_is_red else (bottom, top)
        assert red[0] > 200 and red[2] < 60 and blue[2] > 200 and blue[0] < 60
    else:
        assert image.size == (40, 20)
        left, right = pixels[:, :10].mean(axis=(0, 1)), pixels[:, -10:].mean(axis=(0, 1))
        # Orientation 3 is a half turn: red ends up on the right.
        red, blue = (left, right) if orientation == 1 else (right, left)
        assert red[0] > 200 and blue[2] > 200


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("I", ".tif")])
def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path, mode, suffix):
    values = np.array([[0, 257, 1000, 30000, 40000, 65535]], dtype=np.uint16)
    image = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32))
    assert image.mode == mode
    path = tmp_path / f"depth{suffix}"
    image.save(path)
    assert Image.open(path).mode == mode
    got = np.asarray(read_image(path))
    # 255 / 65535 = 1 / 257: each value v becomes round(v / 257).
    expected = np.round(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(got, np.repeat(expected[..., None], 3, axis=-1))
    assert len(np.unique(got[..., 0])) == values.size  # values above 255 stay distinct


def test_thirty_two_bit_values_are_clipped_to_the_sixteen_bit_range():
    image = Image.fromarray(np.array([[-5, 0, 65535, 70000]], np.int32))
    np.testing.assert_array_equal(np.asarray(image_to_rgb(image))[..., 0], [[0, 0, 255, 255]])


def test_float_images_scale_by_unit_range_or_min_max(tmp_path):
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(
        np.asarray(image_to_rgb(Image.fromarray(unit)))[..., 0], [[0, 64, 128, 255]]
    )
    wide = np.array([[-2.0, 0.0, 2.0, 6.0]], np.float32)  # min-max: (v + 2) / 8 * 255
    path = tmp_path / "float.tif"
    Image.fromarray(wide).save(path)
    np.testing.assert_array_equal(np.asarray(read_image(path))[..., 0], [[0, 64, 128, 255]])
    constant = Image.fromarray(np.full((2, 3), 7.5, np.float32))
    assert np.asarray(image_to_rgb(constant)).max() == 0
    with pytest.raises(ValueError, match="NaN"):
        image_to_rgb(Image.fromarray(np.array([[0.1, np.nan]], np.float32)))


def test_cmyk_palette_and_alpha_modes_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
    gray = rng.integers(0, 256, (8, 10), dtype=np.uint8)
    cases = {
        "cmyk.tif": rgb.convert("CMYK"),
        "palette.png": rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
        "gray.png": Image.fromarray(gray),
        "bilevel.png": Image.fromarray(gray > 127),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        got = read_image(tmp_path / name)
        assert got.mode == "RGB" and got.size == (10, 8), name
        np.testing.assert_array_equal(np.asarray(got), np.asarray(image.convert("RGB")), name)
    # Alpha is dropped: the stored colours stay, whatever the transparency.
    alpha = rng.integers(0, 256, (8, 10), dtype=np.uint8)
    for mode, base in (("RGBA", np.asarray(rgb)), ("LA", gray[..., None])):
        pixels = np.concatenate([base, alpha[..., None]], axis=-1)
        Image.fromarray(pixels, mode=mode).save(tmp_path / f"{mode}.png")
        got = np.asarray(read_image(tmp_path / f"{mode}.png"))
        np.testing.assert_array_equal(got, np.broadcast_to(base, (8, 10, 3)), mode)
    palette_alpha = cases["palette.png"].convert("PA")
    np.testing.assert_array_equal(
        np.asarray(image_to_rgb(palette_alpha)), np.asarray(cases["palette.png"].convert("RGB"))
    )


def test_rgb_images_come_back_unchanged(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "rgb.png")), pixels)
    image = Image.fromarray(pixels)
    assert image_to_rgb(image) is image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels (PIL cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_unreadable_files_raise_naming_the_file(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image(missing)
    with pytest.raises(OSError, match="not a file"):
        read_image(tmp_path)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(OSError, match="notes.jpg"):
        read_image(text)
    buffer = io.BytesIO()
    _halves(200, 200).save(buffer, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(OSError, match="truncated.jpg"):
        read_image(truncated)
    for width, height in ((0, 5), (5, 0), (0, 0)):
        empty = tmp_path / f"empty_{width}x{height}.png"
        empty.write_bytes(_png_header_only(width, height))
        with pytest.raises((OSError, ValueError), match=empty.name):
            read_image(empty)


def test_zero_sized_and_unsupported_images_in_memory():
    for size in ((0, 5), (5, 0), (0, 0)):
        with pytest.raises(ValueError, match=r"size \d+x\d+"):
            image_to_rgb(Image.new("RGB", size))
    with pytest.raises(TypeError, match="PIL image"):
        image_to_rgb(np.zeros((2, 2, 3), np.uint8))
