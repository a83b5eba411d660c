"""Batching training samples of different sizes: pad to the largest, mark real pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from maskformer.utils.constants import IGNORE_INDEX

PADDED_MASK_VALUE = float(IGNORE_INDEX)


def collate_batch(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch padded at the bottom and right.

    Args:
        samples: dicts with `pixel_values` `(3, H_i, W_i)`, `mask_labels` `(n_i, H_i, W_i)`,
            `class_labels` `(n_i,)` and `image_id`.

    Returns:
        `pixel_values` `(batch, 3, H, W)` zero-padded, `pixel_mask` int64 `(batch, H, W)` with 1 on
        real pixels, `mask_labels` list of `(n_i, H, W)` padded with 255 (ignored), `class_labels`
        list of `(n_i,)`, `image_ids` list of str.
    """
    if not samples:
        raise ValueError("collate_batch needs at least one sample")
    height = max(int(sample["pixel_values"].shape[-2]) for sample in samples)
    width = max(int(sample["pixel_values"].shape[-1]) for sample in samples)
    first = samples[0]["pixel_values"]
    pixel_values = first.new_zeros((len(samples), first.shape[0], height, width))
    pixel_mask = torch.zeros((len(samples), height, width), dtype=torch.int64)
    mask_labels, class_labels = [], []
    for index, sample in enumerate(samples):
        image = sample["pixel_values"]
        image_height, image_width = image.shape[-2:]
        masks = sample["mask_labels"]
        if tuple(masks.shape[-2:]) != (image_height, image_width):
            raise ValueError(
                f"sample {sample.get('image_id', index)!r}: mask_labels size {tuple(masks.shape[-2:])} "
                f"differs from pixel_values size {(image_height, image_width)}"
            )
        pixel_values[index, :, :image_height, :image_width] = image
        pixel_mask[index, :image_height, :image_width] = 1
        pad = (0, width - image_width, 0, height - image_height)
        mask_labels.append(F.pad(masks.to(torch.float32), pad, value=PADDED_MASK_VALUE))
        class_labels.append(sample["class_labels"].to(torch.int64))
    return {
        "pixel_values": pixel_values,
        "pixel_mask": pixel_mask,
        "mask_labels": mask_labels,
        "class_labels": class_labels,
        "image_ids": [str(sample["image_id"]) for sample in samples],
    }
