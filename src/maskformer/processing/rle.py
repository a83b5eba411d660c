"""The reference's own run-length encoding (not COCO's): row-major runs as
``[start_1, length_1, start_2, length_2, ...]`` with 1-based starts, for the module-level helpers
transformers 4.34.1 exposes (``binary_mask_to_rle``, ``convert_segmentation_to_rle``).

For COCO RLE (column-major, compressed) use :func:`maskformer.utils.coco.encode_rle`, which is
what ``post_process_instance_segmentation(return_coco_annotation=True)`` returns here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def binary_mask_to_rle(mask: Any) -> list[int]:
    """Runs of ones of a binary ``(height, width)`` mask, read row by row: 1-based start of each
    run followed by its length."""
    pixels = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).reshape(-1)
    padded = np.concatenate([[0], (pixels != 0).astype(np.int64), [0]])
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    edges[1::2] -= edges[::2]
    return edges.tolist()


def convert_segmentation_to_rle(segmentation: torch.Tensor) -> list[list[int]]:
    """:func:`binary_mask_to_rle` of each value of a ``(height, width)`` id map, in ascending order
    of the values."""
    return [binary_mask_to_rle(segmentation == value) for value in torch.unique(segmentation)]
