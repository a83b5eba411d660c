"""Uploads in, JSON out: decoding an uploaded image within limits, and the payload of one result.

The files' contents are those of ``maskformer predict`` for the same image, built by the same
functions (:mod:`maskformer.engine.predict`, :mod:`maskformer.visualize`); only the packaging
differs (one JSON object, PNGs as base64):

=========  ====================================================================================
task       ``label_png`` / ``segments_info``
=========  ====================================================================================
semantic   class ids, 8-bit (16-bit when ids reach 256), as ``semantic/NAME.png``; one entry per
           class present: ``{"id": class + 1, "category_id", "label", "area"}``
panoptic   COCO panoptic RGB ids, as ``panoptic/NAME.png``; the ``segments_info`` of
           ``panoptic.json`` (``{"id", "category_id", "score"}``) plus ``"label"`` and ``"area"``
instance   segment ids (entry ``k`` of ``segments_info`` is id ``k + 1``; where masks overlap the
           higher score wins, as in the overlay); the records of ``instances.json``
           (``{"category_id", "segmentation" (COCO RLE), "score"}``) plus ``"id"``, ``"label"``
           and ``"area"`` (pixels of the mask)
=========  ====================================================================================
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskformer.engine.predict import (
    image_id_of,
    instance_records,
    instance_result_to_arrays,
    label_png,
    panoptic_png,
    panoptic_result_to_coco,
)
from maskformer.images import image_to_rgb
from maskformer.utils.coco import panoptic_ids_to_rgb
from maskformer.visualize import overlay_instances, overlay_panoptic, overlay_semantic


class UploadError(ValueError):
    """An upload the server refuses; ``status_code`` is the HTTP status to answer with."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def _to_rgb(image: Image.Image) -> Image.Image:
    """``image`` upright (its EXIF orientation applied) and in 8-bit RGB, converted as
    :func:`maskformer.images.read_image` converts files (16-bit and float scaled by range)."""
    return image_to_rgb(ImageOps.exif_transpose(image))


def decode_upload(data: bytes, max_pixels: int, name: str = "image") -> Image.Image:
    """The uploaded bytes as an upright RGB image.

    Raises:
        UploadError: 400 when the bytes are empty or not a readable image; 422 when the image
            has more than ``max_pixels`` pixels (checked from the header, before decoding).
    """
    if not data:
        raise UploadError(400, f"upload {name!r} is empty; send an image file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(
                    422,
                    f"image {name!r} is {width}x{height} = {width * height} pixels; "
                    f"this server accepts at most {max_pixels} pixels",
                )
            image.load()
            return _to_rgb(image)
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(
            400, f"upload {name!r} is not an image in a format this server reads (PNG, JPEG, ...)"
        ) from None
    except Image.DecompressionBombError as error:
        raise UploadError(422, f"image {name!r} is too large: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UploadError(400, f"cannot decode image {name!r}: {error}") from None


def png_base64(image: Image.Image) -> str:
    """``image`` as a base64-encoded PNG file (ASCII)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_payload(
    image: Image.Image,
    result: Mapping[str, Any],
    task: str,
    id2label: Mapping[int, str],
    file_name: str = "image",
    overlay: bool = True,
    legend: bool = True,
    segment_map: bool = False,
) -> dict[str, Any]:
    """The JSON answer for one segmented ``image`` (see the module docstring).

    Args:
        image: the RGB picture that was segmented.
        result: its entry of :func:`~maskformer.engine.predict.segment_batch`.
        task: ``"semantic"``, ``"instance"`` or ``"panoptic"``.
        id2label: class id -> name.
        file_name: the upload's name; gives ``image_id`` and ``file_name`` as predict does.
        overlay: include ``overlay_png``, the picture of :mod:`maskformer.visualize`.
        legend: draw the legend panel on the overlay's right.
        segment_map: include ``segment_map_png``: segment ids (those of ``segments_info``) in
            the COCO panoptic RGB encoding, for any task (what the page reads for hovering).
    """
    stem = Path(file_name).stem or "image"
    source = Path(f"{stem}.png")
    payload: dict[str, Any] = {
        "task": task,
        "image_id": image_id_of(source),
        "file_name": source.name,
        "width": image.width,
        "height": image.height,
    }
    if task == "semantic":
        classes = result["semantic"].cpu().numpy().astype(np.int64)
        ids = np.where(classes >= 0, classes + 1, 0)
        label = label_png(classes, len(id2label))
        areas = np.bincount(ids.ravel())
        segments = [
            {"id": int(s), "category_id": int(s) - 1, "label": _name(id2label, int(s) - 1)}
            for s in np.flatnonzero(areas[1:]) + 1
        ]
        draw = (overlay_semantic, (image, classes, id2label), {"ignore_index": None})
    elif task == "panoptic":
        ids, coco_segments = panoptic_result_to_coco(result)
        label = panoptic_png(ids)
        areas = np.bincount(ids.ravel())
        segments = [
            {**entry, "label": _name(id2label, entry["category_id"])} for entry in coco_segments
        ]
        draw = (overlay_panoptic, (image, ids, coco_segments, id2label), {})
    elif task == "instance":
        masks, labels, scores = instance_result_to_arrays(result, image.height, image.width)
        records = instance_records(payload["image_id"], masks, labels, scores)
        ids = _instance_ids(masks, scores)
        label = label_png(ids, len(records) + 1)
        areas = np.concatenate([[0], masks.sum(axis=(1, 2))])
        segments = [
            {
                "id": index + 1,
                "category_id": record["category_id"],
                "label": _name(id2label, record["category_id"]),
                "score": record["score"],
                "segmentation": record["segmentation"],
            }
            for index, record in enumerate(records)
        ]
        draw = (overlay_instances, (image, masks, labels, id2label), {"scores": scores})
    else:
        raise ValueError(f"task must be semantic, instance or panoptic, got {task!r}")
    for entry in segments:
        entry["area"] = int(areas[entry["id"]]) if entry["id"] < len(areas) else 0
    payload["segments_info"] = segments
    payload["label_png"] = png_base64(label)
    if overlay:
        function, arguments, options = draw
        payload["overlay_png"] = png_base64(function(*arguments, legend=legend, **options))
    if segment_map:
        payload["segment_map_png"] = png_base64(Image.fromarray(panoptic_ids_to_rgb(ids)))
    return payload


def _instance_ids(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``(H, W)`` int64 map of ``masks (N, H, W)``: pixel = 1 + index of the highest-scoring
    mask covering it (ties: the later one, as in ``overlay_instances``), 0 where none does."""
    if len(masks) == 0:
        return np.zeros(masks.shape[1:], dtype=np.int64)
    order = np.argsort(scores, kind="stable")  # ascending: the last covering mask wins
    stacked = masks[order[::-1]]  # highest score first
    top = np.argmax(stacked, axis=0)  # first True along the score-descending stack
    return np.where(stacked.any(axis=0), order[::-1][top] + 1, 0).astype(np.int64)


def _name(id2label: Mapping[int, str], class_id: int) -> str:
    return str(id2label.get(class_id, f"class {class_id}"))
