"""Reading and writing label files: semantic label PNGs and COCO panoptic RGB-id PNGs + json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PathLike = str | Path


def rgb_to_panoptic_ids(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic ids ``R + 256 G + 256^2 B`` of an ``(height, width, 3)`` uint8 image, as
    ``(height, width)`` int64."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (height, width, 3), got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def panoptic_ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """``(height, width, 3)`` uint8 COCO panoptic encoding of ``(height, width)`` ids in
    ``[0, 256^3)``."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.ndim != 2:
        raise ValueError(f"ids must be (height, width), got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError("panoptic ids must lie in [0, 256**3) to fit an RGB PNG")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _open_image(path: PathLike, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        image = Image.open(path)
        image.load()
    except OSError as error:
        raise ValueError(f"cannot read {what} {path}: {error}") from error
    return image


def read_panoptic_png(path: PathLike) -> np.ndarray:
    """``(height, width)`` int64 segment ids of a COCO panoptic PNG (RGB-encoded ids)."""
    image = _open_image(path, "panoptic PNG")
    return rgb_to_panoptic_ids(np.asarray(image.convert("RGB")))


def read_label_png(path: PathLike) -> np.ndarray:
    """``(height, width)`` int64 class ids of a single-channel label PNG (8- or 16-bit)."""
    image = _open_image(path, "label PNG")
    if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise ValueError(
            f"label PNG {path} has mode {image.mode}; expected one channel of class ids "
            "(L, P, I;16 or I)"
        )
    return np.asarray(image).astype(np.int64)


def load_panoptic_json(path: PathLike) -> dict[str, Any]:
    """A COCO panoptic json (``{"annotations": [...], ...}``; a bare list of annotations is
    accepted and wrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"panoptic json {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read panoptic json {path}: {error}") from error
    if isinstance(data, list):
        data = {"annotations": data}
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"panoptic json {path} has no 'annotations' list")
    return data
