"""Pixel values: rescale and normalise resized images into one zero-padded float32 batch.

For 8-bit images the reference computes ``float32(uint8 * rescale_factor)`` (the product in
float64), then ``(x - mean) / std`` in float32. Each channel's 256 possible results are computed
that way once, into a lookup table, and the image is written through it: the same floats, one
gather per channel instead of three array passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from maskformer.processing.geometry import padded_size, pixel_mask

Writer = Callable[[np.ndarray, np.ndarray], None]
"""``write(image (h, w, channels), out (channels, h, w) float32 view)``."""


def channel_stats(value: float | Sequence[float], name: str, channels: int) -> np.ndarray:
    """``(channels,)`` float32 of a per-channel statistic (one value is broadcast)."""
    stats = np.asarray(value, dtype=np.float32).reshape(-1)
    if stats.size == 1:
        stats = np.repeat(stats, channels)
    if stats.size != channels:
        raise ValueError(
            f"`{name}` has {stats.size} values but the images have {channels} channels; "
            "give one value per channel (or a single value)"
        )
    return stats


def normalization_table(
    do_rescale: bool,
    rescale_factor: float,
    mean: np.ndarray | None,
    std: np.ndarray | None,
    channels: int,
) -> np.ndarray:
    """``(channels, 256)`` float32: what rescale (+ normalise when ``mean`` is given) make of
    each 8-bit value, with the reference's dtypes."""
    values = np.arange(256, dtype=np.uint8)
    table = (
        (values * rescale_factor).astype(np.float32) if do_rescale else values.astype(np.float32)
    )
    table = np.broadcast_to(table, (channels, 256))
    if mean is not None:
        table = (table - mean[:, None]) / std[:, None]
    return np.ascontiguousarray(table, dtype=np.float32)


def make_writer(
    do_rescale: bool,
    rescale_factor: float,
    do_normalize: bool,
    image_mean: float | Sequence[float] | None,
    image_std: float | Sequence[float] | None,
    channels: int,
) -> Writer:
    """The function that rescales / normalises one ``(h, w, channels)`` image into its
    ``(channels, h, w)`` slot of the batch."""
    mean = channel_stats(image_mean, "image_mean", channels) if do_normalize else None
    std = channel_stats(image_std, "image_std", channels) if do_normalize else None
    table = normalization_table(do_rescale, rescale_factor, mean, std, channels)

    def write(image: np.ndarray, out: np.ndarray) -> None:
        if image.dtype == np.uint8:
            for channel in range(channels):
                np.take(table[channel], image[:, :, channel], out=out[channel], mode="clip")
            return
        values = image.transpose(2, 0, 1)
        if do_rescale:
            values = np.asarray(values * rescale_factor).astype(np.float32)
        values = values.astype(np.float32, copy=False)
        if mean is not None:
            values = (values - mean[:, None, None]) / std[:, None, None]
        out[...] = values

    return write


def copy_writer(image: np.ndarray, out: np.ndarray) -> None:
    """Write an already processed ``(h, w, channels)`` image as is (cast to float32)."""
    out[...] = image.transpose(2, 0, 1)


def batch_pixels(images: list[np.ndarray], write: Writer) -> tuple[np.ndarray, np.ndarray]:
    """``pixel_values`` ``(batch, channels, H, W)`` float32 (each ``(h, w, channels)`` image
    written top-left by ``write``, zeros elsewhere) and ``pixel_mask`` ``(batch, H, W)`` int64
    (1 = real pixel), at the batch's largest size."""
    channels = {image.shape[-1] for image in images}
    if len(channels) != 1:
        raise ValueError(f"`images` must all have the same number of channels, got {channels}")
    sizes = [image.shape[:2] for image in images]
    height, width = padded_size(sizes)
    pixel_values = np.zeros((len(images), channels.pop(), height, width), dtype=np.float32)
    for image, out in zip(images, pixel_values):
        write(image, out[:, : image.shape[0], : image.shape[1]])
    return pixel_values, pixel_mask(sizes, (height, width))
