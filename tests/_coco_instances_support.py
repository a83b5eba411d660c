"""Small COCO instance data sets for the tests: synthetic shapes written as an annotation tool
would export them (polygons, compressed and uncompressed RLE, a crowd region, an image without
objects, category ids that are neither contiguous nor in name order)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.spatial import ConvexHull

from maskformer.data.synthetic import SYNTHETIC_ID2LABEL, SyntheticShapesDataset
from maskformer.utils.coco import encode_rle

# synthetic class -> COCO category id (non-contiguous, not in name order)
SYNTHETIC_TO_CATEGORY = {1: 11, 2: 27, 3: 5}
CROWD_BOX = (0, 0, 12, 10)  # x, y, width, height of the crowd region in the first image


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE of a ``(height, width)`` mask: column-major runs, zeros first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


def hull_polygon(mask: np.ndarray) -> list[float]:
    """The convex hull of a mask's pixel squares as a COCO polygon ``[x1, y1, ...]``."""
    rows, cols = np.nonzero(mask)
    corners = np.concatenate(
        [np.stack([cols + dx, rows + dy], 1) for dx in (0, 1) for dy in (0, 1)]
    ).astype(np.float64)
    hull = ConvexHull(corners)
    return corners[hull.vertices].ravel().tolist()


def write_synthetic_coco(
    folder: Path, num_images: int = 6, image_size: int = 64, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``folder/images/*.png`` and ``folder/annotations.json``; returns both paths.

    Image ``k`` has id ``100 + k`` and file ``{id:06d}.png``; the last image keeps no objects.
    Objects rotate through polygon (convex hull), compressed RLE and uncompressed RLE.
    """
    dataset = SyntheticShapesDataset(num_images, image_size=image_size, seed=seed)
    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        picture, _, panoptic, segments = dataset.get_ground_truth(index)
        image_id = 100 + index
        file_name = f"{image_id:06d}.png"
        Image.fromarray(picture).save(image_dir / file_name)
        images.append(
            {"id": image_id, "file_name": file_name, "height": image_size, "width": image_size}
        )
        if index == num_images - 1:
            continue  # an image without annotations
        for segment in segments:
            if segment["category_id"] not in SYNTHETIC_TO_CATEGORY:
                continue  # background is not an object
            mask = panoptic == segment["id"]
            style = len(annotations) % 3
            if style == 0:
                segmentation: Any = [hull_polygon(mask)]
            elif style == 1:
                segmentation = encode_rle(mask[None])[0]
            else:
                segmentation = uncompressed_rle(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": SYNTHETIC_TO_CATEGORY[segment["category_id"]],
                    "segmentation": segmentation,
                    "area": int(mask.sum()),
                    "bbox": [0, 0, 0, 0],
                    "iscrowd": 0,
                }
            )
        if index == 0:
            x, y, w, h = CROWD_BOX
            crowd = np.zeros((image_size, image_size), dtype=bool)
            crowd[y : y + h, x : x + w] = True
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": SYNTHETIC_TO_CATEGORY[1],
                    "segmentation": uncompressed_rle(crowd),
                    "area": int(crowd.sum()),
                    "bbox": [x, y, w, h],
                    "iscrowd": 1,
                }
            )
    categories = [
        {"id": category, "name": SYNTHETIC_ID2LABEL[synthetic], "supercategory": "shape"}
        for synthetic, category in SYNTHETIC_TO_CATEGORY.items()
    ]
    json_file = folder / "annotations.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return json_file, image_dir
