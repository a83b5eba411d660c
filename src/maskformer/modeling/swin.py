"""The Swin Transformer backbone as MaskFormer uses it (four feature maps at strides 4 to 32).

Tokens travel between blocks as ``(batch, height, width, channels)``. Each block moves its
tokens into (shifted) windows with one ``index_select`` (padding, cyclic shift and window
partition at once, indices cached per map size) and back with another that also drops the
padding. Window attention is one fused query/key/value matmul and a 4-D
``scaled_dot_product_attention`` with a single additive bias per block: the relative position
bias plus, for shifted blocks, the shifted-window mask (built in the activations' dtype so half
precision works; cached while no gradient is needed). Stochastic depth grows linearly over the
blocks and applies to both residual branches. Parameter names follow the Hugging Face checkpoint
layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskformer.configuration import MaskFormerSwinConfig, SwinConfig
from maskformer.modeling.initialization import init_enabled
from maskformer.modeling.outputs import MaskFormerSwinBackboneOutput

SHIFT_MASK_VALUE = -100.0


def activation_module(name: str) -> nn.Module:
    """The activation named in a config (``"gelu"``, ``"relu"``, ...)."""
    table = {
        "gelu": nn.GELU,
        "relu": nn.ReLU,
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "gelu_new": lambda: nn.GELU(approximate="tanh"),
        "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "linear": nn.Identity,
    }
    if name not in table:
        raise ValueError(f"activation {name!r} is not supported; use one of {sorted(table)}")
    return table[name]()


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples with probability ``drop_prob`` and rescale the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    if keep_prob <= 0.0:
        return torch.zeros_like(x)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = torch.floor(keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device))
    return x / keep_prob * keep


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


def relative_position_index(window_size: int) -> Tensor:
    """``(ws*ws, ws*ws)`` int64 index into the ``((2ws-1)^2, heads)`` relative bias table."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)  # (2, ws*ws)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return relative[..., 0] * (2 * window_size - 1) + relative[..., 1]


def shifted_window_mask(
    padded_height: int,
    padded_width: int,
    window_size: int,
    shift: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """``(windows, ws*ws, ws*ws)`` additive mask: -100 between tokens from different regions."""
    region = torch.zeros(padded_height, padded_width, dtype=torch.int64, device=device)
    bounds = ((0, -window_size), (-window_size, -shift), (-shift, None))
    label = 0
    for h0, h1 in bounds:
        for w0, w1 in bounds:
            region[h0:h1, w0:w1] = label
            label += 1
    windows = region.view(
        padded_height // window_size, window_size, padded_width // window_size, window_size
    ).permute(0, 2, 1, 3)
    windows = windows.reshape(-1, window_size * window_size)
    different = windows[:, :, None] != windows[:, None, :]
    mask = torch.zeros(different.shape, dtype=dtype, device=device)
    return mask.masked_fill_(different, SHIFT_MASK_VALUE)


class MaskFormerSwinPatchEmbeddings(nn.Module):
    """Non-overlapping ``patch_size`` patches projected to ``embed_dim`` channels."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        image_size = config.image_size
        image_size = image_size if isinstance(image_size, (list, tuple)) else (image_size,) * 2
        self.grid_size = (image_size[0] // self.patch_size, image_size[1] // self.patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.projection = nn.Conv2d(
            config.num_channels, config.embed_dim, self.patch_size, stride=self.patch_size
        )

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(batch, channels, height, width)`` -> ``(batch, ceil(h/p), ceil(w/p), embed_dim)``."""
        height, width = pixel_values.shape[-2:]
        pad_h = (-height) % self.patch_size
        pad_w = (-width) % self.patch_size
        if pad_h or pad_w:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
        return self.projection(pixel_values).permute(0, 2, 3, 1)


class MaskFormerSwinEmbeddings(nn.Module):
    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.patch_embeddings = MaskFormerSwinPatchEmbeddings(config)
        if config.use_absolute_embeddings:
            self.position_embeddings = nn.Parameter(
                torch.zeros(1, self.patch_embeddings.num_patches + 1, config.embed_dim)
            )
        else:
            self.position_embeddings = None
        self.norm = nn.LayerNorm(config.embed_dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: Tensor) -> Tensor:
        embeddings = self.norm(self.patch_embeddings(pixel_values))
        if self.position_embeddings is not None:
            embeddings = embeddings + self._absolute_position_embeddings(embeddings)
        return self.dropout(embeddings)

    def _absolute_position_embeddings(self, embeddings: Tensor) -> Tensor:
        """The patch rows of the table on the pretraining grid, resized to this input's grid."""
        grid_h, grid_w = self.patch_embeddings.grid_size
        table = self.position_embeddings[:, 1:, :].reshape(1, grid_h, grid_w, -1)
        height, width = embeddings.shape[1:3]
        if (height, width) != (grid_h, grid_w):
            table = F.interpolate(
                table.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", align_corners=False
            ).permute(0, 2, 3, 1)
        return table.to(embeddings.dtype)


class MaskFormerSwinSelfAttention(nn.Module):
    """Query/key/value projections and the relative position bias of one window attention.

    The three projections keep their checkpoint names (``query``, ``key``, ``value``) but run as
    one matmul against their concatenated weights; without autograd the concatenation is cached
    and rebuilt whenever a weight changes (load_state_dict, optimiser steps, ``.to()``).
    """

    def __init__(self, config: SwinConfig, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(
                f"hidden size {dim} is not a multiple of the number of heads {num_heads}"
            )
        self.num_attention_heads = num_heads
        self.attention_head_size = dim // num_heads
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.query = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.key = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.value = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.dropout_prob = config.attention_probs_dropout_prob
        self._qkv_cache: tuple[tuple, Tensor, Tensor | None] | None = None

    def relative_position_bias(self) -> Tensor:
        """``(heads, ws*ws, ws*ws)``."""
        tokens = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(tokens, tokens, -1).permute(2, 0, 1)

    def qkv_parameters(self) -> tuple[Tensor, Tensor | None]:
        """Weight ``(3*dim, dim)`` and bias ``(3*dim,)`` of the fused query/key/value projection."""
        layers = (self.query, self.key, self.value)
        has_bias = self.query.bias is not None
        if torch.is_grad_enabled() and any(layer.weight.requires_grad for layer in layers):
            weight = torch.cat([layer.weight for layer in layers])
            bias = torch.cat([layer.bias for layer in layers]) if has_bias else None
            return weight, bias
        tensors = [t for layer in layers for t in (layer.weight, layer.bias) if t is not None]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        if self._qkv_cache is None or self._qkv_cache[0] != key:
            # Normal tensors even under inference_mode, so a later autograd pass may use them.
            with torch.inference_mode(False), torch.no_grad():
                weight = torch.cat([layer.weight for layer in layers])
                bias = torch.cat([layer.bias for layer in layers]) if has_bias else None
            self._qkv_cache = (key, weight, bias)
        return self._qkv_cache[1], self._qkv_cache[2]

    def forward(self, windows: Tensor, attention_bias: Tensor) -> Tensor:
        """``windows`` ``(batch*windows, ws*ws, dim)``; ``attention_bias`` broadcastable to
        ``(batch*windows, heads, ws*ws, ws*ws)``. Returns ``(batch*windows, ws*ws, dim)``."""
        count, tokens, dim = windows.shape
        weight, bias = self.qkv_parameters()
        qkv = F.linear(windows, weight, bias)
        qkv = qkv.view(count, tokens, 3, self.num_attention_heads, self.attention_head_size)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (count, heads, tokens, d)
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_bias,
            dropout_p=self.dropout_prob if self.training else 0.0,
        )
        return context.transpose(1, 2).reshape(count, tokens, dim)


class MaskFormerSwinSelfOutput(nn.Module):
    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.dense(x))


class MaskFormerSwinAttention(nn.Module):
    def __init__(self, config: SwinConfig, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.self = MaskFormerSwinSelfAttention(config, dim, num_heads, window_size)
        self.output = MaskFormerSwinSelfOutput(config, dim)

    def forward(self, windows: Tensor, attention_bias: Tensor) -> Tensor:
        return self.output(self.self(windows, attention_bias))


class MaskFormerSwinIntermediate(nn.Module):
    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, int(config.mlp_ratio * dim))
        self.intermediate_act_fn = activation_module(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(x))


class MaskFormerSwinOutput(nn.Module):
    def __init__(self, config: SwinConfig, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(int(config.mlp_ratio * dim), dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.dense(x))


@dataclass(frozen=True)
class WindowLayout:
    """Where each token of a ``(height, width)`` map goes in the (shifted) window layout.

    The reference pads the map to a multiple of the window size, rolls it by ``-shift`` and cuts
    it into windows; ``gather`` does all three at once: row ``i`` of the windowed tokens
    ``(windows*ws*ws,)`` is token ``gather[i]`` of the flattened map, and the rows listed in
    ``padding`` are padding (zeros). ``scatter`` ``(height*width,)`` is the inverse: the windowed
    row of each map token. ``shift_mask`` is ``(windows, 1, N, N)`` for shifted layouts, else None.
    """

    num_windows: int
    gather: Tensor
    padding: Tensor | None
    scatter: Tensor
    shift_mask: Tensor | None


def window_layout(
    height: int,
    width: int,
    window_size: int,
    shift: int,
    dtype: torch.dtype,
    device: torch.device,
) -> WindowLayout:
    """The :class:`WindowLayout` of a ``(height, width)`` map (pad, roll by ``-shift``, cut)."""
    ws = window_size
    padded_h, padded_w = math.ceil(height / ws) * ws, math.ceil(width / ws) * ws
    grid_h, grid_w = padded_h // ws, padded_w // ws
    rows = (torch.arange(padded_h, device=device) + shift) % padded_h
    cols = (torch.arange(padded_w, device=device) + shift) % padded_w
    rows = rows.view(grid_h, 1, ws, 1).expand(grid_h, grid_w, ws, ws).reshape(-1)
    cols = cols.view(1, grid_w, 1, ws).expand(grid_h, grid_w, ws, ws).reshape(-1)
    inside = (rows < height) & (cols < width)
    source = torch.where(inside, rows * width + cols, torch.zeros_like(rows))
    positions = torch.arange(source.numel(), device=device)
    scatter = torch.empty(height * width, dtype=torch.int64, device=device)
    scatter[source[inside]] = positions[inside]
    padding = None if (padded_h, padded_w) == (height, width) else positions[~inside]
    shift_mask = None
    if shift:
        shift_mask = shifted_window_mask(padded_h, padded_w, ws, shift, dtype, device).unsqueeze(1)
    return WindowLayout(grid_h * grid_w, source, padding, scatter, shift_mask)


class MaskFormerSwinLayer(nn.Module):
    """One Swin block: (shifted) window attention then an MLP, both residual, pre-norm.

    Stochastic depth (``drop_path``) applies to both residual branches, as in Swin.
    """

    def __init__(
        self, config: SwinConfig, dim: int, num_heads: int, shift_size: int, drop_path_rate: float
    ) -> None:
        super().__init__()
        self.window_size = config.window_size
        self.shift_size = shift_size
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = MaskFormerSwinAttention(config, dim, num_heads, self.window_size)
        self.drop_path = DropPath(drop_path_rate)
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.intermediate = MaskFormerSwinIntermediate(config, dim)
        self.output = MaskFormerSwinOutput(config, dim)
        self._bias_cache: tuple[tuple, Tensor] | None = None

    def attention_bias(self, layout: WindowLayout, batch: int, dtype: torch.dtype) -> Tensor:
        """``(1, heads, N, N)`` relative position bias, plus the shift mask for shifted blocks
        (``(batch*windows, heads, N, N)``). Cached while no gradient is needed."""
        table = self.attention.self.relative_position_bias_table
        needs_grad = torch.is_grad_enabled() and table.requires_grad
        key = (table.data_ptr(), table._version, id(layout), batch, dtype)
        if not needs_grad and self._bias_cache is not None and self._bias_cache[0] == key:
            return self._bias_cache[1]
        # A normal tensor even under inference_mode, so later autograd passes may use it.
        with torch.inference_mode(False), torch.set_grad_enabled(needs_grad):
            bias = self.attention.self.relative_position_bias().to(dtype).unsqueeze(0)
            if layout.shift_mask is not None:
                bias = bias + layout.shift_mask  # (windows, heads, N, N)
                if batch > 1:
                    bias = bias.repeat(batch, 1, 1, 1)
        if not needs_grad:
            self._bias_cache = (key, bias)
        return bias

    def forward(self, hidden_states: Tensor, layout: WindowLayout) -> Tensor:
        """``(batch, height, width, dim)`` -> same shape; ``layout`` is this block's
        :class:`WindowLayout` for the map size."""
        batch, height, width, dim = hidden_states.shape
        tokens = self.window_size * self.window_size
        flat = hidden_states.reshape(batch, height * width, dim)
        windows = self.layernorm_before(flat).index_select(1, layout.gather)
        if layout.padding is not None:
            windows.index_fill_(1, layout.padding, 0.0)  # the fresh gather output: in place
        windows = windows.view(batch * layout.num_windows, tokens, dim)
        bias = self.attention_bias(layout, batch, windows.dtype)
        context = self.attention.self(windows, bias)
        context = context.view(batch, layout.num_windows * tokens, dim)
        # Back to map order (dropping padding) before the output projection: fewer rows.
        attended = self.attention.output(context.index_select(1, layout.scatter))
        flat = flat + self.drop_path(attended)
        mlp = self.output(self.intermediate(self.layernorm_after(flat)))
        flat = flat + self.drop_path(mlp)
        return flat.view(batch, height, width, dim)


class MaskFormerSwinPatchMerging(nn.Module):
    """2x2 neighbourhood concat (zero-padding odd sizes), LayerNorm, linear 4C -> 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, height, width, dim)`` -> ``(batch, ceil(h/2), ceil(w/2), 2*dim)``."""
        height, width = x.shape[1:3]
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class MaskFormerSwinStage(nn.Module):
    """``depth`` blocks alternating unshifted / shifted windows, then optional patch merging."""

    def __init__(
        self,
        config: SwinConfig,
        dim: int,
        depth: int,
        num_heads: int,
        downsample: bool,
        drop_path_rates: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.window_size = config.window_size
        self.shift_size = config.window_size // 2
        rates = drop_path_rates if drop_path_rates is not None else [0.0] * depth
        self.blocks = nn.ModuleList(
            MaskFormerSwinLayer(
                config,
                dim,
                num_heads,
                shift_size=0 if index % 2 == 0 else self.shift_size,
                drop_path_rate=rates[index],
            )
            for index in range(depth)
        )
        self.downsample = MaskFormerSwinPatchMerging(dim) if downsample else None
        self._layout_cache: dict[int, tuple[tuple, WindowLayout]] = {}

    def layout(self, hidden_states: Tensor, shift: int) -> WindowLayout:
        """The :class:`WindowLayout` for this map size and ``shift``, cached per
        size/dtype/device."""
        height, width = hidden_states.shape[1:3]
        key = (height, width, hidden_states.dtype, hidden_states.device)
        cached = self._layout_cache.get(shift)
        if cached is None or cached[0] != key:
            with torch.inference_mode(False):  # normal tensors, usable by autograd later
                layout = window_layout(height, width, self.window_size, shift, *key[2:])
            cached = (key, layout)
            self._layout_cache[shift] = cached
        return cached[1]

    def forward(self, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (stage output before merging, merged input of the next stage)."""
        for block in self.blocks:
            hidden_states = block(hidden_states, self.layout(hidden_states, block.shift_size))
        merged = self.downsample(hidden_states) if self.downsample is not None else hidden_states
        return hidden_states, merged


class MaskFormerSwinEncoder(nn.Module):
    """The stages; stochastic depth grows linearly from 0 to ``drop_path_rate`` over all blocks."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        num_stages = len(config.depths)
        total = sum(config.depths)
        rates = torch.linspace(0, config.drop_path_rate, total).tolist() if total else []
        starts = [sum(config.depths[:index]) for index in range(num_stages)]
        self.layers = nn.ModuleList(
            MaskFormerSwinStage(
                config,
                dim=int(config.embed_dim * 2**index),
                depth=config.depths[index],
                num_heads=config.num_heads[index],
                downsample=index < num_stages - 1,
                drop_path_rates=rates[starts[index] : starts[index] + config.depths[index]],
            )
            for index in range(num_stages)
        )

    def forward(self, hidden_states: Tensor) -> list[Tensor]:
        """All stage outputs (before merging), each ``(batch, h_i, w_i, dim_i)``."""
        stage_outputs = []
        for stage in self.layers:
            stage_output, hidden_states = stage(hidden_states)
            stage_outputs.append(stage_output)
        return stage_outputs


class MaskFormerSwinModel(nn.Module):
    """Embeddings and stages. ``layernorm`` is kept only so checkpoints that hold it load; the
    backbone never applies it (nor does the reference use its output)."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.embeddings = MaskFormerSwinEmbeddings(config)
        self.encoder = MaskFormerSwinEncoder(config)
        self.num_features = int(config.embed_dim * 2 ** (len(config.depths) - 1))
        self.layernorm = nn.LayerNorm(self.num_features, eps=config.layer_norm_eps)
        # Never used in the forward pass: frozen so DistributedDataParallel sees no unused
        # trainable parameters.
        self.layernorm.requires_grad_(False)

    def forward(self, pixel_values: Tensor) -> list[Tensor]:
        return self.encoder(self.embeddings(pixel_values))


class MaskFormerSwinBackbone(nn.Module):
    """Swin backbone returning the normed ``(batch, C_i, H_i, W_i)`` map of each requested stage."""

    def __init__(self, config: SwinConfig | MaskFormerSwinConfig) -> None:
        super().__init__()
        if "stem" in config.out_features:
            raise ValueError("This backbone does not support 'stem' in out_features")
        self.config = config
        self.model = MaskFormerSwinModel(config)
        self.num_features = [int(config.embed_dim * 2**i) for i in range(len(config.depths))]
        self.channels = [self.num_features[i - 1] for i in config.out_indices]
        self.hidden_states_norms = nn.ModuleList(nn.LayerNorm(dim) for dim in self.num_features)
        self.init_weights()

    def init_weights(self) -> None:
        """Linear/Conv2d: normal(0, initializer_range), bias 0; LayerNorm: 1, 0; bias table 0."""
        if not init_enabled():
            return
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif (
                isinstance(module, MaskFormerSwinEmbeddings)
                and module.position_embeddings is not None
            ):
                nn.init.zeros_(module.position_embeddings)
            module._maskformer_initialized = True

    def forward(
        self, pixel_values: Tensor, output_hidden_states: bool = False
    ) -> MaskFormerSwinBackboneOutput:
        stage_outputs = self.model(pixel_values)
        maps = [
            norm(output).permute(0, 3, 1, 2)
            for norm, output in zip(self.hidden_states_norms, stage_outputs)
        ]
        feature_maps = tuple(maps[i - 1] for i in self.config.out_indices)
        return MaskFormerSwinBackboneOutput(
            feature_maps=feature_maps,
            hidden_states=tuple(maps) if output_hidden_states else None,
        )
