"""COCO instance JSON: the format annotation tools export (CVAT, Label Studio, Roboflow, ...).

One json file holds ``images`` (``id``, ``file_name``, ``height``, ``width``), ``categories``
(``id``, ``name``) and ``annotations`` (``id``, ``image_id``, ``category_id``, ``segmentation``,
``iscrowd``). A ``segmentation`` is a list of polygons (``[x1, y1, x2, y2, ...]``, at least three
points each; the polygons of one object are merged), or an RLE dict, compressed (``counts`` a
string) or uncompressed (``counts`` a list of run lengths). Everything is decoded with
pycocotools.

Labels: the categories sorted by id become the contiguous labels ``0 .. K-1``;
``category_ids[label]`` gives the original id back (store it in the model config as
``label_category_ids`` so predictions carry the original ids again).

Targets: every non-crowd annotation is one target mask. Where objects overlap, the smaller one
is on top (it keeps the shared pixels: the larger object's outline is usually the less precise
one, and a small object under a large one would vanish). Crowd regions are ``ignore_index`` in
the label map (left out of the loss), except where a non-crowd object covers them; pixels of no
object are background (negative in every mask). Images without annotations are kept: they teach
the model to find nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from maskformer.data.ade20k import read_rgb
from maskformer.data.base import Example, PairTransform, SegmentationDataset
from maskformer.data.targets import segment_index_values
from maskformer.utils.coco import decode_rle
from maskformer.utils.constants import IGNORE_INDEX

CATEGORY_IDS_KEY = "label_category_ids"
"""Config attribute holding, per contiguous label, the original COCO category id."""


# ------------------------------------------------------------------------------------ reading
@dataclass
class CocoInstanceIndex:
    """A checked COCO instance json.

    Attributes:
        json_file: the file read.
        categories: the ``categories`` entries sorted by id (label ``k`` = entry ``k``).
        category_ids: label -> original category id.
        images: the ``images`` entries in file order.
        annotations: image id -> its annotations, in file order.
    """

    json_file: Path
    categories: list[dict[str, Any]]
    category_ids: list[int]
    images: list[dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def id2label(self) -> dict[int, str]:
        return {k: str(c.get("name", c["id"])) for k, c in enumerate(self.categories)}


def _fail(json_file: Path, message: str) -> ValueError:
    return ValueError(f"{json_file}: {message}")


def _integer_id(value: Any, json_file: Path, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _fail(json_file, f"{what} must be an integer, got {value!r:.40}")
    return int(value)


def check_segmentation(segmentation: Any, json_file: Path, annotation_id: Any) -> None:
    """Raise ``ValueError`` unless ``segmentation`` is polygons or an RLE dict."""
    where = f"annotation {annotation_id}"
    if isinstance(segmentation, Mapping):
        if "counts" not in segmentation or "size" not in segmentation:
            raise _fail(json_file, f"{where}: an RLE segmentation needs 'size' and 'counts'")
        size = segmentation["size"]
        if not isinstance(size, Sequence) or len(size) != 2:
            raise _fail(json_file, f"{where}: RLE 'size' must be [height, width], got {size!r}")
        if not isinstance(segmentation["counts"], (str, bytes, list)):
            raise _fail(json_file, f"{where}: RLE 'counts' must be a string or a list of runs")
        return
    if not isinstance(segmentation, list) or not segmentation:
        raise _fail(
            json_file,
            f"{where}: 'segmentation' must be a non-empty list of polygons or an RLE dict, "
            f"got {segmentation!r:.60}",
        )
    for polygon in segmentation:
        if not isinstance(polygon, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon
        ):
            raise _fail(json_file, f"{where}: a polygon must be a list of numbers [x1, y1, ...]")
        if len(polygon) % 2 or len(polygon) < 6:
            raise _fail(
                json_file,
                f"{where}: a polygon needs at least 3 points (6 numbers, x and y alternating), "
                f"got {len(polygon)} numbers",
            )


def read_coco_instances(json_file: str | Path) -> CocoInstanceIndex:
    """Read and check a COCO instance json; ``ValueError`` names the first problem found."""
    json_file = Path(json_file)
    if not json_file.is_file():
        raise FileNotFoundError(f"COCO instance json not found: {json_file}")
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(json_file, f"not valid JSON ({error})") from None
    missing = [
        key
        for key in ("images", "annotations", "categories")
        if not isinstance(data, dict) or not isinstance(data.get(key), list)
    ]
    if missing:
        raise _fail(
            json_file,
            f"not a COCO instance json: needs the lists 'images', 'annotations' and 'categories' "
            f"(missing: {', '.join(missing)})",
        )
    if not data["categories"]:
        raise _fail(json_file, "'categories' is empty")

    categories: dict[int, dict[str, Any]] = {}
    for category in data["categories"]:
        if not isinstance(category, dict) or "id" not in category:
            raise _fail(json_file, f"a category without an 'id': {category!r:.60}")
        category_id = _integer_id(category["id"], json_file, "category id")
        if category_id in categories:
            raise _fail(json_file, f"category id {category_id} appears twice")
        categories[category_id] = category
    ordered = [categories[k] for k in sorted(categories)]

    images: dict[int, dict[str, Any]] = {}
    for image in data["images"]:
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise _fail(json_file, f"an image needs 'id' and 'file_name', got {image!r:.60}")
        image_id = _integer_id(image["id"], json_file, "image id")
        if image_id in images:
            raise _fail(json_file, f"image id {image_id} appears twice")
        images[image_id] = image

    annotations: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in images}
    for position, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            raise _fail(json_file, f"annotation #{position} is not an object")
        annotation_id = annotation.get("id", f"#{position}")
        if "segments_info" in annotation:
            raise _fail(
                json_file,
                "this is a COCO panoptic json (annotations hold 'segments_info'); "
                "use the coco-panoptic format",
            )
        for key in ("image_id", "category_id", "segmentation"):
            if key not in annotation:
                raise _fail(json_file, f"annotation {annotation_id} has no {key!r}")
        image_id = annotation["image_id"]
        if image_id not in images:
            raise _fail(
                json_file,
                f"annotation {annotation_id} refers to image_id {image_id}, which is not in "
                "'images'",
            )
        if annotation["category_id"] not in categories:
            raise _fail(
                json_file,
                f"annotation {annotation_id} has category_id {annotation['category_id']}, which "
                f"is not in 'categories' (ids {sorted(categories)[:20]})",
            )
        check_segmentation(annotation["segmentation"], json_file, annotation_id)
        info = images[image_id]
        if isinstance(annotation["segmentation"], Mapping) and "height" in info and "width" in info:
            size = [int(s) for s in annotation["segmentation"]["size"]]
            if size != [int(info["height"]), int(info["width"])]:
                raise _fail(
                    json_file,
                    f"annotation {annotation_id}: RLE size {size} (height, width) differs from "
                    f"image {image_id}'s {[info['height'], info['width']]}",
                )
        annotations[int(image_id)].append(annotation)
    return CocoInstanceIndex(
        json_file, ordered, [int(c["id"]) for c in ordered], list(images.values()), annotations
    )


# ----------------------------------------------------------------------------------- decoding
def annotation_rle(annotation: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    """The compressed COCO RLE (``counts`` bytes) of one annotation on a ``height x width`` image.

    ``ValueError`` when an RLE's size is not the image's.
    """
    from pycocotools import mask as mask_utils

    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):  # polygons of one object: rasterise each, then merge
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    size = [int(s) for s in segmentation["size"]]
    if size != [height, width]:
        raise ValueError(
            f"annotation {annotation.get('id', '?')}: RLE size {size} (height, width) differs "
            f"from its image's {[height, width]}"
        )
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
    return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def annotation_masks(
    annotations: Sequence[Mapping[str, Any]], height: int, width: int
) -> np.ndarray:
    """``(n, height, width)`` bool masks of ``annotations``."""
    masks = np.zeros((len(annotations), height, width), dtype=bool)
    for index, annotation in enumerate(annotations):  # one decode per object, vectorised inside
        masks[index] = decode_rle(annotation_rle(annotation, height, width)) != 0
    return masks


def instance_label_map(
    masks: np.ndarray, crowd: np.ndarray, ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, torch.Tensor]:
    """The label map of one image's objects, smaller objects on top.

    Args:
        masks: ``(objects, height, width)`` bool masks of the non-crowd objects.
        crowd: ``(height, width)`` bool union of the crowd regions.
        ignore_index: map value of ignored pixels.

    Returns:
        ``(height, width)`` int64 map (object ``k`` -> ``values[k]``, crowd -> ``ignore_index``,
        background -> one more distinct value) and ``values`` ``(objects,)`` int64.
    """
    count = masks.shape[0]
    values = segment_index_values(count + 1, ignore_index)
    label_map = np.full(crowd.shape, int(values[count]), dtype=np.int64)
    covered = np.zeros(crowd.shape, dtype=bool)
    if count:
        areas = masks.reshape(count, -1).sum(1)
        order = np.argsort(-areas, kind="stable")  # largest first, so the smallest is painted last
        stacked = masks[order]
        covered = stacked.any(0)
        top = count - 1 - np.argmax(stacked[::-1], axis=0)  # last painted object at each pixel
        label_map[covered] = values.numpy()[order[top[covered]]]
    label_map[crowd & ~covered] = ignore_index
    return label_map, values[:count]


# ------------------------------------------------------------------------------------ dataset
class CocoInstanceDataset(SegmentationDataset):
    """COCO instance annotations as MaskFormer training samples (see the module docstring).

    Args:
        json_file: the COCO instance json.
        image_dir: folder of the images (``images[*].file_name`` relative to it).
        transform: ``(image, label_map, generator) -> (pixel_values, label_map)``; default
            normalisation only.
        ignore_index: label value of ignored pixels (crowd regions).
        seed: base seed of the augmentation randomness.

    Attributes:
        id2label: label -> category name.
        category_ids: label -> original category id.
        thing_ids: every label (all categories are objects); ``isthing``: True per label.
        num_labels: number of categories.
    """

    def __init__(
        self,
        json_file: str | Path,
        image_dir: str | Path,
        transform: PairTransform | None = None,
        ignore_index: int = IGNORE_INDEX,
        seed: int = 0,
    ) -> None:
        super().__init__(transform, seed, ignore_index)
        self.json_file = Path(json_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {self.image_dir}")
        self.index = read_coco_instances(self.json_file)
        if not self.index.images:
            raise ValueError(f"{self.json_file} lists no images")
        for image in self.index.images:
            path = self.image_dir / str(image["file_name"])
            if not path.is_file():
                raise FileNotFoundError(
                    f"image {image['id']} of {self.json_file}: file not found: {path}"
                )
        self.id2label = self.index.id2label
        self.category_ids = list(self.index.category_ids)
        self.thing_ids = list(range(len(self.category_ids)))
        self.isthing = [True] * len(self.category_ids)
        self._category_to_label = {c: k for k, c in enumerate(self.category_ids)}

    def __len__(self) -> int:
        return len(self.index.images)

    def load_example(self, index: int) -> Example:
        info = self.index.images[index]
        path = self.image_dir / str(info["file_name"])
        image = read_rgb(path)
        height, width = image.shape[:2]
        if (
            "height" in info
            and "width" in info
            and (info["height"], info["width"])
            != (
                height,
                width,
            )
        ):
            raise ValueError(
                f"{path} is {width}x{height} pixels but {self.json_file} says "
                f"{info['width']}x{info['height']} (width x height)"
            )
        annotations = self.index.annotations[int(info["id"])]
        objects = [a for a in annotations if not a.get("iscrowd", 0)]
        crowds = [a for a in annotations if a.get("iscrowd", 0)]
        label_map, values = instance_label_map(
            annotation_masks(objects, height, width),
            annotation_masks(crowds, height, width).any(0),
            self.ignore_index,
        )
        classes = torch.tensor(
            [self._category_to_label[a["category_id"]] for a in objects], dtype=torch.int64
        )
        return Example(
            image=image,
            label_map=label_map,
            image_id=str(info["id"]),
            segment_values=values,
            segment_classes=classes,
        )


# ------------------------------------------------------------------------- original category ids
def original_category_ids(config: Any) -> list[int] | None:
    """``config.label_category_ids`` checked against its labels, or None when absent.

    ``ValueError`` when it does not hold one integer per label.
    """
    ids = getattr(config, CATEGORY_IDS_KEY, None)
    if ids is None:
        return None
    num_labels = len(config.id2label)
    if not isinstance(ids, (list, tuple)) or len(ids) != num_labels:
        raise ValueError(
            f"config.{CATEGORY_IDS_KEY} must list one category id per label ({num_labels}), "
            f"got {ids!r:.80}"
        )
    return [int(i) for i in ids]


def image_size(info: Mapping[str, Any], image_dir: Path) -> tuple[int, int]:
    """``(height, width)`` of an ``images`` entry: from the json, else from the file header."""
    if "height" in info and "width" in info:
        return int(info["height"]), int(info["width"])
    path = image_dir / str(info["file_name"])
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except OSError as error:
        raise OSError(f"cannot read image {path}: {error}") from None
