"""Shared machinery of the segmentation datasets: per-sample randomness, transforms, targets.

A subclass reads one example as an image and an integer label map (`load_example`); this base
class draws the sample's random generator from `(seed, epoch, index)`, applies the transform and
turns the label map into `mask_labels` / `class_labels`. Because the generator depends only on
those three numbers, a sample is the same whichever DataLoader worker builds it and whether or not
training was interrupted and resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from maskformer.data.targets import masks_from_label_map, semantic_targets
from maskformer.data.transforms import EvalTransform


class PairTransform(Protocol):
    def __call__(
        self, image: np.ndarray, label_map: np.ndarray, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class Example:
    """One decoded example before augmentation.

    Attributes:
        image: `(height, width, 3)` uint8 RGB.
        label_map: `(height, width)` int64; class indices (semantic) or segment values (panoptic),
            `ignore_index` for ignored pixels.
        image_id: identifier reported in the sample.
        segment_values: panoptic only, `(segments,)` map value of each segment.
        segment_classes: panoptic only, `(segments,)` class index of each segment.
    """

    image: np.ndarray
    label_map: np.ndarray
    image_id: str
    segment_values: torch.Tensor | None = None
    segment_classes: torch.Tensor | None = None


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed from `(seed, epoch, index)`."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SegmentationDataset(Dataset):
    """Base class: `__getitem__` returns the training sample dict.

    Args:
        transform: `(image, label_map, generator) -> (pixel_values, label_map)`; defaults to
            `EvalTransform` (normalisation only).
        seed: base seed of the augmentation randomness.
        ignore_index: label value of ignored pixels (must match the transform's, if it has one).
    """

    id2label: dict[int, str]

    def __init__(self, transform: PairTransform | None, seed: int, ignore_index: int):
        transform = transform if transform is not None else EvalTransform(ignore_index=ignore_index)
        transform_ignore = getattr(transform, "ignore_index", ignore_index)
        if transform_ignore != ignore_index:
            raise ValueError(
                f"transform.ignore_index ({transform_ignore}) differs from the dataset's "
                f"ignore_index ({ignore_index})"
            )
        self.transform = transform
        self.seed = int(seed)
        self.ignore_index = int(ignore_index)
        self.epoch = 0

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness of `epoch` (call before iterating each epoch)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The random generator of sample `index` in the current epoch."""
        return torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))

    def load_example(self, index: int) -> Example:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        example = self.load_example(index)
        pixel_values, label_map = self.transform(
            example.image, example.label_map, self.generator(index)
        )
        if example.segment_values is None:
            mask_labels, class_labels = semantic_targets(label_map, self.ignore_index)
        else:
            mask_labels, class_labels = masks_from_label_map(
                label_map, example.segment_values, example.segment_classes, self.ignore_index
            )
        return {
            "pixel_values": pixel_values.to(torch.float32),
            "mask_labels": mask_labels,
            "class_labels": class_labels,
            "image_id": example.image_id,
        }
