"""Reading image files as people see them: upright, 8-bit RGB.

:func:`read_image` opens a file, applies its EXIF orientation and converts it with
:func:`image_to_rgb`, which does the same for an image already in memory:

* RGB is kept; RGBA, LA and PA lose their alpha (the stored colours are kept, not composited);
  palette (P), CMYK, YCbCr, LAB, HSV, grayscale (L) and bilevel (1) images are converted by PIL.
* 16-bit grayscale ("I;16", "I;16B", "I;16L", "I;16N") and 32-bit integer ("I") images are scaled
  from the 16-bit range: ``round(value * 255 / 65535)`` with values clipped to ``[0, 65535]``
  first ("I" is how PIL opens 16-bit PNGs, and nothing else stores images that way).
* Floating-point ("F") images whose values all lie in ``[0, 1]`` are scaled by 255 (the usual
  convention for float images); any other float image is stretched from its own minimum to its
  maximum (depth maps, HDR data: they carry no fixed range). A constant image maps to 0.

Every failure is one exception naming the file: ``FileNotFoundError`` when it is missing,
``OSError`` when it cannot be decoded (not an image, truncated, too large for PIL's
decompression-bomb guard), ``ValueError`` when it decodes to something unusable (zero width or
height, NaN values, an unknown mode).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_PIL_CONVERTS = ("P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "L", "1")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` mapped linearly from ``[low, high]`` to ``[0, 255]``, rounded, as uint8."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _wide_gray_to_uint8(image: Image.Image) -> np.ndarray:
    """An ``(H, W)`` uint8 array of a 16-bit, 32-bit integer or float grayscale PIL image."""
    values = np.asarray(image)
    if image.mode == "F":
        if np.isnan(values).any():
            raise ValueError("the image has NaN values")
        if not np.isfinite(values).all():
            raise ValueError("the image has infinite values")
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            return _to_uint8(values, 0.0, 1.0)
        return _to_uint8(values, low, high)
    return _to_uint8(np.clip(values, 0, _SIXTEEN_BIT_MAX), 0.0, float(_SIXTEEN_BIT_MAX))


def image_to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as an 8-bit "RGB" PIL image, converted by the rules of this module.

    Raises ``TypeError`` for anything but a PIL image and ``ValueError`` for a zero-sized image,
    NaN values or a mode it cannot convert. An RGB image is returned as is (not copied).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image_to_rgb expects a PIL image, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise ValueError(
            f"the image has size {image.width}x{image.height} (width x height); "
            "both sides must be at least 1 pixel"
        )
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("La", "RGBa"):  # premultiplied alpha: undo it before dropping alpha
        image = image.convert({"La": "LA", "RGBa": "RGBA"}[mode])
        mode = image.mode
    if mode in _ALPHA_MODES or mode in _PIL_CONVERTS:
        return image.convert("RGB")
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        return Image.fromarray(_wide_gray_to_uint8(image), mode="L").convert("RGB")
    raise ValueError(f"cannot convert an image of mode {mode!r} to RGB")


def read_image(path: str | os.PathLike) -> Image.Image:
    """The image file at ``path`` as an upright 8-bit "RGB" PIL image (fully loaded, the file
    closed). See the module docstring for the conversions and the exceptions."""
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise OSError(f"{path} is not a file")
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except UnidentifiedImageError:
        raise OSError(f"{path} is not an image file PIL can read") from None
    except Image.DecompressionBombError as error:
        raise OSError(f"{path} is too large to decode safely: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # truncated or corrupt data
        reason = getattr(error, "strerror", None) or error
        raise OSError(f"cannot read image {path}: {reason}") from None
    try:
        return image_to_rgb(image)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
