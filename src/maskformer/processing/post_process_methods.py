"""The post-processing methods of ``MaskFormerImageProcessor``: thin calls into ``postprocess.py``."""

from __future__ import annotations

from typing import Any

import torch

from maskformer.processing import postprocess
from maskformer.processing.deprecation import deprecated


class PostProcessMixin:
    """``post_process_*`` methods with the reference's signatures and defaults."""

    def post_process_segmentation(
        self, outputs: Any, target_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Deprecated: class scores ``(batch, classes, H, W)``; use
        ``post_process_semantic_segmentation``."""
        deprecated("post_process_segmentation", "use `post_process_semantic_segmentation`")
        return postprocess.post_process_segmentation(outputs, target_size)

    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Any = None
    ) -> list[torch.Tensor]:
        return postprocess.post_process_semantic_segmentation(outputs, target_sizes)

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: Any = None,
        return_coco_annotation: bool | None = False,
        return_binary_maps: bool | None = False,
    ) -> list[dict[str, Any]]:
        return postprocess.post_process_instance_segmentation(
            outputs,
            threshold,
            mask_threshold,
            overlap_mask_area_threshold,
            target_sizes,
            return_coco_annotation,
            return_binary_maps,
        )

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: set[int] | None = None,
        target_sizes: Any = None,
    ) -> list[dict[str, Any]]:
        return postprocess.post_process_panoptic_segmentation(
            outputs,
            threshold,
            mask_threshold,
            overlap_mask_area_threshold,
            label_ids_to_fuse,
            target_sizes,
        )

    post_process_semantic_segmentation.__doc__ = (
        postprocess.post_process_semantic_segmentation.__doc__
    )
    post_process_instance_segmentation.__doc__ = (
        postprocess.post_process_instance_segmentation.__doc__
    )
    post_process_panoptic_segmentation.__doc__ = (
        postprocess.post_process_panoptic_segmentation.__doc__
    )
