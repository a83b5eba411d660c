"""MaskFormer in plain PyTorch, a drop-in for the transformers 4.34.1 MaskFormer API.

Public names are imported lazily, so ``import maskformer`` stays cheap and a command-line call
only loads what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # configuration
    "MaskFormerConfig": "maskformer.configuration",
    "MaskFormerSwinConfig": "maskformer.configuration",
    "SwinConfig": "maskformer.configuration",
    "ResNetConfig": "maskformer.configuration",
    "DetrConfig": "maskformer.configuration",
    # model
    "MaskFormerPreTrainedModel": "maskformer.modeling.maskformer",
    "MaskFormerModel": "maskformer.modeling.maskformer",
    "MaskFormerForInstanceSegmentation": "maskformer.modeling.maskformer",
    "MaskFormerModelOutput": "maskformer.modeling.outputs",
    "MaskFormerForInstanceSegmentationOutput": "maskformer.modeling.outputs",
    "MaskFormerSwinBackbone": "maskformer.modeling.swin_backbone",
    "MaskFormerSwinModel": "maskformer.modeling.swin_backbone",
    "MaskFormerSwinModelOutputWithPooling": "maskformer.modeling.outputs",
    "MaskFormerSwinBaseModelOutput": "maskformer.modeling.outputs",
    "BackboneOutput": "maskformer.modeling.outputs",
    # loss
    "MaskFormerHungarianMatcher": "maskformer.modeling.matcher",
    "MaskFormerLoss": "maskformer.modeling.criterion",
    # processing
    "MaskFormerImageProcessor": "maskformer.processing.image_processor",
    "MaskFormerFeatureExtractor": "maskformer.processing.image_processor",
    "binary_mask_to_rle": "maskformer.processing.rle",
    "convert_segmentation_to_rle": "maskformer.processing.rle",
}

__all__ = [
    "BackboneOutput",
    "DetrConfig",
    "MaskFormerConfig",
    "MaskFormerFeatureExtractor",
    "MaskFormerForInstanceSegmentation",
    "MaskFormerForInstanceSegmentationOutput",
    "MaskFormerHungarianMatcher",
    "MaskFormerImageProcessor",
    "MaskFormerLoss",
    "MaskFormerModel",
    "MaskFormerModelOutput",
    "MaskFormerPreTrainedModel",
    "MaskFormerSwinBackbone",
    "MaskFormerSwinBaseModelOutput",
    "MaskFormerSwinConfig",
    "MaskFormerSwinModel",
    "MaskFormerSwinModelOutputWithPooling",
    "ResNetConfig",
    "SwinConfig",
    "binary_mask_to_rle",
    "convert_segmentation_to_rle",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'maskformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from maskformer.configuration import (
        DetrConfig,
        MaskFormerConfig,
        MaskFormerSwinConfig,
        ResNetConfig,
        SwinConfig,
    )
    from maskformer.modeling.criterion import MaskFormerLoss
    from maskformer.modeling.maskformer import (
        MaskFormerForInstanceSegmentation,
        MaskFormerModel,
        MaskFormerPreTrainedModel,
    )
    from maskformer.modeling.matcher import MaskFormerHungarianMatcher
    from maskformer.modeling.outputs import (
        BackboneOutput,
        MaskFormerForInstanceSegmentationOutput,
        MaskFormerModelOutput,
        MaskFormerSwinBaseModelOutput,
        MaskFormerSwinModelOutputWithPooling,
    )
    from maskformer.modeling.swin_backbone import MaskFormerSwinBackbone, MaskFormerSwinModel
    from maskformer.processing.image_processor import (
        MaskFormerFeatureExtractor,
        MaskFormerImageProcessor,
    )
    from maskformer.processing.rle import binary_mask_to_rle, convert_segmentation_to_rle
