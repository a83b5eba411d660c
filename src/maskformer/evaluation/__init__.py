"""Metrics that accumulate over batches and processes: semantic, panoptic and instance."""

from __future__ import annotations

from maskformer.evaluation.folders import evaluate_panoptic_folders, evaluate_semantic_folders
from maskformer.evaluation.instance import InstanceSegmentationMetric, encode_masks
from maskformer.evaluation.label_files import (
    load_panoptic_json,
    panoptic_ids_to_rgb,
    read_label_png,
    read_panoptic_png,
    rgb_to_panoptic_ids,
)
from maskformer.evaluation.panoptic import PanopticQualityMetric, parse_categories
from maskformer.evaluation.semantic import SemanticSegmentationMetric

__all__ = [
    "InstanceSegmentationMetric",
    "PanopticQualityMetric",
    "SemanticSegmentationMetric",
    "encode_masks",
    "evaluate_panoptic_folders",
    "evaluate_semantic_folders",
    "load_panoptic_json",
    "panoptic_ids_to_rgb",
    "parse_categories",
    "read_label_png",
    "read_panoptic_png",
    "rgb_to_panoptic_ids",
]
