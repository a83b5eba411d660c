"""Input coercion: what callers pass as images and label maps, as lists of numpy arrays.

Images become a PIL "RGB" image (PIL inputs, converted by :func:`maskformer.images.image_to_rgb`)
or an ``(height, width, channels)`` numpy array. Arrays and tensors keep all their channels (a
4-channel array is RGB + near-infrared as often as it is RGBA: only a PIL image says that it has
alpha); a single channel is gray and is repeated to three. Label maps become ``(height, width)``
integer arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from maskformer.images import image_to_rgb

CHANNELS_FIRST, CHANNELS_LAST = "channels_first", "channels_last"


def _is_image_like(value: Any) -> bool:
    return isinstance(value, (Image.Image, np.ndarray, torch.Tensor))


def as_list(values: Any, name: str, single_ndim: int) -> list[Any]:
    """A list of single images (maps) with ``single_ndim`` dimensions: lists / tuples kept, a
    batch array split, one item wrapped."""
    if isinstance(values, (list, tuple)):
        if not all(_is_image_like(v) for v in values):
            raise ValueError(
                f"`{name}` must be PIL images, numpy arrays or torch tensors (or lists of them)"
            )
        if not values:
            raise ValueError(f"`{name}` is empty")
        return list(values)
    if isinstance(values, Image.Image):
        return [values]
    if isinstance(values, (np.ndarray, torch.Tensor)):
        if values.ndim == single_ndim + 1:
            return list(values)
        if values.ndim <= single_ndim:
            return [values]
        raise ValueError(
            f"`{name}` has {values.ndim} dimensions; expected {single_ndim} (one) or "
            f"{single_ndim + 1} (a batch)"
        )
    raise ValueError(
        f"`{name}` must be PIL images, numpy arrays or torch tensors (or lists of them), "
        f"got {type(values).__name__}"
    )


def data_format_value(data_format: Any, name: str) -> str | None:
    """``"channels_first"``, ``"channels_last"`` or None, from a string or an enum."""
    value = getattr(data_format, "value", data_format)
    if value not in (None, CHANNELS_FIRST, CHANNELS_LAST):
        raise ValueError(
            f"`{name}` must be 'channels_first' or 'channels_last', got {data_format!r}"
        )
    return value


def channel_axis(array: np.ndarray, input_data_format: Any) -> int:
    """0 for channels-first, -1 for channels-last: as given, else inferred like the reference
    (a leading or trailing axis of 1 or 3), then a leading or trailing axis of 4."""
    fmt = data_format_value(input_data_format, "input_data_format")
    if fmt is not None:
        return 0 if fmt == CHANNELS_FIRST else -1
    for sizes in ((1, 3), (4,)):
        if array.shape[0] in sizes:
            return 0
        if array.shape[-1] in sizes:
            return -1
    raise ValueError(
        f"`images`: cannot tell the channel axis of an image of shape {array.shape}; "
        "pass `input_data_format`"
    )


def to_numpy(value: Any) -> np.ndarray:
    """A numpy view (or copy) of a tensor, array or PIL image."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def image_to_array(image: Any, input_data_format: Any = None) -> np.ndarray | Image.Image:
    """One image as a PIL "RGB" image or an ``(height, width, channels)`` numpy array.

    PIL images go through :func:`image_to_rgb` (alpha dropped, 16-bit scaled...). Arrays keep
    all their channels; 2-D or one-channel arrays are repeated to three channels. Raises
    ``ValueError`` naming ``images`` for a zero-sized image, NaN values or a non-numeric dtype.
    """
    if isinstance(image, Image.Image):
        try:
            return image_to_rgb(image)
        except ValueError as error:
            raise ValueError(f"`images`: {error}") from None
    array = to_numpy(image)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"`images` must hold numbers, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3:
        if 0 in array.shape:
            raise ValueError(f"`images` holds an empty image of shape {array.shape}")
        if channel_axis(array, input_data_format) == 0:
            array = array.transpose(1, 2, 0)
    else:
        raise ValueError(f"each of `images` must have 2 or 3 dimensions, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"`images` holds an empty image of size {array.shape[:2]} (height, width); "
            "both sides must be at least 1 pixel"
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError("`images` contain NaN values")
    return array


def image_size(image: np.ndarray | Image.Image) -> tuple[int, int]:
    """``(height, width)`` of a PIL image or an ``(H, W, C)`` array."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    return int(image.shape[0]), int(image.shape[1])


def image_channels(image: np.ndarray | Image.Image) -> int:
    """Number of channels of what :func:`image_to_array` returns."""
    return 3 if isinstance(image, Image.Image) else int(image.shape[-1])


def label_map_to_array(segmentation_map: Any) -> np.ndarray:
    """A label map as a 2-D integer numpy array (ids >= 0, any width)."""
    array = to_numpy(segmentation_map)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])
    if array.ndim != 2:
        raise ValueError(
            f"each of `segmentation_maps` must be 2-D (height, width), got shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any():
            raise ValueError("`segmentation_maps` contain NaN values")
        if not np.array_equal(array, np.round(array)):
            raise ValueError("`segmentation_maps` must hold integer label ids")
        array = array.astype(np.int64)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`segmentation_maps` must hold integers, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError("`segmentation_maps` contain negative label ids")
    return array


def check_map_sizes(
    label_maps: list[np.ndarray], sizes: list[tuple[int, int]], images: str
) -> None:
    """Raise ``ValueError`` unless each label map has the ``(height, width)`` of its image."""
    for index, (label_map, size) in enumerate(zip(label_maps, sizes)):
        if label_map.shape != tuple(size):
            raise ValueError(
                f"`segmentation_maps[{index}]` has size {label_map.shape}, but its image "
                f"(`{images}[{index}]`) has size {tuple(size)}"
            )


def processed_to_chw(image: Any, input_data_format: Any, name: str) -> np.ndarray:
    """An already processed 3-D image (``pad`` / ``encode_inputs``) as a channels-first array."""
    array = to_numpy(image)
    if array.ndim != 3:
        raise ValueError(f"each of `{name}` must be 3-D, got shape {array.shape}")
    return array if channel_axis(array, input_data_format) == 0 else array.transpose(2, 0, 1)
