"""Geometry: output-size maths, PIL resizing of images and label maps, padding to a batch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_LONGEST_EDGE = 1333
_SIZE_KEYS = (
    {"height", "width"},
    {"shortest_edge"},
    {"shortest_edge", "longest_edge"},
    {"longest_edge"},
)


def get_size_dict(size: Any, max_size: int | None = None) -> dict[str, int]:
    """The reference's size forms: int (shortest edge, ``max_size`` longest), (height, width)
    tuple, or a dict with ``shortest_edge``/``longest_edge`` or ``height``/``width``."""
    if isinstance(size, dict):
        if set(size) not in _SIZE_KEYS:
            raise ValueError(f"`size` must have keys {_SIZE_KEYS}, got {sorted(size)}")
        return dict(size)
    if isinstance(size, int):
        longest = max_size if max_size is not None else DEFAULT_LONGEST_EDGE
        return {"shortest_edge": size, "longest_edge": longest}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    raise ValueError(f"`size` must be an int, a (height, width) pair or a dict, got {size!r}")


def get_output_size(
    height: int, width: int, size: dict[str, int], size_divisor: int = 0
) -> tuple[int, int]:
    """Resized ``(height, width)``: shortest edge to ``shortest_edge`` (truncating), capped by
    ``longest_edge``, or exactly ``height``/``width``; then each side rounded *up* to a multiple
    of ``size_divisor`` (the image is stretched, as in the reference).

    Raises ``ValueError`` naming the sizes when a side comes out as 0 (a very thin image whose
    short side, scaled to fit ``longest_edge``, truncates to nothing)."""
    if "shortest_edge" in size and "longest_edge" in size:
        shortest, longest = size["shortest_edge"], size["longest_edge"]
        if longest <= shortest:
            raise ValueError(
                f"`size['longest_edge']` ({longest}) must be larger than "
                f"`size['shortest_edge']` ({shortest})"
            )
        short, long = min(height, width), max(height, width)
        new_short, new_long = shortest, int(shortest * long / short)
        if new_long > longest:
            new_short, new_long = int(longest * new_short / new_long), longest
        out_h, out_w = (new_short, new_long) if height <= width else (new_long, new_short)
    elif "height" in size and "width" in size:
        out_h, out_w = size["height"], size["width"]
    else:
        raise ValueError(
            "`size` must contain 'shortest_edge' and 'longest_edge', or 'height' and 'width'; "
            f"got {sorted(size)}"
        )
    if size_divisor and size_divisor > 0:
        out_h = math.ceil(out_h / size_divisor) * size_divisor
        out_w = math.ceil(out_w / size_divisor) * size_divisor
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"`images`: an image of size {(height, width)} (height, width) resizes to "
            f"{(out_h, out_w)} with `size` {size}; it is too thin for that size "
            "(resize it yourself or pass a larger `size['longest_edge']`)"
        )
    return out_h, out_w


def _as_uint8(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """The reference's way into PIL: uint8 as is, integral floats in [0, 255] cast, floats in
    [0, 1] scaled by 255 (truncating; then ``True``: divide by 255 after resizing)."""
    if image.dtype == np.uint8:
        return image, False
    if np.array_equal(image, np.round(image)) and image.min() >= 0 and image.max() <= 255:
        return image.astype(np.uint8), False
    if image.min() >= 0 and image.max() <= 1:
        return (image * 255).astype(np.uint8), True
    raise ValueError(
        "`images` of a float dtype must be integral in [0, 255] or lie in [0, 1] to be "
        f"resized; got values in [{image.min()}, {image.max()}]"
    )


def resize_image(
    image: np.ndarray | Image.Image, size: tuple[int, int], resample: int
) -> np.ndarray:
    """Resize a PIL "RGB" image or an ``(H, W, C)`` array to ``size = (height, width)`` with
    PIL. Returns ``(height, width, C)``.

    Three channels resize as one PIL RGB image; any other count channel by channel (PIL's
    8-bit kernels are the same per band, so a channel comes out as it would inside an RGB
    image). A 4-channel array is therefore never treated as RGBA, whose resizing PIL weights
    by the fourth channel."""
    if isinstance(image, Image.Image):
        return np.asarray(image.resize((size[1], size[0]), resample=resample))
    pixels, scale_back = _as_uint8(image)
    if pixels.shape[-1] == 3:
        resized = np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), resample=resample))
    else:
        resized = np.stack(
            [
                np.asarray(Image.fromarray(band).resize((size[1], size[0]), resample=resample))
                for band in pixels.transpose(2, 0, 1)
            ],
            axis=-1,
        )
    return resized / 255 if scale_back else resized


def resize_label_map(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL NEAREST resize of a 2-D id map; ids above 255 go through a 32-bit ("I") image, which
    PIL samples exactly like an 8-bit one."""
    if label_map.shape == tuple(size):
        return label_map
    if label_map.dtype == np.uint8 or (label_map.size and label_map.max() <= 255):
        image = Image.fromarray(label_map.astype(np.uint8, copy=False))
    else:
        if label_map.max() > np.iinfo(np.int32).max:
            raise ValueError("`segmentation_maps` ids must fit in 32 bits")
        image = Image.fromarray(label_map.astype(np.int32), mode="I")
    return np.asarray(image.resize((size[1], size[0]), resample=Image.NEAREST))


def padded_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The smallest ``(height, width)`` that holds every size of ``sizes``."""
    return max(h for h, _ in sizes), max(w for _, w in sizes)


def pixel_mask(sizes: list[tuple[int, int]], padded: tuple[int, int]) -> np.ndarray:
    """``(batch, height, width)`` int64: 1 over each image's extent (top-left), 0 over padding."""
    rows = np.arange(padded[0])[None, :, None] < np.array([h for h, _ in sizes])[:, None, None]
    cols = np.arange(padded[1])[None, None, :] < np.array([w for _, w in sizes])[:, None, None]
    return (rows & cols).astype(np.int64)


def pad_stack(images: list[np.ndarray], constant_values: float = 0) -> np.ndarray:
    """``(batch, channels, H, W)``: channels-first ``images`` padded bottom / right with
    ``constant_values`` to the largest size, in their common dtype."""
    height, width = padded_size([image.shape[1:] for image in images])
    dtype = np.result_type(*[image.dtype for image in images])
    batch = np.full((len(images), images[0].shape[0], height, width), constant_values, dtype)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
    return batch
