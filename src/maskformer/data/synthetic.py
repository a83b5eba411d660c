"""A deterministic synthetic segmentation data set: coloured shapes on textured backgrounds.

Nothing is downloaded. Every image is drawn from a random generator seeded with
``(seed, index)``, so the same index always gives the same image and labels, in any process.

Each image has one "stuff" segment (the textured ``background``) and one to a few "thing"
instances of three classes. A class is visible both in its shape and in its colour family:

==========  ==========  ============================
class id    name        look
==========  ==========  ============================
0           background  low-saturation stripes and noise
1           disc        filled circle, red/orange hues
2           square      rotated square, green hues
3           triangle    rotated triangle, blue hues
==========  ==========  ============================

Instances may overlap, including instances of the same class; each one carries a dark outline
and its own shade, so a model can still tell the instances apart. An instance is never hidden
by more than half by the ones drawn over it, and never shrinks below a minimum visible area.

Samples follow the training contract of :mod:`maskformer.data` (the data set is a
:class:`~maskformer.data.base.SegmentationDataset`, so the readers' transforms apply)::

    {"pixel_values": float32 (3, H, W) normalised with the ImageNet mean/std,
     "mask_labels": float32 (n, H, W) with values {0, 1} (255 = ignored, e.g. crop padding),
     "class_labels": int64 (n,),
     "image_id": str}
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from maskformer.data.base import Example, PairTransform, SegmentationDataset

SYNTHETIC_ID2LABEL: dict[int, str] = {0: "background", 1: "disc", 2: "square", 3: "triangle"}
SYNTHETIC_THING_IDS = (1, 2, 3)
SYNTHETIC_STUFF_IDS = (0,)

# Hue ranges (in turns, 0..1) of each thing class; disc wraps around red.
_HUE_RANGES: dict[int, tuple[float, float]] = {
    1: (-0.04, 0.08),  # red / orange
    2: (0.25, 0.42),  # green
    3: (0.55, 0.68),  # blue
}


def synthetic_categories() -> list[dict[str, Any]]:
    """COCO-panoptic style category list: ``[{"id", "name", "isthing"}, ...]``."""
    return [
        {"id": class_id, "name": name, "isthing": int(class_id in SYNTHETIC_THING_IDS)}
        for class_id, name in SYNTHETIC_ID2LABEL.items()
    ]


class SyntheticShapesDataset(SegmentationDataset):
    """Shapes of three classes on textured backgrounds, with semantic and panoptic labels.

    Args:
        num_images: number of images (indices ``0 .. num_images - 1``).
        image_size: side of the square images in pixels.
        seed: base seed; image ``i`` is drawn from ``np.random.default_rng([seed, i])``.
        transform: a pair transform of :mod:`maskformer.data.transforms`, ``(image, label_map,
            generator) -> (pixel_values, label_map)``, applied in ``__getitem__`` (not in
            :meth:`get_ground_truth`) with a generator drawn from ``(seed, epoch, index)``;
            default: ImageNet normalisation only.
        max_instances: most thing instances per image (at least one is always drawn).
    """

    id2label = SYNTHETIC_ID2LABEL
    label2id = {name: class_id for class_id, name in SYNTHETIC_ID2LABEL.items()}
    thing_ids = SYNTHETIC_THING_IDS
    stuff_ids = SYNTHETIC_STUFF_IDS

    def __init__(
        self,
        num_images: int,
        image_size: int = 64,
        seed: int = 0,
        transform: PairTransform | None = None,
        max_instances: int = 4,
    ) -> None:
        super().__init__(transform, seed, ignore_index=255)
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        self.num_images = num_images
        self.image_size = image_size
        self.max_instances = max_instances

    @property
    def categories(self) -> list[dict[str, Any]]:
        return synthetic_categories()

    def __len__(self) -> int:
        return self.num_images

    # ----------------------------------------------------------------------------------- labels
    def get_ground_truth(
        self, index: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """The untransformed image and its labels.

        Returns:
            image: uint8 ``(H, W, 3)``.
            semantic: uint8 ``(H, W)`` class ids.
            panoptic: int32 ``(H, W)`` segment ids, 1 = background, 2.. = instances (0 unused).
            segments_info: ``[{"id", "category_id", "iscrowd", "isthing", "area"}, ...]``.
        """
        index = self._check_index(index)
        image, panoptic, categories = _draw_image(
            np.random.default_rng([self.seed, index]), self.image_size, self.max_instances
        )
        segment_ids = np.arange(1, len(categories) + 1)
        areas = np.bincount(panoptic.ravel(), minlength=len(categories) + 1)[1:]
        semantic = np.asarray(categories, dtype=np.uint8)[panoptic - 1]
        segments_info = [
            {
                "id": int(segment_id),
                "category_id": int(category),
                "iscrowd": 0,
                "isthing": int(category in SYNTHETIC_THING_IDS),
                "area": int(area),
            }
            for segment_id, category, area in zip(segment_ids, categories, areas)
        ]
        return image, semantic, panoptic, segments_info

    def get_image(self, index: int) -> Image.Image:
        """The image as a PIL RGB image."""
        return Image.fromarray(self.get_ground_truth(index)[0])

    def load_example(self, index: int) -> Example:
        """The example behind ``__getitem__``: the image and its segment map (1 = background)."""
        image, _, panoptic, segments_info = self.get_ground_truth(index)
        return Example(
            image=image,
            label_map=panoptic.astype(np.int64),
            image_id=f"synthetic_{self.seed}_{index % self.num_images:06d}",
            segment_values=torch.tensor([info["id"] for info in segments_info]),
            segment_classes=torch.tensor([info["category_id"] for info in segments_info]),
        )

    def _check_index(self, index: int) -> int:
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return index % self.num_images


# ------------------------------------------------------------------------------------- drawing
def _draw_image(
    rng: np.random.Generator, size: int, max_instances: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Draw one image.

    Returns uint8 image ``(size, size, 3)``, int32 segment map ``(size, size)`` (1 = background,
    2.. = instances, in drawing order) and the class id of every segment (index ``id - 1``).
    """
    image = _background(rng, size)
    segment_map = np.ones((size, size), dtype=np.int32)
    categories = [0]
    min_area = max(16, int(0.012 * size * size))
    num_instances = int(rng.integers(1, max_instances + 1))
    for _ in range(num_instances):
        for _attempt in range(10):
            category = int(rng.integers(1, 4))
            shape = _shape_mask(rng, category, size)
            proposed = segment_map.copy()
            proposed[shape] = len(categories) + 1
            if _keeps_instances_visible(segment_map, proposed, len(categories), min_area):
                break
        else:
            continue  # no placement leaves every instance visible enough: skip this one
        _paint_instance(rng, image, shape, category)
        segment_map = proposed
        categories.append(category)
    return image, segment_map, categories


def _keeps_instances_visible(
    before: np.ndarray, after: np.ndarray, num_segments: int, min_area: int
) -> bool:
    """True when the new instance is large enough and hides no earlier instance by more than half."""
    counts_before = np.bincount(before.ravel(), minlength=num_segments + 2)
    counts_after = np.bincount(after.ravel(), minlength=num_segments + 2)
    if counts_after[num_segments + 1] < min_area:
        return False
    things_before = counts_before[2 : num_segments + 1]
    things_after = counts_after[2 : num_segments + 1]
    return bool(np.all(things_after >= np.maximum(min_area, things_before // 2)))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-saturation texture: oriented stripes plus a smooth gradient plus pixel noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(3, 9)
    stripes = np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)))
    gradient = (xx - 0.5) * rng.uniform(-1, 1) + (yy - 0.5) * rng.uniform(-1, 1)
    brightness = rng.uniform(0.35, 0.75)
    luminance = (
        brightness
        + rng.uniform(0.04, 0.12) * stripes
        + 0.15 * gradient
        + rng.normal(0, 0.03, (size, size))
    )
    tint = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.15), 1.0))
    image = luminance[..., None] * tint[None, None, :]
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, category: int, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask of one shape of ``category`` at a random place, size, angle."""
    radius = rng.uniform(0.11, 0.22) * size
    cx, cy = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if category == 1:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        corners = 4 if category == 2 else 3
        start = rng.uniform(0, 2 * np.pi)
        angles = start + 2 * np.pi * np.arange(corners) / corners
        scale = radius * (1.15 if category == 3 else 1.0)
        points = [(cx + scale * np.cos(a), cy + scale * np.sin(a)) for a in angles]
        draw.polygon(points, fill=255)
    return np.asarray(canvas) > 127


def _paint_instance(
    rng: np.random.Generator, image: np.ndarray, shape: np.ndarray, category: int
) -> None:
    """Fill ``shape`` in ``image`` with a shade of the class's hue family and a dark outline."""
    low, high = _HUE_RANGES[category]
    hue = rng.uniform(low, high) % 1.0
    color = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.65, 1.0)))
    noise = rng.normal(0, 0.04, (*shape.shape, 1))
    fill = np.clip(color[None, None, :] + noise, 0, 1)
    inner = shape.copy()
    inner[1:, :] &= shape[:-1, :]
    inner[:-1, :] &= shape[1:, :]
    inner[:, 1:] &= shape[:, :-1]
    inner[:, :-1] &= shape[:, 1:]
    outline = shape & ~inner
    fill[outline] *= 0.35
    image[shape] = (fill[shape] * 255).astype(np.uint8)
