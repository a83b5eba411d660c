"""Transformer module: sine position embedding and the DETR decoder over learned queries.

The decoder is post-norm DETR: per layer, self-attention among the queries, cross-attention
from the queries to the flattened image features, then a feed-forward block, each followed by a
residual add and a LayerNorm. Attention runs through ``scaled_dot_product_attention``; the
explicit softmax path is used only when attention weights are requested.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskformer.configuration import DetrConfig
from maskformer.modeling.model_utils import checkpointed, use_checkpointing
from maskformer.modeling.outputs import DetrDecoderOutput
from maskformer.modeling.swin import activation_module


class MaskFormerSinePositionEmbedding(nn.Module):
    """The DETR sine/cosine 2-D position encoding of an unmasked ``(h, w)`` grid.

    Output ``(1, h*w, 2*num_pos_feats)``: ``[pos_y, pos_x]``, each interleaving ``sin`` (even
    features) and ``cos`` (odd features). Computed on every call (a few small ops; no cache, so
    it traces).
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: int = 10000,
        normalize: bool = False,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("normalize should be True if scale is passed")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def flat(self, height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``(1, height*width, 2*num_pos_feats)`` in ``dtype`` (computed in float32)."""
        return self._compute(height, width, device).to(dtype)

    def _compute(self, height: int, width: int, device: torch.device) -> Tensor:
        y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=device)
        x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[-1] + eps) * self.scale
            x_embed = x_embed / (x_embed[-1] + eps) * self.scale
        index = torch.arange(self.num_pos_feats, dtype=torch.int64, device=device)
        dim_t = self.temperature ** (
            2 * torch.div(index, 2, rounding_mode="floor") / self.num_pos_feats
        )
        pos_y = self._interleave(y_embed[:, None] / dim_t)  # (h, F)
        pos_x = self._interleave(x_embed[:, None] / dim_t)  # (w, F)
        grid = torch.cat(
            [
                pos_y[:, None, :].expand(height, width, -1),
                pos_x[None, :, :].expand(height, width, -1),
            ],
            dim=-1,
        )
        return grid.reshape(1, height * width, -1)

    @staticmethod
    def _interleave(angles: Tensor) -> Tensor:
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    def forward(self, features: Tensor) -> Tensor:
        """``features`` ``(batch, channels, h, w)`` -> ``(batch, 2*num_pos_feats, h, w)``."""
        batch, _, height, width = features.shape
        flat = self.flat(height, width, features.dtype, features.device)
        return flat.transpose(1, 2).reshape(1, -1, height, width).expand(batch, -1, -1, -1)


class DetrAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (DETR naming)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim must be divisible by num_heads (got `embed_dim`: {embed_dim} and "
                f"`num_heads`: {num_heads})."
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = dropout
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, output_attentions: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``query`` ``(batch, Lq, d)`` (position already added), ``key`` ``(batch, Lk, d)``
        (position added), ``value`` ``(batch, Lk, d)``. Returns ``(batch, Lq, d)`` and, when asked,
        the ``(batch, heads, Lq, Lk)`` attention probabilities."""
        batch, length, _ = query.shape
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = torch.matmul(q * self.scaling, k.transpose(-1, -2))
            weights = scores.softmax(dim=-1)
            context = torch.matmul(F.dropout(weights, p=dropout, training=self.training), v)
        else:
            context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        context = (
            context.transpose(1, 2)
            .clone(memory_format=torch.contiguous_format)
            .view(batch, length, self.embed_dim)
        )
        return self.out_proj(context), weights


class DetrDecoderLayer(nn.Module):
    def __init__(self, config: DetrConfig) -> None:
        super().__init__()
        d_model = config.d_model
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout
        self.self_attn = DetrAttention(
            d_model, config.decoder_attention_heads, config.attention_dropout
        )
        self.activation_fn = activation_module(config.activation_function)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.encoder_attn = DetrAttention(
            d_model, config.decoder_attention_heads, config.attention_dropout
        )
        self.encoder_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)

    def forward(
        self,
        hidden_states: Tensor,
        query_position: Tensor,
        memory: Tensor,
        memory_with_position: Tensor,
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``hidden_states`` / ``query_position`` ``(batch, Q, d)``; ``memory`` (keys' values) and
        ``memory_with_position`` ``(batch, h*w, d)``."""
        with_position = hidden_states + query_position
        attended, weights = self.self_attn(
            with_position, with_position, hidden_states, output_attentions=output_attentions
        )
        hidden_states = self.self_attn_layer_norm(
            hidden_states + F.dropout(attended, p=self.dropout, training=self.training)
        )
        attended, _ = self.encoder_attn(
            hidden_states + query_position, memory_with_position, memory
        )
        hidden_states = self.encoder_attn_layer_norm(
            hidden_states + F.dropout(attended, p=self.dropout, training=self.training)
        )
        ffn = F.dropout(
            self.activation_fn(self.fc1(hidden_states)),
            p=self.activation_dropout,
            training=self.training,
        )
        ffn = F.dropout(self.fc2(ffn), p=self.dropout, training=self.training)
        return self.final_layer_norm(hidden_states + ffn), weights


class DetrDecoder(nn.Module):
    """``decoder_layers`` post-norm layers followed by a final LayerNorm."""

    def __init__(self, config: DetrConfig) -> None:
        super().__init__()
        self.config = config
        self.layerdrop = config.decoder_layerdrop
        self.layers = nn.ModuleList(DetrDecoderLayer(config) for _ in range(config.decoder_layers))
        self.layernorm = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False
        self.checkpoint_kwargs: dict[str, Any] = {}

    def forward(
        self,
        inputs_embeds: Tensor,
        query_position: Tensor,
        memory: Tensor,
        memory_position: Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        output_auxiliary_states: bool = False,
    ) -> tuple[DetrDecoderOutput, list[Tensor]]:
        """``inputs_embeds`` / ``query_position`` ``(batch, Q, d)``; ``memory`` ``(batch, h*w, d)``
        image features and ``memory_position`` their position embedding (broadcastable to it).

        Returns the decoder output and, with ``output_auxiliary_states``, the final-layernormed
        outputs of layers ``0 .. L-2`` (each ``(batch, Q, d)``) for auxiliary predictions."""
        keep_normed_running_state = bool(self.config.auxiliary_loss)
        hidden_states = inputs_embeds
        memory_with_position = memory + memory_position
        all_hidden_states: list[Tensor] = []
        all_attentions: list[Tensor] = []
        intermediate: list[Tensor] = []
        auxiliary_states: list[Tensor] = []
        num_layers = len(self.layers)
        checkpointing = use_checkpointing(self)
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if self.training and self.layerdrop > 0 and torch.rand([]) < self.layerdrop:
                continue
            arguments = (hidden_states, query_position, memory, memory_with_position)
            if checkpointing:
                hidden_states, weights = checkpointed(
                    layer,
                    *arguments,
                    output_attentions,
                    checkpoint_kwargs=self.checkpoint_kwargs,
                )
            else:
                hidden_states, weights = layer(*arguments, output_attentions)
            if output_attentions:
                all_attentions.append(weights)
            normed = None
            if output_auxiliary_states and index < num_layers - 1:
                normed = self.layernorm(hidden_states)
                auxiliary_states.append(normed)
            if keep_normed_running_state:
                # Parity with the reference: with decoder_config.auxiliary_loss the running state
                # is replaced by its layernormed version after every layer.
                hidden_states = normed if normed is not None else self.layernorm(hidden_states)
                intermediate.append(hidden_states)
        hidden_states = self.layernorm(hidden_states)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        output = DetrDecoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            intermediate_hidden_states=torch.stack(intermediate) if intermediate else None,
        )
        return output, auxiliary_states


class MaskFormerTransformerModule(nn.Module):
    """Projects the last backbone map to ``d_model`` and decodes the learned queries against it."""

    def __init__(self, in_features: int, config: DetrConfig) -> None:
        super().__init__()
        hidden_size = config.d_model
        self.position_embedder = MaskFormerSinePositionEmbedding(
            num_pos_feats=hidden_size // 2, normalize=True
        )
        self.queries_embedder = nn.Embedding(config.num_queries, hidden_size)
        self.input_projection = (
            nn.Conv2d(in_features, hidden_size, kernel_size=1)
            if in_features != hidden_size
            else None
        )
        self.decoder = DetrDecoder(config)

    def forward(
        self,
        image_features: Tensor,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_auxiliary_states: bool = False,
    ) -> tuple[DetrDecoderOutput, list[Tensor]]:
        """``image_features`` ``(batch, C, h, w)`` -> decoder output with ``(batch, Q, d)`` queries."""
        if self.input_projection is not None:
            image_features = self.input_projection(image_features)
        batch, channels, height, width = image_features.shape
        position = self.position_embedder.flat(
            height, width, image_features.dtype, image_features.device
        )
        memory = image_features.flatten(2).transpose(1, 2)
        query_position = self.queries_embedder.weight.unsqueeze(0).expand(batch, -1, -1)
        # A leaf that requires grad, as in the reference: hidden_states[0] can retain_grad().
        inputs_embeds = torch.zeros_like(query_position, requires_grad=True)
        return self.decoder(
            inputs_embeds,
            query_position.to(memory.dtype),
            memory,
            position,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            output_auxiliary_states=output_auxiliary_states,
        )
