"""Output containers of the MaskFormer modules.

Each is a dataclass that also behaves like the reference's ``ModelOutput``: attribute access,
string keys (only for fields that are set), integer indexing and slicing over the set fields in
declaration order, and ``to_tuple()`` which drops the fields that are ``None``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree

Tensor = torch.Tensor


def _flatten_output(output: Any) -> tuple[list[Any], list[str]]:
    names = [field.name for field in dataclasses.fields(output)]
    return [getattr(output, name) for name in names], names


def _unflatten_output(cls: type, values: Any, names: list[str]) -> Any:
    return cls(**dict(zip(names, values)))


class ModelOutput:
    """Dict-and-tuple behaviour shared by the output dataclasses (subclasses are dataclasses).

    Each subclass is registered as a pytree node, so ``torch.export`` and ``torch.compile`` see
    through it to its tensors.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register = getattr(pytree, "register_pytree_node", None) or pytree._register_pytree_node
        register(
            cls,
            _flatten_output,
            functools.partial(_unflatten_output, cls),
            serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        )

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, name) for name in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        """The set fields in declaration order (``None`` fields are left out)."""
        return tuple(self.values())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.items())

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass(eq=False)
class BackboneOutput(ModelOutput):
    """Backbone features: ``feature_maps`` is one ``(batch, channels_i, height_i, width_i)`` map per
    requested stage. ``hidden_states`` (when asked): for ResNet the stem and stage maps; for Swin
    the reference's layout (see :class:`MaskFormerSwinModelOutputWithPooling`). ``attentions``
    (Swin, when asked): one ``(batch*windows, heads, N, N)`` probability map per block."""

    feature_maps: tuple[Tensor, ...] | None = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


MaskFormerSwinBackboneOutput = BackboneOutput


@dataclass(eq=False)
class MaskFormerSwinBaseModelOutput(ModelOutput):
    """The Swin encoder's outputs: ``last_hidden_state`` ``(batch, h*w, C)`` tokens of the last
    stage; ``hidden_states`` as in :class:`MaskFormerSwinModelOutputWithPooling`;
    ``hidden_states_spatial_dimensions`` the ``(h, w)`` of the embeddings and after each stage."""

    last_hidden_state: Tensor | None = None
    hidden_states: tuple[Any, ...] | None = None
    hidden_states_spatial_dimensions: tuple[tuple[int, int], ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass(eq=False)
class MaskFormerSwinModelOutputWithPooling(ModelOutput):
    """Outputs of `MaskFormerSwinModel`.

    - ``last_hidden_state``: ``(batch, h*w, C_last)``, the last stage's tokens after ``layernorm``.
    - ``pooler_output``: ``(batch, C_last)``, their mean (None without a pooling layer).
    - ``hidden_states`` (when asked): the embeddings ``(batch, h*w, C)``, then per stage a tuple
      holding each block's input and output, ``(batch, h_i*w_i, C_i)`` tokens, as the reference.
    - ``hidden_states_spatial_dimensions``: ``(h, w)`` of the embeddings, then after each stage
      (after its patch merging).
    - ``attentions`` (when asked): one ``(batch*windows, heads, N, N)`` map per block.
    """

    last_hidden_state: Tensor | None = None
    pooler_output: Tensor | None = None
    hidden_states: tuple[Any, ...] | None = None
    hidden_states_spatial_dimensions: tuple[tuple[int, int], ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass(eq=False)
class MaskFormerPixelDecoderOutput(ModelOutput):
    """``last_hidden_state``: mask features ``(batch, mask_feature_size, height/4, width/4)``;
    ``hidden_states``: FPN outputs at strides 16, 8, 4 ``(batch, fpn_feature_size, h, w)``."""

    last_hidden_state: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass(eq=False)
class MaskFormerPixelLevelModuleOutput(ModelOutput):
    """Backbone last map, pixel decoder last map, and (optionally) both sets of hidden states."""

    encoder_last_hidden_state: Tensor | None = None
    decoder_last_hidden_state: Tensor | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    decoder_hidden_states: tuple[Tensor, ...] | None = None


@dataclass(eq=False)
class DetrDecoderOutput(ModelOutput):
    """``last_hidden_state`` ``(batch, queries, d_model)``; ``hidden_states`` has ``layers + 1``
    entries; ``attentions`` one ``(batch, heads, queries, queries)`` self-attention map per layer;
    ``cross_attentions`` is never filled (MaskFormer does not read it); ``intermediate_hidden_states``
    ``(layers, batch, queries, d_model)`` when ``decoder_config.auxiliary_loss`` is set."""

    last_hidden_state: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None
    intermediate_hidden_states: Tensor | None = None


@dataclass(eq=False)
class MaskFormerModelOutput(ModelOutput):
    """Outputs of `MaskFormerModel`.

    - ``encoder_last_hidden_state``: ``(batch, channels, height/32, width/32)`` last backbone map.
    - ``pixel_decoder_last_hidden_state``: ``(batch, mask_feature_size, height/4, width/4)``.
    - ``transformer_decoder_last_hidden_state``: ``(batch, queries, d_model)``.
    - ``encoder_hidden_states`` (4 maps), ``pixel_decoder_hidden_states`` (3 FPN maps),
      ``transformer_decoder_hidden_states`` (layers + 1), ``hidden_states`` (all of them),
      ``attentions``: per decoder layer ``(batch, heads, queries, queries)`` self-attention.
    """

    encoder_last_hidden_state: Tensor | None = None
    pixel_decoder_last_hidden_state: Tensor | None = None
    transformer_decoder_last_hidden_state: Tensor | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[Tensor, ...] | None = None
    transformer_decoder_hidden_states: tuple[Tensor, ...] | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass(eq=False)
class MaskFormerForInstanceSegmentationOutput(ModelOutput):
    """Outputs of `MaskFormerForInstanceSegmentation`.

    - ``loss``: scalar, when labels were given.
    - ``class_queries_logits``: ``(batch, queries, num_labels + 1)``; the last class is "no object".
    - ``masks_queries_logits``: ``(batch, queries, height/4, width/4)``.
    - ``auxiliary_logits``: list of dicts ``{"class_queries_logits", "masks_queries_logits"}``, one
      per intermediate decoder layer, when requested.
    - then the fields of `MaskFormerModelOutput`.
    """

    loss: Tensor | None = None
    class_queries_logits: Tensor | None = None
    masks_queries_logits: Tensor | None = None
    auxiliary_logits: list[dict[str, Tensor]] | None = None
    encoder_last_hidden_state: Tensor | None = None
    pixel_decoder_last_hidden_state: Tensor | None = None
    transformer_decoder_last_hidden_state: Tensor | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[Tensor, ...] | None = None
    transformer_decoder_hidden_states: tuple[Tensor, ...] | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
