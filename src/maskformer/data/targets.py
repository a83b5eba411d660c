"""Label maps to MaskFormer targets: one binary mask and one class index per segment.

A label map is an integer `(height, width)` tensor whose values name segments, with
``ignore_index`` marking pixels that belong to no segment and must not be supervised. In the
resulting ``mask_labels`` those ignored pixels are 255 in every mask (the loss skips values other
than 0 and 1).
"""

from __future__ import annotations

import torch

from maskformer.utils.constants import IGNORE_INDEX

IGNORED_TARGET_VALUE = float(IGNORE_INDEX)


def masks_from_label_map(
    label_map: torch.Tensor,
    segment_values: torch.Tensor,
    segment_classes: torch.Tensor,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask per listed segment that still has pixels in the map.

    Args:
        label_map: `(height, width)` integer map of segment values.
        segment_values: `(segments,)` the value of each segment in `label_map`.
        segment_classes: `(segments,)` the class index of each segment.
        ignore_index: map value of ignored pixels.

    Returns:
        `mask_labels` float32 `(n, height, width)` with values {0, 1, 255} and `class_labels`
        int64 `(n,)`, in the order of `segment_values`; segments without pixels are dropped.
    """
    label_map = label_map.to(torch.int64)
    segment_values = torch.as_tensor(segment_values, dtype=torch.int64)
    segment_classes = torch.as_tensor(segment_classes, dtype=torch.int64)
    masks = label_map[None] == segment_values[:, None, None]
    present = masks.flatten(1).any(1)
    masks = masks[present].to(torch.float32)
    masks[:, label_map == ignore_index] = IGNORED_TARGET_VALUE
    return masks, segment_classes[present]


def semantic_targets(
    label_map: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask per class present in a semantic label map (values are class indices).

    Args:
        label_map: `(height, width)` integer class map, `ignore_index` for ignored pixels.
        ignore_index: value of ignored pixels.

    Returns:
        `mask_labels` float32 `(n, height, width)` and `class_labels` int64 `(n,)`, classes in
        increasing order.
    """
    label_map = label_map.to(torch.int64)
    classes = torch.unique(label_map[label_map != ignore_index])
    return masks_from_label_map(label_map, classes, classes, ignore_index)


def segment_index_values(count: int, ignore_index: int) -> torch.Tensor:
    """`count` distinct non-negative map values for segments, skipping `ignore_index`.

    Panoptic readers write segment k of an image as value `segment_index_values(n)[k]`, so any
    number of segments fits an int64 map without colliding with the ignore value.
    """
    values = torch.arange(count + 1, dtype=torch.int64)
    return values[values != ignore_index][:count]
