"""MaskFormer: backbone + pixel decoder + transformer decoder, and the segmentation head.

`MaskFormerModel` returns the image features and query embeddings; `MaskFormerForInstanceSegmentation`
adds the class head, the mask embedder and the loss. Parameter names follow the Hugging Face
checkpoint layout, so reference checkpoints load unchanged.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import Tensor, nn

from maskformer.configuration import (
    MaskFormerConfig,
    MaskFormerSwinConfig,
    ResNetConfig,
    SwinConfig,
)
from maskformer.modeling.criterion import MaskFormerLoss
from maskformer.modeling.initialization import init_enabled
from maskformer.modeling.matcher import MaskFormerHungarianMatcher
from maskformer.modeling.model_utils import PreTrainedMethodsMixin
from maskformer.modeling.outputs import (
    MaskFormerForInstanceSegmentationOutput,
    MaskFormerModelOutput,
    MaskFormerPixelLevelModuleOutput,
)
from maskformer.modeling.pixel_decoder import (
    MaskFormerFPNConvLayer,
    MaskFormerFPNLayer,
    MaskFormerPixelDecoder,
)
from maskformer.modeling.resnet import ResNetBackbone
from maskformer.modeling.swin_backbone import MaskFormerSwinBackbone
from maskformer.modeling.transformer_decoder import MaskFormerTransformerModule
from maskformer.utils.hub import PushToHubMixin

ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]
PIXEL_VALUES_SHAPE = "(batch_size, num_channels, height, width)"
# Parameters without weight decay: those of normalisation layers and embeddings, and these names.
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)
NO_DECAY_PARAMETER_NAMES = ("relative_position_bias_table", "position_embeddings")


# ---------------------------------------------------------------------- input checks


def check_pixel_values(pixel_values: Any, num_channels: int) -> None:
    """Raise a clear error unless ``pixel_values`` is a non-empty float ``(B, C, H, W)`` tensor."""
    if pixel_values is None:
        raise ValueError(
            f"You have to specify pixel_values, a float tensor of shape {PIXEL_VALUES_SHAPE}"
        )
    if not isinstance(pixel_values, Tensor):
        raise TypeError(
            f"pixel_values must be a torch.Tensor of shape {PIXEL_VALUES_SHAPE}, got "
            f"{type(pixel_values).__name__}"
        )
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be a floating point tensor, got dtype {pixel_values.dtype} "
            f"(normalise images to float first); expected shape {PIXEL_VALUES_SHAPE}"
        )
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must have shape {PIXEL_VALUES_SHAPE}, got a {pixel_values.ndim}-D tensor "
            f"of shape {tuple(pixel_values.shape)}"
        )
    if pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values has {pixel_values.shape[1]} channels but the configuration expects "
            f"num_channels={num_channels}; expected shape {PIXEL_VALUES_SHAPE}, got "
            f"{tuple(pixel_values.shape)}"
        )
    if pixel_values.numel() == 0:
        raise ValueError(
            f"pixel_values is empty (shape {tuple(pixel_values.shape)}); expected shape "
            f"{PIXEL_VALUES_SHAPE} with every dimension > 0"
        )


def check_labels(mask_labels: Any, class_labels: Any, batch_size: int) -> None:
    """Both label lists hold one tensor per image, with matching target counts."""
    for name, labels in (("mask_labels", mask_labels), ("class_labels", class_labels)):
        if not isinstance(labels, (list, tuple)):
            raise TypeError(
                f"{name} must be a list of tensors (one per image), got {type(labels).__name__}"
            )
        if len(labels) != batch_size:
            raise ValueError(
                f"{name} must hold one tensor per image: batch size is {batch_size}, got {len(labels)}"
            )
        for index, item in enumerate(labels):
            if not isinstance(item, Tensor):
                raise TypeError(
                    f"{name}[{index}] must be a torch.Tensor, got {type(item).__name__}"
                )
    for index, (masks, classes) in enumerate(zip(mask_labels, class_labels)):
        if masks.ndim != 3:
            raise ValueError(
                f"mask_labels[{index}] must have shape (num_targets, height, width), got "
                f"{tuple(masks.shape)}"
            )
        if classes.ndim != 1:
            raise ValueError(
                f"class_labels[{index}] must have shape (num_targets,), got {tuple(classes.shape)}"
            )
        if masks.shape[0] != classes.shape[0]:
            raise ValueError(
                f"mask_labels[{index}] has {masks.shape[0]} masks but class_labels[{index}] has "
                f"{classes.shape[0]} labels"
            )


# ---------------------------------------------------------------------- building blocks


def build_backbone(config: MaskFormerConfig) -> nn.Module:
    """The backbone named by ``config.backbone_config`` (Swin, ResNet or a timm model)."""
    backbone_config = config.backbone_config
    if backbone_config.model_type == "timm":
        from maskformer.modeling.timm_backbone import TimmBackbone

        return TimmBackbone(backbone_config)
    if type(backbone_config) is SwinConfig:
        values = backbone_config.to_dict()
        for key in ("model_type", "transformers_version", "out_features", "out_indices"):
            values.pop(key, None)
        swin_config = MaskFormerSwinConfig.from_dict(values)
        swin_config.out_features = list(ALL_STAGES)  # the reference forces all four stages
        return MaskFormerSwinBackbone(swin_config)
    if len(backbone_config.out_features) < 2:
        raise ValueError(
            f"backbone_config.out_features={backbone_config.out_features} must name at least two "
            f"stages for the pixel decoder (usually {ALL_STAGES})"
        )
    if isinstance(backbone_config, MaskFormerSwinConfig):
        return MaskFormerSwinBackbone(backbone_config)
    if isinstance(backbone_config, ResNetConfig):
        return ResNetBackbone(backbone_config)
    raise ValueError(
        f"backbone {backbone_config.model_type!r} is not supported; use one of "
        "['maskformer-swin', 'resnet', 'swin', 'timm']"
    )


class MaskFormerPixelLevelModule(nn.Module):
    """Backbone (``encoder``) and FPN pixel decoder (``decoder``)."""

    def __init__(self, config: MaskFormerConfig) -> None:
        super().__init__()
        self.encoder = build_backbone(config)
        channels = self.encoder.channels
        self.decoder = MaskFormerPixelDecoder(
            in_features=channels[-1],
            lateral_widths=channels[:-1],
            feature_size=config.fpn_feature_size,
            mask_feature_size=config.mask_feature_size,
        )

    def forward(
        self, pixel_values: Tensor, output_hidden_states: bool = False
    ) -> MaskFormerPixelLevelModuleOutput:
        """``pixel_values`` ``(batch, channels, height, width)`` -> the last backbone map
        ``(batch, C, height/32, width/32)`` and the mask features
        ``(batch, mask_feature_size, height/4, width/4)`` (plus hidden states when asked)."""
        features = self.encoder(
            pixel_values, output_hidden_states=False, output_attentions=False, return_dict=True
        ).feature_maps
        decoded = self.decoder(list(features), output_hidden_states=output_hidden_states)
        return MaskFormerPixelLevelModuleOutput(
            encoder_last_hidden_state=features[-1],
            decoder_last_hidden_state=decoded.last_hidden_state,
            encoder_hidden_states=tuple(features) if output_hidden_states else (),
            decoder_hidden_states=decoded.hidden_states,
        )


class MaskformerMLPPredictionHead(nn.Sequential):
    """``num_layers`` Linear layers with ReLU between them; children ``{i}.0`` are the Linears."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 3
    ) -> None:
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        super().__init__(
            *(
                nn.Sequential(
                    nn.Linear(d_in, d_out), nn.ReLU() if index < num_layers - 1 else nn.Identity()
                )
                for index, (d_in, d_out) in enumerate(zip(dims_in, dims_out))
            )
        )


# ---------------------------------------------------------------------- pretrained base


def is_no_decay_module(module: nn.Module) -> bool:
    """Normalisation layers (by type, or a class name ending in Norm / Norm2d) and embeddings."""
    return isinstance(module, (*NORM_TYPES, nn.Embedding)) or type(module).__name__.endswith(
        ("Norm", "Norm2d")
    )


class MaskFormerPreTrainedModel(PreTrainedMethodsMixin, PushToHubMixin, nn.Module):
    """Shared init, config handling, checkpoint I/O and the reference model methods."""

    config_class = MaskFormerConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: MaskFormerConfig) -> None:
        super().__init__()
        if not isinstance(config, MaskFormerConfig):
            raise TypeError(f"config must be a MaskFormerConfig, got {type(config).__name__}")
        self.config = config

    def post_init(self) -> None:
        """Initialise every module not yet initialised (children before parents, so a parent's
        rule, such as xavier for the FPN convolutions, overrides the generic one).

        A config saved with the old ``gradient_checkpointing=True`` attribute turns checkpointing
        on and loses the attribute, as the reference does."""
        if self.supports_gradient_checkpointing and getattr(
            self.config, "gradient_checkpointing", False
        ):
            self.gradient_checkpointing_enable()
            delattr(self.config, "gradient_checkpointing")
        if not init_enabled():
            return
        for module in reversed(list(self.modules())):
            if not getattr(module, "_maskformer_initialized", False):
                self._init_weights(module)
                module._maskformer_initialized = True

    def init_weights(self) -> None:
        """Initialise the modules not initialised yet (none, once built), then tie weights."""
        if init_enabled():
            self.post_init()
            self.tie_weights()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        gain = self.config.init_xavier_std
        if isinstance(module, MaskFormerTransformerModule):
            if module.input_projection is not None:
                nn.init.xavier_uniform_(module.input_projection.weight, gain=gain)
                nn.init.zeros_(module.input_projection.bias)
        elif isinstance(module, MaskFormerFPNConvLayer):
            nn.init.xavier_uniform_(module[0].weight, gain=gain)
        elif isinstance(module, MaskFormerFPNLayer):
            nn.init.xavier_uniform_(module.proj[0].weight, gain=gain)
        elif isinstance(module, MaskformerMLPPredictionHead):
            for block in module:
                nn.init.xavier_uniform_(block[0].weight, gain=gain)
                nn.init.zeros_(block[0].bias)
        elif isinstance(module, (nn.Linear, nn.Conv2d, nn.BatchNorm2d)):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()

    # -- optimiser grouping --
    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters trained without weight decay: weights and biases of
        normalisation layers, embeddings (the query embeddings), Swin's relative-position bias
        tables and absolute position embeddings. Other biases keep weight decay."""
        names = set()
        for module_name, module in self.named_modules():
            no_decay_module = is_no_decay_module(module)
            for name, _ in module.named_parameters(recurse=False):
                if no_decay_module or name.endswith(NO_DECAY_PARAMETER_NAMES):
                    names.add(f"{module_name}.{name}" if module_name else name)
        return names

    def backbone_parameter_names(self) -> set[str]:
        """Full names of the backbone's parameters (under ``pixel_level_module.encoder``)."""
        backbone = self.base_model.pixel_level_module.encoder
        ids = {id(parameter) for parameter in backbone.parameters()}
        return {name for name, parameter in self.named_parameters() if id(parameter) in ids}

    def _output_flags(
        self,
        output_hidden_states: bool | None,
        output_attentions: bool | None,
        return_dict: bool | None,
    ) -> tuple[bool, bool, bool]:
        """The forward flags, each taken from the config where the caller passed ``None``."""
        config = self.config
        if output_hidden_states is None:
            output_hidden_states = config.output_hidden_states
        if output_attentions is None:
            output_attentions = config.output_attentions
        if return_dict is None:
            return_dict = config.use_return_dict
        return bool(output_hidden_states), bool(output_attentions), bool(return_dict)

    # -- checkpoints (implemented in maskformer.checkpoint) --
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: MaskFormerConfig | None = None,
        **kwargs: Any,
    ) -> MaskFormerPreTrainedModel:
        """Load a model from a local directory (or hub id) in the Hugging Face layout.

        Accepts ``num_labels``, ``id2label``, ``label2id``, ``ignore_mismatched_sizes``,
        ``torch_dtype`` (a dtype or ``"auto"``) and other config overrides as keywords.
        """
        from maskformer.checkpoint import load_pretrained

        return load_pretrained(cls, pretrained_model_name_or_path, config=config, **kwargs)

    def save_pretrained(
        self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs: Any
    ) -> None:
        """Write ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``) atomically."""
        from maskformer.checkpoint import save_pretrained

        save_pretrained(self, save_directory, safe_serialization=safe_serialization, **kwargs)


# ---------------------------------------------------------------------- the models


class MaskFormerModel(MaskFormerPreTrainedModel):
    """Backbone, pixel decoder and transformer decoder (no heads)."""

    def __init__(self, config: MaskFormerConfig) -> None:
        super().__init__(config)
        self.pixel_level_module = MaskFormerPixelLevelModule(config)
        self.transformer_module = MaskFormerTransformerModule(
            in_features=self.pixel_level_module.encoder.channels[-1], config=config.decoder_config
        )
        self.post_init()

    def _run(
        self,
        pixel_values: Tensor,
        output_hidden_states: bool,
        output_attentions: bool,
        output_auxiliary_states: bool = False,
    ) -> tuple[MaskFormerModelOutput, list[Tensor]]:
        check_pixel_values(pixel_values, self.config.backbone_config.num_channels)
        parameter_dtype = self.queries_dtype
        if pixel_values.dtype != parameter_dtype:
            pixel_values = pixel_values.to(parameter_dtype)
        pixel_level = self.pixel_level_module(pixel_values, output_hidden_states)
        decoder_output, auxiliary_states = self.transformer_module(
            pixel_level.encoder_last_hidden_state,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            output_auxiliary_states=output_auxiliary_states,
        )
        encoder_hidden = pixel_decoder_hidden = decoder_hidden = hidden_states = None
        if output_hidden_states:
            encoder_hidden = pixel_level.encoder_hidden_states
            pixel_decoder_hidden = pixel_level.decoder_hidden_states
            decoder_hidden = decoder_output.hidden_states
            hidden_states = encoder_hidden + pixel_decoder_hidden + decoder_hidden
        output = MaskFormerModelOutput(
            encoder_last_hidden_state=pixel_level.encoder_last_hidden_state,
            pixel_decoder_last_hidden_state=pixel_level.decoder_last_hidden_state,
            transformer_decoder_last_hidden_state=decoder_output.last_hidden_state,
            encoder_hidden_states=encoder_hidden,
            pixel_decoder_hidden_states=pixel_decoder_hidden,
            transformer_decoder_hidden_states=decoder_hidden,
            hidden_states=hidden_states,
            attentions=decoder_output.attentions,
        )
        return output, auxiliary_states

    @property
    def queries_dtype(self) -> torch.dtype:
        return self.transformer_module.queries_embedder.weight.dtype

    def forward(
        self,
        pixel_values: Tensor,
        pixel_mask: Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskFormerModelOutput | tuple[Tensor, ...]:
        """``pixel_values`` ``(batch, channels, height, width)``; ``pixel_mask`` is accepted and
        ignored, like the reference."""
        output_hidden_states, output_attentions, return_dict = self._output_flags(
            output_hidden_states, output_attentions, return_dict
        )
        output, _ = self._run(pixel_values, output_hidden_states, output_attentions)
        return output if return_dict else output.to_tuple()


class MaskFormerForInstanceSegmentation(MaskFormerPreTrainedModel):
    """MaskFormer with the class head, the mask embedder and the Hungarian-matched loss."""

    def __init__(self, config: MaskFormerConfig) -> None:
        super().__init__(config)
        self.model = MaskFormerModel(config)
        hidden_size = config.decoder_config.d_model
        self.class_predictor = nn.Linear(hidden_size, config.num_labels + 1)
        self.mask_embedder = MaskformerMLPPredictionHead(
            hidden_size, hidden_size, config.mask_feature_size
        )
        self.matcher = MaskFormerHungarianMatcher(
            cost_class=1.0, cost_mask=config.mask_weight, cost_dice=config.dice_weight
        )
        self.weight_dict: dict[str, float] = {
            "loss_cross_entropy": config.cross_entropy_weight,
            "loss_mask": config.mask_weight,
            "loss_dice": config.dice_weight,
        }
        self.criterion = MaskFormerLoss(
            num_labels=config.num_labels,
            matcher=self.matcher,
            weight_dict=self.weight_dict,
            eos_coef=config.no_object_weight,
        )
        self.post_init()

    # -- loss --
    def get_loss_dict(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        mask_labels: list[Tensor],
        class_labels: list[Tensor],
        auxiliary_predictions: list[dict[str, Tensor]] | None,
    ) -> dict[str, Tensor]:
        """The loss terms, each multiplied by its weight (``loss_mask*`` by ``mask_weight``, etc.)."""
        losses = self.criterion(
            masks_queries_logits,
            class_queries_logits,
            mask_labels,
            class_labels,
            auxiliary_predictions,
        )
        weighted = {}
        for key, value in losses.items():
            base = re.sub(r"_\d+$", "", key)
            weight = self.weight_dict.get(base)
            weighted[key] = value * weight if weight is not None else value
        return weighted

    def get_loss(self, loss_dict: dict[str, Tensor]) -> Tensor:
        """The sum of the (weighted) loss terms, a scalar."""
        return sum(loss_dict.values()).reshape(())

    # -- logits --
    def mask_logits(self, queries: Tensor, pixel_embeddings: Tensor) -> Tensor:
        """``queries`` ``(..., batch, Q, d)``, ``pixel_embeddings`` ``(batch, M, h, w)`` ->
        ``(..., batch, Q, h, w)``: the dot product of each query's mask embedding with each pixel."""
        mask_embeddings = self.mask_embedder(queries)
        batch, channels, height, width = pixel_embeddings.shape
        leading, num_queries = mask_embeddings.shape[:-3], mask_embeddings.shape[-2]
        per_image = mask_embeddings.reshape(-1, batch, num_queries, channels).transpose(0, 1)
        per_image = per_image.reshape(batch, -1, channels)  # (batch, L*Q, d); L = 1 usually
        pixels = pixel_embeddings.flatten(2)  # (batch, d, h*w)
        if pixels.stride(1) == 1:  # channels-last (how the FPN leaves it at inference)
            # (h*w, d) @ (d, L*Q) with both operands as stored, then one copy of the (smaller)
            # logits, instead of the copy of the whole map that einsum or bmm would make.
            logits = torch.bmm(pixels.transpose(1, 2), per_image.transpose(1, 2)).transpose(1, 2)
        else:
            logits = torch.bmm(per_image, pixels)
        logits = logits.reshape(batch, -1, num_queries, height, width).transpose(0, 1)
        return logits.reshape(leading + (batch, num_queries, height, width)).contiguous()

    def forward(
        self,
        pixel_values: Tensor,
        mask_labels: list[Tensor] | None = None,
        class_labels: list[Tensor] | None = None,
        pixel_mask: Tensor | None = None,
        output_auxiliary_logits: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskFormerForInstanceSegmentationOutput | tuple[Any, ...]:
        """``pixel_values`` ``(batch, channels, height, width)``; optional ``mask_labels`` (list of
        ``(n_i, H, W)`` float, 1 = in, 0 = out, other = ignored) and ``class_labels`` (list of
        ``(n_i,)`` int64). ``pixel_mask`` is accepted and ignored, like the reference."""
        config = self.config
        output_hidden_states, output_attentions, return_dict = self._output_flags(
            output_hidden_states, output_attentions, return_dict
        )
        if output_auxiliary_logits is None:
            output_auxiliary_logits = config.output_auxiliary_logits
        # A stacked tensor is accepted as the list of its entries (the reference iterates it too).
        if isinstance(mask_labels, Tensor):
            mask_labels = list(mask_labels)
        if isinstance(class_labels, Tensor):
            class_labels = list(class_labels)
        with_labels = mask_labels is not None and class_labels is not None
        if (mask_labels is None) != (class_labels is None):
            missing = "class_labels" if class_labels is None else "mask_labels"
            raise ValueError(f"mask_labels and class_labels go together: {missing} is missing")
        if with_labels and isinstance(pixel_values, Tensor) and pixel_values.ndim == 4:
            check_labels(mask_labels, class_labels, pixel_values.shape[0])

        use_auxiliary = bool(config.use_auxiliary_loss)
        outputs, auxiliary_states = self.model._run(
            pixel_values,
            output_hidden_states,
            output_attentions,
            output_auxiliary_states=use_auxiliary,
        )
        queries = outputs.transformer_decoder_last_hidden_state
        pixel_embeddings = outputs.pixel_decoder_last_hidden_state
        class_queries_logits = self.class_predictor(queries)
        masks_queries_logits = self.mask_logits(queries, pixel_embeddings)

        auxiliary_logits: list[dict[str, Tensor]] = []
        if auxiliary_states:
            stacked = torch.stack(auxiliary_states)  # (L-1, batch, Q, d)
            auxiliary_classes = self.class_predictor(stacked)
            auxiliary_masks = self.mask_logits(stacked, pixel_embeddings)
            auxiliary_logits = [
                {"masks_queries_logits": masks, "class_queries_logits": classes}
                for masks, classes in zip(auxiliary_masks.unbind(0), auxiliary_classes.unbind(0))
            ]

        loss = None
        if with_labels:
            loss_dict = self.get_loss_dict(
                masks_queries_logits,
                class_queries_logits,
                mask_labels,
                class_labels,
                auxiliary_logits,
            )
            loss = self.get_loss(loss_dict)

        result = MaskFormerForInstanceSegmentationOutput(
            loss=loss,
            class_queries_logits=class_queries_logits,
            masks_queries_logits=masks_queries_logits,
            auxiliary_logits=auxiliary_logits if output_auxiliary_logits else None,
            **outputs.to_dict(),
        )
        return result if return_dict else result.to_tuple()
