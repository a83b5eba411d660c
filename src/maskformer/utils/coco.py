"""COCO encodings, one copy each: RLE for binary masks, the panoptic RGB id encoding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """Compressed COCO RLEs ``{"size": [h, w], "counts": str}`` of ``(n, height, width)`` masks.

    ``counts`` is an ASCII ``str`` (JSON-ready); ``pycocotools.mask.decode`` accepts it and gives
    each mask back exactly.
    """
    from pycocotools import mask as mask_utils

    if masks.ndim != 3:
        raise ValueError(f"masks must be (n, height, width), got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [
        {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        for rle in encoded
    ]


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The ``(height, width)`` uint8 mask of a COCO RLE, compressed (str or bytes ``counts``) or
    uncompressed (a list of run lengths)."""
    from pycocotools import mask as mask_utils

    if not isinstance(rle, Mapping) or "counts" not in rle or "size" not in rle:
        raise ValueError(f"a COCO RLE must be a dict with 'size' and 'counts', got {rle!r:.80}")
    height, width = (int(s) for s in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_utils.frPyObjects(
            {"size": [height, width], "counts": counts}, height, width
        )
    else:
        compressed = {
            "size": [height, width],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
    return mask_utils.decode(compressed)


def rgb_to_panoptic_ids(rgb: np.ndarray) -> np.ndarray:
    """Segment ids ``(H, W)`` int64 of a COCO panoptic PNG ``(H, W, 3)``: R + 256 G + 256² B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def panoptic_ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic RGB ``(H, W, 3)`` uint8 of segment ids ``(H, W)`` in ``[0, 256³)``."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError("panoptic ids must lie in [0, 256**3) to fit an RGB PNG")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
