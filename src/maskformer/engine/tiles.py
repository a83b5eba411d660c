"""Tiles for sliding-window inference: where the tiles of an image start, how a tile's weight
falls off where a neighbour overlaps it, the edge-padded pixels they are cut from, and one model
pass over a batch of equally sized tiles. The blending and merging are in
:mod:`maskformer.engine.sliding_window`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

MASK_STRIDE = 4


def check_window(window: Sequence[int], overlap: float, image_size: tuple[int, int]) -> None:
    """Validate ``window`` ``(height, width)`` and ``overlap`` for an image ``(height, width)``."""
    if len(window) != 2 or any(int(w) != w or w <= 0 for w in window):
        raise ValueError(f"--window must be two positive integers (height width), got {window}")
    if any(w % 32 for w in window):
        raise ValueError(f"--window {window[0]} {window[1]}: each side must be a multiple of 32")
    if not (isinstance(overlap, (int, float)) and 0.0 <= overlap < 1.0):
        raise ValueError(f"--overlap must lie in [0, 1), got {overlap}")
    height, width = image_size
    if window[0] > height or window[1] > width:
        raise ValueError(
            f"--window {window[0]} {window[1]} is larger than the image ({height}×{width}); "
            "use a smaller window or predict without --sliding-window"
        )


def tile_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``window`` covering ``[0, length)``: a stride of about
    ``window · (1 - overlap)`` rounded down to a multiple of 4, the last tile flush with the end
    (rounded down to a multiple of 4 when ``length`` is not)."""
    stride = max(MASK_STRIDE, int(window * (1.0 - overlap)) // MASK_STRIDE * MASK_STRIDE)
    last = (length - window) // MASK_STRIDE * MASK_STRIDE
    starts = list(range(0, last, stride))
    return [*starts, last]


def edge_ramp(size: int, ramp_before: int, ramp_after: int) -> torch.Tensor:
    """``(size,)`` weights: 1 in the middle, falling linearly over ``ramp_before`` /
    ``ramp_after`` cells at the start / end (0 ramp = no fall-off), always > 0."""
    weights = torch.ones(size, dtype=torch.float32)
    if ramp_before > 0:
        weights[:ramp_before] = torch.arange(1, ramp_before + 1, dtype=torch.float32) / (
            ramp_before + 1
        )
    if ramp_after > 0:
        weights[size - ramp_after :] = torch.arange(ramp_after, 0, -1, dtype=torch.float32) / (
            ramp_after + 1
        )
    return weights


def tile_weights(starts: list[int], index: int, window: int) -> torch.Tensor:
    """1-D blending weights at mask resolution of tile ``index`` among ``starts``."""
    size = window // MASK_STRIDE
    before = (starts[index - 1] + window - starts[index]) // MASK_STRIDE if index > 0 else 0
    after = (
        (starts[index] + window - starts[index + 1]) // MASK_STRIDE
        if index + 1 < len(starts)
        else 0
    )
    return edge_ramp(size, max(before, 0), max(after, 0))


def padded_rgb(image: Image.Image, height: int, width: int) -> np.ndarray:
    """The image as ``(height, width, 3)`` uint8, edge-replicated to at least that size."""
    array = np.asarray(image.convert("RGB"))
    pad_h, pad_w = height - array.shape[0], width - array.shape[1]
    if pad_h > 0 or pad_w > 0:
        array = np.pad(array, ((0, max(pad_h, 0)), (0, max(pad_w, 0)), (0, 0)), mode="edge")
    return array


def run_tiles(
    model: torch.nn.Module, processor: Any, tiles: list[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits ``(tiles, queries, classes + 1)`` and mask logits ``(tiles, queries, h/4,
    w/4)`` (float32) of equally sized RGB tiles. A model without parameters (an exported one,
    :class:`~maskformer.onnx_backend.OnnxRuntimeModel`) gets float32 CPU tensors."""
    inputs = processor(images=tiles, do_resize=False, return_tensors="pt")
    pixel_values = inputs["pixel_values"]
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if parameter is not None:
        pixel_values = pixel_values.to(parameter.device, parameter.dtype)
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values)
    return outputs.class_queries_logits.float(), outputs.masks_queries_logits.float()


def tile_grid(
    image: Image.Image, window: Sequence[int], overlap: float
) -> tuple[np.ndarray, list[int], list[int], int, int]:
    height, width = image.height, image.width
    check_window(window, overlap, (height, width))
    padded_h = math.ceil(height / MASK_STRIDE) * MASK_STRIDE
    padded_w = math.ceil(width / MASK_STRIDE) * MASK_STRIDE
    rows = tile_starts(padded_h, window[0], overlap)
    columns = tile_starts(padded_w, window[1], overlap)
    return padded_rgb(image, padded_h, padded_w), rows, columns, padded_h, padded_w
