"""The configuration schema: `MaskFormerConfig` and the backbone / decoder configs it nests.

Each class lists its fields and defaults exactly as transformers 4.34.1 does, so that
``config.json`` files move between the two libraries unchanged. The reading, writing and hub
machinery they share is `maskformer.config_compat.BaseConfig`.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from maskformer.config_compat import (
    COMPATIBLE_TRANSFORMERS_VERSION as COMPATIBLE_TRANSFORMERS_VERSION,
)
from maskformer.config_compat import CONFIG_NAME as CONFIG_NAME  # re-exported, like BaseConfig
from maskformer.config_compat import BaseConfig
from maskformer.configuration_timm import TimmBackboneConfig as TimmBackboneConfig  # re-exported

# ---------------------------------------------------------------------- backbone configs


def aligned_out_features_and_indices(
    out_features: list[str] | None, out_indices: list[int] | None, stage_names: list[str]
) -> tuple[list[str], list[int]]:
    """Make ``out_features`` and ``out_indices`` agree (§1.2 of the behaviour notes)."""
    if out_features is not None:
        if not isinstance(out_features, (list, tuple)):
            raise ValueError(f"out_features must be a list, got {type(out_features).__name__}")
        unknown = [name for name in out_features if name not in stage_names]
        if unknown:
            raise ValueError(f"out_features {unknown} are not stages; choose from {stage_names}")
    if out_indices is not None:
        if not isinstance(out_indices, (list, tuple)):
            raise ValueError(f"out_indices must be a list, got {type(out_indices).__name__}")
        bad = [i for i in out_indices if not -len(stage_names) <= i < len(stage_names)]
        if bad:
            raise ValueError(f"out_indices {bad} are out of range for {len(stage_names)} stages")
    if out_features is None and out_indices is None:
        return [stage_names[-1]], [len(stage_names) - 1]
    if out_features is None:
        return [stage_names[i] for i in out_indices], list(out_indices)
    if out_indices is None:
        return list(out_features), [stage_names.index(name) for name in out_features]
    if len(out_features) != len(out_indices) or [stage_names[i] for i in out_indices] != list(
        out_features
    ):
        raise ValueError(
            f"out_features {list(out_features)} and out_indices {list(out_indices)} do not match"
        )
    return list(out_features), list(out_indices)


class BackboneConfigMixin:
    """``out_features`` / ``out_indices`` kept aligned with ``stage_names``."""

    stage_names: list[str]

    def _set_outputs(self, out_features: Any, out_indices: Any) -> None:
        features, indices = aligned_out_features_and_indices(
            out_features, out_indices, self.stage_names
        )
        object.__setattr__(self, "_out_features", features)
        object.__setattr__(self, "_out_indices", indices)

    @property
    def out_features(self) -> list[str]:
        return self._out_features

    @out_features.setter
    def out_features(self, value: list[str] | None) -> None:
        self._set_outputs(value, None)

    @property
    def out_indices(self) -> list[int]:
        return self._out_indices

    @out_indices.setter
    def out_indices(self, value: list[int] | None) -> None:
        self._set_outputs(None, value)

    def _stored_items(self) -> dict[str, Any]:
        items = {}
        for key, value in BaseConfig._stored_items(self).items():  # type: ignore[arg-type]
            if key == "_out_features":
                items["out_features"] = value
            elif key == "_out_indices":
                items["out_indices"] = value
            else:
                items[key] = value
        return items


class SwinConfig(BackboneConfigMixin, BaseConfig):
    """The hub's Swin config (model_type ``"swin"``); MaskFormer builds its own Swin from it."""

    model_type = "swin"
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    def __init__(
        self,
        image_size: int | list[int] = 224,
        patch_size: int = 4,
        num_channels: int = 3,
        embed_dim: int = 96,
        depths: list[int] = (2, 2, 6, 2),
        num_heads: list[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.1,
        hidden_act: str = "gelu",
        use_absolute_embeddings: bool = False,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-5,
        encoder_stride: int = 32,
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        for derived in ("stage_names", "num_layers", "hidden_size"):
            kwargs.pop(derived, None)
        super().__init__(**kwargs)
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.embed_dim = embed_dim
        self.depths = list(depths)
        self.num_layers = len(self.depths)
        self.num_heads = list(num_heads)
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.hidden_act = hidden_act
        self.use_absolute_embeddings = use_absolute_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self._set_encoder_stride(encoder_stride)
        self.hidden_size = int(embed_dim * 2 ** (len(self.depths) - 1))
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]
        self._set_outputs(out_features, out_indices)

    def _set_encoder_stride(self, encoder_stride: int) -> None:
        self.encoder_stride = encoder_stride


class MaskFormerSwinConfig(SwinConfig):
    """The MaskFormer Swin config (model_type ``"maskformer-swin"``): SwinConfig without encoder_stride."""

    model_type = "maskformer-swin"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("encoder_stride", None)
        super().__init__(*args, **kwargs)

    def _set_encoder_stride(self, encoder_stride: int | None) -> None:
        if encoder_stride is not None:  # an extra key from another file: keep it
            self.encoder_stride = encoder_stride


class ResNetConfig(BackboneConfigMixin, BaseConfig):
    """The HF ResNet config (model_type ``"resnet"``), used by the maskformer-resnet checkpoints."""

    model_type = "resnet"
    layer_types: ClassVar[list[str]] = ["basic", "bottleneck"]

    def __init__(
        self,
        num_channels: int = 3,
        embedding_size: int = 64,
        hidden_sizes: list[int] = (256, 512, 1024, 2048),
        depths: list[int] = (3, 4, 6, 3),
        layer_type: str = "bottleneck",
        hidden_act: str = "relu",
        downsample_in_first_stage: bool = False,
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("stage_names", None)
        super().__init__(**kwargs)
        if layer_type not in self.layer_types:
            raise ValueError(f"layer_type={layer_type!r} is not one of {self.layer_types}")
        if len(hidden_sizes) != len(depths):
            raise ValueError(
                f"hidden_sizes ({len(hidden_sizes)} entries) and depths ({len(depths)}) must have "
                "the same length"
            )
        self.num_channels = num_channels
        self.embedding_size = embedding_size
        self.hidden_sizes = list(hidden_sizes)
        self.depths = list(depths)
        self.layer_type = layer_type
        self.hidden_act = hidden_act
        self.downsample_in_first_stage = downsample_in_first_stage
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]
        self._set_outputs(out_features, out_indices)


class DetrConfig(BaseConfig):
    """The DETR config; MaskFormer uses its decoder fields (``d_model``, ``decoder_layers``, ...)."""

    model_type = "detr"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "encoder_attention_heads"}

    def __init__(
        self,
        use_timm_backbone: bool = True,
        backbone_config: Any = None,
        num_channels: int = 3,
        num_queries: int = 100,
        encoder_layers: int = 6,
        encoder_ffn_dim: int = 2048,
        encoder_attention_heads: int = 8,
        decoder_layers: int = 6,
        decoder_ffn_dim: int = 2048,
        decoder_attention_heads: int = 8,
        encoder_layerdrop: float = 0.0,
        decoder_layerdrop: float = 0.0,
        is_encoder_decoder: bool = True,
        activation_function: str = "relu",
        d_model: int = 256,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        init_std: float = 0.02,
        init_xavier_std: float = 1.0,
        auxiliary_loss: bool = False,
        position_embedding_type: str = "sine",
        backbone: str = "resnet50",
        use_pretrained_backbone: bool = True,
        dilation: bool = False,
        class_cost: float = 1,
        bbox_cost: float = 5,
        giou_cost: float = 2,
        mask_loss_coefficient: float = 1,
        dice_loss_coefficient: float = 1,
        bbox_loss_coefficient: float = 5,
        giou_loss_coefficient: float = 2,
        eos_coefficient: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if backbone_config is not None and use_timm_backbone:
            raise ValueError("You can't specify both `backbone_config` and `use_timm_backbone`.")
        num_hidden_layers = kwargs.pop("num_hidden_layers", encoder_layers)
        self.use_timm_backbone = use_timm_backbone
        self.backbone_config = copy.deepcopy(backbone_config)
        self.num_channels = num_channels
        self.num_queries = num_queries
        self.d_model = d_model
        self.encoder_ffn_dim = encoder_ffn_dim
        self.encoder_layers = encoder_layers
        self.encoder_attention_heads = encoder_attention_heads
        self.decoder_ffn_dim = decoder_ffn_dim
        self.decoder_layers = decoder_layers
        self.decoder_attention_heads = decoder_attention_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.activation_function = activation_function
        self.init_std = init_std
        self.init_xavier_std = init_xavier_std
        self.encoder_layerdrop = encoder_layerdrop
        self.decoder_layerdrop = decoder_layerdrop
        self.num_hidden_layers = num_hidden_layers
        self.auxiliary_loss = auxiliary_loss
        self.position_embedding_type = position_embedding_type
        self.backbone = backbone
        self.use_pretrained_backbone = use_pretrained_backbone
        self.dilation = dilation
        self.class_cost = class_cost
        self.bbox_cost = bbox_cost
        self.giou_cost = giou_cost
        self.mask_loss_coefficient = mask_loss_coefficient
        self.dice_loss_coefficient = dice_loss_coefficient
        self.bbox_loss_coefficient = bbox_loss_coefficient
        self.giou_loss_coefficient = giou_loss_coefficient
        self.eos_coefficient = eos_coefficient
        super().__init__(is_encoder_decoder=is_encoder_decoder, **kwargs)


# ---------------------------------------------------------------------- MaskFormer config

BACKBONE_CONFIG_CLASSES: dict[str, type[BaseConfig]] = {
    "swin": SwinConfig,
    "maskformer-swin": MaskFormerSwinConfig,
    "resnet": ResNetConfig,
    "timm": TimmBackboneConfig,
}
DECODER_CONFIG_CLASSES: dict[str, type[BaseConfig]] = {"detr": DetrConfig}


def _sub_config(
    value: Any, classes: dict[str, type[BaseConfig]], argument: str, kind: str
) -> BaseConfig:
    """A nested config object from a dict (not modified) or an object, checking its type."""
    if not isinstance(value, (BaseConfig, dict)) and callable(getattr(value, "to_dict", None)):
        # another library's config object (e.g. transformers' SwinConfig / DetrConfig): its dict
        foreign_type = getattr(value, "model_type", None)
        value = dict(value.to_dict())
        value.setdefault("model_type", foreign_type)
    if isinstance(value, BaseConfig):
        model_type = type(value).model_type
    elif isinstance(value, dict):
        if "model_type" not in value:
            raise ValueError(
                f"{argument} dict has no 'model_type' key; it must name one of {sorted(classes)}"
            )
        model_type = value["model_type"]
    else:
        raise TypeError(f"{argument} must be a dict or a config object, got {type(value).__name__}")
    if model_type not in classes:
        raise ValueError(f"{kind} {model_type!r} is not supported; use one of {sorted(classes)}")
    if isinstance(value, BaseConfig):
        return value
    fields = {k: v for k, v in value.items() if k != "model_type"}
    return classes[model_type].from_dict(fields)


def _default_backbone_config() -> SwinConfig:
    """Swin-B, window 12, pretrained at 384 (the ADE20K MaskFormer backbone)."""
    return SwinConfig(
        image_size=384,
        in_channels=3,
        patch_size=4,
        embed_dim=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=12,
        drop_path_rate=0.3,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


class MaskFormerConfig(BaseConfig):
    """Configuration of `MaskFormerModel` / `MaskFormerForInstanceSegmentation`.

    The defaults describe ``facebook/maskformer-swin-base-ade`` (Swin-B backbone, DETR decoder
    with 100 queries, 256-wide FPN and mask features). ``config.hidden_size`` is an alias of
    ``mask_feature_size``; ``num_attention_heads`` / ``num_hidden_layers`` mirror the DETR
    *encoder* settings, like the reference.
    """

    model_type = "maskformer"
    attribute_map = {"hidden_size": "mask_feature_size"}
    backbones_supported: ClassVar[list[str]] = ["resnet", "swin"]
    decoders_supported: ClassVar[list[str]] = ["detr"]

    def __init__(
        self,
        fpn_feature_size: int = 256,
        mask_feature_size: int = 256,
        no_object_weight: float = 0.1,
        use_auxiliary_loss: bool = False,
        backbone_config: dict | BaseConfig | None = None,
        decoder_config: dict | BaseConfig | None = None,
        init_std: float = 0.02,
        init_xavier_std: float = 1.0,
        dice_weight: float = 1.0,
        cross_entropy_weight: float = 1.0,
        mask_weight: float = 20.0,
        output_auxiliary_logits: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if backbone_config is None:
            backbone_config = _default_backbone_config()
        else:
            backbone_config = _sub_config(
                backbone_config, BACKBONE_CONFIG_CLASSES, "backbone_config", "backbone"
            )
        if decoder_config is None:
            decoder_config = DetrConfig()
        else:
            decoder_config = _sub_config(
                decoder_config, DECODER_CONFIG_CLASSES, "decoder_config", "Transformer decoder"
            )
        self.backbone_config = backbone_config
        self.decoder_config = decoder_config
        self.fpn_feature_size = fpn_feature_size
        self.mask_feature_size = mask_feature_size
        self.init_std = init_std
        self.init_xavier_std = init_xavier_std
        self.cross_entropy_weight = cross_entropy_weight
        self.dice_weight = dice_weight
        self.mask_weight = mask_weight
        self.use_auxiliary_loss = use_auxiliary_loss
        self.no_object_weight = no_object_weight
        self.output_auxiliary_logits = output_auxiliary_logits
        self.num_attention_heads = decoder_config.encoder_attention_heads
        self.num_hidden_layers = decoder_config.num_hidden_layers
        super().__init__(**kwargs)

    @classmethod
    def from_backbone_and_decoder_configs(
        cls, backbone_config: BaseConfig, decoder_config: BaseConfig, **kwargs: Any
    ) -> MaskFormerConfig:
        """A config from a backbone config object and a DETR config object."""
        return cls(backbone_config=backbone_config, decoder_config=decoder_config, **kwargs)
