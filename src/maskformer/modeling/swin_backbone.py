"""`MaskFormerSwinModel` and `MaskFormerSwinBackbone`: the reference's Swin classes and outputs.

The backbone gives MaskFormer the four stage outputs (before patch merging) through per-stage
LayerNorms as ``(batch, C_i, H_i, W_i)`` maps. Both classes take the reference's forward
arguments and return its output classes; ``hidden_states`` keep the reference's layout (the
embeddings, then per stage each block's input and output as ``(batch, h*w, C)`` tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from maskformer.configuration import MaskFormerSwinConfig, SwinConfig
from maskformer.modeling.initialization import init_enabled
from maskformer.modeling.model_utils import PreTrainedMethodsMixin
from maskformer.modeling.outputs import (
    BackboneOutput,
    MaskFormerSwinBaseModelOutput,
    MaskFormerSwinModelOutputWithPooling,
)
from maskformer.modeling.swin import (
    MaskFormerSwinEmbeddings,
    MaskFormerSwinEncoder,
    MaskFormerSwinPatchEmbeddings,
    StageOutput,
)


def _flag(value: bool | None, default: Any) -> bool:
    return bool(default if value is None else value)


def _check_head_mask(head_mask: Any) -> None:
    if head_mask is not None:
        raise ValueError(
            "head_mask is not supported by the MaskFormer Swin (the stages have different head "
            "counts); pass head_mask=None"
        )


class MaskFormerSwinPreTrainedModel(PreTrainedMethodsMixin, nn.Module):
    """Config handling and the reference model methods shared by the Swin classes."""

    config_class = MaskFormerSwinConfig

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        if not isinstance(config, SwinConfig):
            raise TypeError(
                f"config must be a MaskFormerSwinConfig or SwinConfig, got {type(config).__name__}"
            )
        self.config = config

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Linear/Conv2d: normal(0, initializer_range), bias 0; LayerNorm: 1, 0; absolute
        position embeddings 0."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif (
            isinstance(module, MaskFormerSwinEmbeddings) and module.position_embeddings is not None
        ):
            nn.init.zeros_(module.position_embeddings)

    def init_weights(self) -> None:
        """Initialise every module by :meth:`_init_weights` (skipped while loading weights)."""
        if not init_enabled():
            return
        for module in self.modules():
            self._init_weights(module)
            module._maskformer_initialized = True

    def post_init(self) -> None:
        self.init_weights()

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any
    ) -> Any:
        """Load a Swin model or backbone saved by :meth:`save_pretrained` (same keywords as
        the MaskFormer models' ``from_pretrained``)."""
        from maskformer.checkpoint import load_pretrained

        return load_pretrained(cls, pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> None:
        """Write ``config.json`` and the weights atomically."""
        from maskformer.checkpoint import save_pretrained

        save_pretrained(self, save_directory, **kwargs)


class MaskFormerSwinModel(MaskFormerSwinPreTrainedModel):
    """Embeddings and stages. ``layernorm`` (and the parameter-free pooler) only serve this class's
    own outputs; the backbone never applies them (nor does the reference use their output)."""

    def __init__(self, config: SwinConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = MaskFormerSwinEmbeddings(config)
        self.encoder = MaskFormerSwinEncoder(config)
        self.num_features = int(config.embed_dim * 2 ** (len(config.depths) - 1))
        self.layernorm = nn.LayerNorm(self.num_features, eps=config.layer_norm_eps)
        # Never used by the backbone: frozen so DistributedDataParallel sees no unused trainable
        # parameters.
        self.layernorm.requires_grad_(False)
        self.pooler = nn.AdaptiveAvgPool1d(1) if add_pooling_layer else None

    def get_input_embeddings(self) -> MaskFormerSwinPatchEmbeddings:
        return self.embeddings.patch_embeddings

    def stages(
        self,
        pixel_values: Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[Tensor, list[StageOutput]]:
        """``(batch, channels, height, width)`` -> the ``(batch, h, w, C)`` embeddings and one
        :class:`~maskformer.modeling.swin.StageOutput` per stage."""
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch_size, {self.config.num_channels}, height, "
                f"width), got {tuple(pixel_values.shape)}"
            )
        embeddings = self.embeddings(pixel_values)
        return embeddings, self.encoder(embeddings, output_attentions, output_hidden_states)

    def encoder_output(
        self,
        embeddings: Tensor,
        stage_outputs: list[StageOutput],
        output_attentions: bool,
        output_hidden_states: bool,
    ) -> MaskFormerSwinBaseModelOutput:
        """Packs :meth:`stages` results the way the reference's encoder returns them."""
        dimensions = [tuple(embeddings.shape[1:3])]
        dimensions += [tuple(output.merged.shape[1:3]) for output in stage_outputs]
        hidden_states = attentions = None
        if output_hidden_states:
            hidden_states = (embeddings.flatten(1, 2),)
            hidden_states += tuple(output.block_states for output in stage_outputs)
        if output_attentions:
            attentions = tuple(a for output in stage_outputs for a in output.attentions)
        return MaskFormerSwinBaseModelOutput(
            last_hidden_state=stage_outputs[-1].merged.flatten(1, 2),
            hidden_states=hidden_states,
            hidden_states_spatial_dimensions=tuple(dimensions),
            attentions=attentions,
        )

    def forward(
        self,
        pixel_values: Tensor | None = None,
        head_mask: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskFormerSwinModelOutputWithPooling | tuple[Any, ...]:
        """``pixel_values`` ``(batch, channels, height, width)`` -> the last stage's normed tokens
        ``(batch, h*w, C)``, their mean ``(batch, C)`` and, when asked, hidden states and
        attentions (see :class:`MaskFormerSwinModelOutputWithPooling`)."""
        config = self.config
        output_attentions = _flag(output_attentions, config.output_attentions)
        output_hidden_states = _flag(output_hidden_states, config.output_hidden_states)
        return_dict = _flag(return_dict, config.use_return_dict)
        _check_head_mask(head_mask)
        embeddings, stage_outputs = self.stages(
            pixel_values, output_attentions, output_hidden_states
        )
        encoded = self.encoder_output(
            embeddings, stage_outputs, output_attentions, output_hidden_states
        )
        sequence_output = self.layernorm(encoded.last_hidden_state)
        pooled = None
        if self.pooler is not None:
            pooled = torch.flatten(self.pooler(sequence_output.transpose(1, 2)), 1)
        if not return_dict:
            rest = tuple(v for v in (encoded.hidden_states, encoded.attentions) if v is not None)
            return (sequence_output, pooled) + rest
        return MaskFormerSwinModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled,
            hidden_states=encoded.hidden_states,
            hidden_states_spatial_dimensions=encoded.hidden_states_spatial_dimensions,
            attentions=encoded.attentions,
        )


class MaskFormerSwinBackbone(MaskFormerSwinPreTrainedModel):
    """Swin backbone returning the normed ``(batch, C_i, H_i, W_i)`` map of each requested stage."""

    def __init__(self, config: SwinConfig | MaskFormerSwinConfig) -> None:
        super().__init__(config)
        if "stem" in config.out_features:
            raise ValueError("This backbone does not support 'stem' in out_features")
        self.model = MaskFormerSwinModel(config)
        # channels per stage name, the stem first (the reference's layout of ``num_features``)
        self.num_features = [config.embed_dim] + [
            int(config.embed_dim * 2**i) for i in range(len(config.depths))
        ]
        self.channels = [self.num_features[i] for i in config.out_indices]
        self.hidden_states_norms = nn.ModuleList(nn.LayerNorm(dim) for dim in self.num_features[1:])
        self.init_weights()

    backbone_type = "transformers"  # the reference's BackboneType.TRANSFORMERS, as a string

    @property
    def out_feature_channels(self) -> dict[str, int]:
        """Channels of every stage by name (the stem included)."""
        return dict(zip(self.stage_names, self.num_features))

    @property
    def out_features(self) -> list[str]:
        return list(self.config.out_features)

    @property
    def out_indices(self) -> list[int]:
        return list(self.config.out_indices)

    @property
    def stage_names(self) -> list[str]:
        return list(self.config.stage_names)

    def forward(
        self,
        pixel_values: Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BackboneOutput | tuple[Any, ...]:
        """``pixel_values`` ``(batch, channels, height, width)`` -> ``feature_maps``, one
        ``(batch, C_i, H_i, W_i)`` map per stage in ``out_features``; with
        ``output_hidden_states`` the Swin model's hidden states, with ``output_attentions`` one
        attention map per block."""
        config = self.config
        output_attentions = _flag(output_attentions, config.output_attentions)
        output_hidden_states = _flag(output_hidden_states, config.output_hidden_states)
        return_dict = _flag(return_dict, config.use_return_dict)
        embeddings, stage_outputs = self.model.stages(
            pixel_values, output_attentions, output_hidden_states
        )
        maps = [
            norm(output.hidden_states).permute(0, 3, 1, 2)
            for norm, output in zip(self.hidden_states_norms, stage_outputs)
        ]
        feature_maps = tuple(maps[i - 1] for i in config.out_indices)
        encoded = None
        if output_hidden_states or output_attentions:
            encoded = self.model.encoder_output(
                embeddings, stage_outputs, output_attentions, output_hidden_states
            )
        hidden_states = encoded.hidden_states if output_hidden_states else None
        attentions = encoded.attentions if output_attentions else None
        if not return_dict:
            return (feature_maps,) + tuple(v for v in (hidden_states, attentions) if v is not None)
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=hidden_states, attentions=attentions
        )
