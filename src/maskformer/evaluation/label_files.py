"""Reading label files: semantic label PNGs and COCO panoptic RGB-id PNGs + json, each checked,
every failure one error naming the file (and the entry) and what was expected.

The panoptic RGB encoding itself is :mod:`maskformer.utils.coco`'s (re-exported here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maskformer.utils.coco import panoptic_ids_to_rgb, rgb_to_panoptic_ids

PathLike = str | Path
__all__ = [
    "PathLike",
    "check_panoptic_annotations",
    "load_panoptic_json",
    "panoptic_ids_to_rgb",
    "read_label_png",
    "read_panoptic_png",
    "rgb_to_panoptic_ids",
]


def _open_image(path: PathLike, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        image = Image.open(path)
        image.load()
    except Exception as error:  # PIL's decoders fail in many ways on a corrupt file
        raise ValueError(f"cannot read {what} {path}: {error}") from None
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
    accepted and wrapped), its annotations and categories checked
    (:func:`check_panoptic_annotations`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"panoptic json {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read panoptic json {path}: {error}") from None
    if isinstance(data, list):
        data = {"annotations": data}
    check_panoptic_annotations(data, path)
    return data


def check_panoptic_annotations(data: Any, path: PathLike) -> None:
    """``ValueError`` naming ``path``, the entry and the field when ``data`` is not a COCO
    panoptic json: ``annotations`` a list of ``{"image_id", "file_name", "segments_info":
    [{"id": int, "category_id": int}, ...]}``, optional ``categories`` ``[{"id": int}, ...]``."""
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"panoptic json {path} has no 'annotations' list")
    for index, annotation in enumerate(data["annotations"]):
        where = f"panoptic json {path}: annotations[{index}]"
        if not isinstance(annotation, dict):
            raise ValueError(f"{where} is a {type(annotation).__name__}, expected an object")
        for key in ("image_id", "file_name"):
            if key not in annotation:
                raise ValueError(f"{where} has no {key!r}")
        image_id = annotation["image_id"]
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
            raise ValueError(f"{where} 'image_id' must be an integer or a string, got {image_id!r}")
        if not isinstance(annotation["file_name"], str) or not annotation["file_name"]:
            raise ValueError(
                f"{where} 'file_name' must be a file name, got {annotation['file_name']!r}"
            )
        segments = annotation.get("segments_info", [])
        if not isinstance(segments, list):
            raise ValueError(f"{where} 'segments_info' must be a list")
        for number, segment in enumerate(segments):
            _check_int_fields(segment, ("id", "category_id"), f"{where}.segments_info[{number}]")
    categories = data.get("categories")
    if categories is not None:
        if not isinstance(categories, list):
            raise ValueError(f"panoptic json {path} 'categories' must be a list")
        for index, category in enumerate(categories):
            _check_int_fields(category, ("id",), f"panoptic json {path}: categories[{index}]")


def _check_int_fields(entry: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is a {type(entry).__name__}, expected an object")
    for key in keys:
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            what = "has no" if key not in entry else f"has a non-integer ({value!r})"
            raise ValueError(f"{where} {what} {key!r}")
