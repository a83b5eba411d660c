"""The configuration of a ``timm`` backbone (model_type ``"timm"``): which timm model, which
feature levels, and the keywords it is built with. Re-exported by
:mod:`maskformer.configuration`, where `MaskFormerConfig` looks it up by model type."""

from __future__ import annotations

from typing import Any, ClassVar

from maskformer.config_compat import BaseConfig


class TimmBackboneConfig(BaseConfig):
    """A ``timm`` image model as the backbone (model_type ``"timm"``; needs ``maskformer[timm]``).

    Args:
        name: the timm model name (``"resnet50"``, ``"convnext_tiny"``, ``"vit_small_patch16_224"``).
        out_indices: the feature levels to take (timm's ``out_indices``); default: timm's, less
            the levels finer than stride 4. A plain ViT (every level at one stride) is turned
            into a 4-level pyramid from its last level.
        pretrained: load timm's own pretrained weights when the model is built from this config
            (needs the network once; never when loading a checkpoint, whose weights win).
        features_only: timm's feature-extraction wrapper; must stay true (the pixel decoder
            needs feature maps, not logits). Written to config.json so the file says how the
            backbone was built.
        num_channels: input channels (timm's ``in_chans``).
        model_kwargs: further keywords for ``timm.create_model`` (e.g. ``{"dynamic_img_size":
            true}`` for a ViT on images of any size, ``{"strict_img_size": false}`` for Swin).
    """

    model_type = "timm"
    _reserved_kwargs: ClassVar[tuple[str, ...]] = (
        "features_only",
        "out_indices",
        "pretrained",
        "in_chans",
    )

    def __init__(
        self,
        name: str = "resnet50",
        out_indices: list[int] | None = None,
        pretrained: bool = False,
        features_only: bool = True,
        num_channels: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(name, str) or not name:
            raise ValueError(f"timm backbone name must be a non-empty string, got {name!r}")
        if out_indices is not None and (
            not isinstance(out_indices, (list, tuple))
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in out_indices)
            or len(out_indices) < 1
        ):
            raise ValueError(f"timm out_indices must be a list of integers, got {out_indices!r}")
        if features_only is not True:
            raise ValueError(
                "timm features_only must be true: MaskFormer's pixel decoder needs feature maps"
            )
        model_kwargs = dict(model_kwargs or {})
        reserved = sorted(set(model_kwargs) & set(self._reserved_kwargs))
        if reserved:
            raise ValueError(
                f"timm model_kwargs must not set {reserved}; use the config fields instead"
            )
        self.name = name
        self.out_indices = None if out_indices is None else list(out_indices)
        self.pretrained = bool(pretrained)
        self.features_only = True
        self.num_channels = int(num_channels)
        self.model_kwargs = model_kwargs
