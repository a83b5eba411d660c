"""COCO panoptic segmentation: a json annotation file, RGB images and RGB-encoded segment PNGs.

A PNG pixel holds segment id `R + 256 * G + 256**2 * B` (0 = void). The json's `segments_info`
gives each id a `category_id` and an `iscrowd` flag. Categories map to contiguous class indices
0..K-1 in the order of the json's `categories` list. Each non-crowd segment becomes one target;
crowd and void pixels are ignored in every mask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskformer.data.ade20k import read_rgb
from maskformer.data.base import Example, PairTransform, SegmentationDataset
from maskformer.data.targets import segment_index_values
from maskformer.utils.constants import IGNORE_INDEX


def rgb_to_segment_ids(rgb: np.ndarray) -> np.ndarray:
    """`(height, width, 3)` uint8 panoptic PNG -> `(height, width)` int64 segment ids."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


class CocoPanopticDataset(SegmentationDataset):
    """COCO panoptic annotations as MaskFormer training samples.

    Args:
        json_file: COCO panoptic json (`images`, `annotations`, `categories`).
        image_dir: folder of the RGB images (`images[*].file_name`).
        panoptic_dir: folder of the segment PNGs (`annotations[*].file_name`).
        transform: `(image, label_map, generator) -> (pixel_values, label_map)`; default
            normalisation only.
        categories: category list to use instead of the json's (e.g. from
            `panoptic_coco_categories.json`).
        ignore_index: label value of ignored pixels.
        seed: base seed of the augmentation randomness.

    Attributes:
        id2label: class index -> category name.
        isthing: per class index, whether the category is a "thing".
        thing_ids: class indices of the thing categories.
        category_ids: class index -> COCO category id.
    """

    def __init__(
        self,
        json_file: str | Path,
        image_dir: str | Path,
        panoptic_dir: str | Path,
        transform: PairTransform | None = None,
        categories: list[dict[str, Any]] | None = None,
        ignore_index: int = IGNORE_INDEX,
        seed: int = 0,
    ):
        super().__init__(transform, seed, ignore_index)
        self.json_file = Path(json_file)
        self.image_dir = Path(image_dir)
        self.panoptic_dir = Path(panoptic_dir)
        if not self.json_file.is_file():
            raise FileNotFoundError(f"COCO panoptic json not found: {self.json_file}")
        for folder in (self.image_dir, self.panoptic_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"COCO panoptic folder not found: {folder}")
        with self.json_file.open() as handle:
            data = json.load(handle)
        categories = categories if categories is not None else data.get("categories")
        if not categories:
            raise ValueError(f"{self.json_file} has no 'categories'; pass categories=...")

        self.category_ids = [int(category["id"]) for category in categories]
        self.id2label = {index: str(category["name"]) for index, category in enumerate(categories)}
        self.isthing = [bool(category.get("isthing", 0)) for category in categories]
        self.thing_ids = [index for index, thing in enumerate(self.isthing) if thing]
        self.category_to_class = {
            category: index for index, category in enumerate(self.category_ids)
        }

        images = {int(image["id"]): image for image in data.get("images", [])}
        self.records: list[tuple[Path, Path, str, list[dict[str, Any]]]] = []
        for annotation in data.get("annotations", []):
            image_info = images.get(int(annotation["image_id"]))
            panoptic_path = self.panoptic_dir / annotation["file_name"]
            if image_info is None:
                raise ValueError(
                    f"{self.json_file}: annotation {panoptic_path.name} refers to image_id "
                    f"{annotation['image_id']}, which is not in 'images'"
                )
            image_path = self.image_dir / image_info["file_name"]
            for path in (image_path, panoptic_path):
                if not path.is_file():
                    raise FileNotFoundError(f"COCO panoptic file not found: {path}")
            for segment in annotation["segments_info"]:
                if int(segment["category_id"]) not in self.category_to_class:
                    raise ValueError(
                        f"{panoptic_path}: segment {segment['id']} has category_id "
                        f"{segment['category_id']}, which is not among the {len(categories)} categories"
                    )
            self.records.append(
                (
                    image_path,
                    panoptic_path,
                    Path(image_info["file_name"]).stem,
                    annotation["segments_info"],
                )
            )
        if not self.records:
            raise ValueError(f"{self.json_file} has no annotations")

    def __len__(self) -> int:
        return len(self.records)

    def load_example(self, index: int) -> Example:
        image_path, panoptic_path, image_id, segments = self.records[index]
        image = read_rgb(image_path)
        segment_ids = rgb_to_segment_ids(read_rgb(panoptic_path))
        if segment_ids.shape != image.shape[:2]:
            raise ValueError(
                f"panoptic map {panoptic_path} has size {segment_ids.shape[::-1]} (width, height) "
                f"but its image {image_path} has size {image.shape[1::-1]}"
            )

        kept = [segment for segment in segments if not segment.get("iscrowd", 0)]
        values = segment_index_values(len(kept), self.ignore_index)
        classes = torch.tensor(
            [self.category_to_class[int(segment["category_id"])] for segment in kept],
            dtype=torch.int64,
        )

        # Segment id -> map value via a sorted lookup; crowd, void and unlisted ids are ignored.
        ids = np.array([int(segment["id"]) for segment in kept], dtype=np.int64)
        order = np.argsort(ids)
        sorted_ids, sorted_values = ids[order], values.numpy()[order]
        label_map = np.full(segment_ids.shape, self.ignore_index, dtype=np.int64)
        if ids.size:
            position = np.searchsorted(sorted_ids, segment_ids).clip(max=ids.size - 1)
            listed = sorted_ids[position] == segment_ids
            label_map[listed] = sorted_values[position[listed]]
        return Example(
            image=image,
            label_map=label_map,
            image_id=image_id,
            segment_values=values,
            segment_classes=classes,
        )
