"""Image processor (preprocess, training targets) and post-processing (semantic, instance, panoptic)."""

from __future__ import annotations

from maskformer.processing.batch import BatchFeature
from maskformer.processing.image_processor import (
    MaskFormerFeatureExtractor,
    MaskFormerImageProcessor,
    convert_segmentation_map_to_binary_masks,
)
from maskformer.processing.postprocess import (
    binary_mask_to_coco_rle,
    post_process_instance_segmentation,
    post_process_panoptic_segmentation,
    post_process_semantic_segmentation,
)

__all__ = [
    "BatchFeature",
    "MaskFormerFeatureExtractor",
    "MaskFormerImageProcessor",
    "binary_mask_to_coco_rle",
    "convert_segmentation_map_to_binary_masks",
    "post_process_instance_segmentation",
    "post_process_panoptic_segmentation",
    "post_process_semantic_segmentation",
]
