"""The Swin Transformer backbone as MaskFormer uses it (four feature maps at strides 4 to 32).

Tokens travel between blocks as ``(batch, height, width, channels)``. Window attention runs
through ``scaled_dot_product_attention`` with a single additive bias per block: the relative
position bias (gathered once per forward) plus, for shifted blocks, the shifted-window mask
(built once per padded size, dtype and device, in the activations' dtype so half precision
works). Parameter names follow the Hugging Face checkpoint layout.
"""

from __future__ import annotations

import math

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
    """Query/key/value projections and the relative position bias of one window attention."""

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

    def relative_position_bias(self) -> Tensor:
        """``(heads, ws*ws, ws*ws)``."""
        tokens = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(tokens, tokens, -1).permute(2, 0, 1)

    def forward(self, windows: Tensor, attention_bias: Tensor) -> Tensor:
        """``windows`` ``(batch, windows, ws*ws, dim)``; ``attention_bias`` broadcastable to
        ``(windows, heads, ws*ws, ws*ws)``. Returns ``(batch, windows, ws*ws, dim)``."""
        batch, num_windows, tokens, dim = windows.shape
        split = (batch, num_windows, tokens, self.num_attention_heads, self.attention_head_size)
        query = self.query(windows).view(split).transpose(2, 3)
        key = self.key(windows).view(split).transpose(2, 3)
        value = self.value(windows).view(split).transpose(2, 3)
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_bias,
            dropout_p=self.dropout_prob if self.training else 0.0,
        )
        return context.transpose(2, 3).reshape(batch, num_windows, tokens, dim)


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


class MaskFormerSwinLayer(nn.Module):
    """One Swin block: (shifted) window attention then an MLP, both residual, pre-norm."""

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

    def forward(self, hidden_states: Tensor, shift_mask: Tensor | None) -> Tensor:
        """``(batch, height, width, dim)`` -> same shape. ``shift_mask`` ``(windows, 1, N, N)``
        is the shifted-window mask for this block's padded size (None for unshifted blocks)."""
        batch, height, width, dim = hidden_states.shape
        ws, shift = self.window_size, self.shift_size
        windows = self.layernorm_before(hidden_states)
        pad_h, pad_w = (-height) % ws, (-width) % ws
        if pad_h or pad_w:
            windows = F.pad(windows, (0, 0, 0, pad_w, 0, pad_h))
        padded_h, padded_w = height + pad_h, width + pad_w
        if shift:
            windows = torch.roll(windows, shifts=(-shift, -shift), dims=(1, 2))
        grid_h, grid_w = padded_h // ws, padded_w // ws
        windows = windows.view(batch, grid_h, ws, grid_w, ws, dim).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(batch, grid_h * grid_w, ws * ws, dim)

        bias = self.attention.self.relative_position_bias().to(windows.dtype)
        if shift_mask is not None:
            bias = bias + shift_mask  # (windows, heads, N, N)
        attended = self.attention(windows, bias)

        attended = attended.view(batch, grid_h, grid_w, ws, ws, dim).permute(0, 1, 3, 2, 4, 5)
        attended = attended.reshape(batch, padded_h, padded_w, dim)
        if shift:
            attended = torch.roll(attended, shifts=(shift, shift), dims=(1, 2))
        if pad_h or pad_w:
            attended = attended[:, :height, :width]
        hidden_states = hidden_states + self.drop_path(attended)
        mlp = self.output(self.intermediate(self.layernorm_after(hidden_states)))
        return hidden_states + mlp


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
        self, config: SwinConfig, dim: int, depth: int, num_heads: int, downsample: bool
    ) -> None:
        super().__init__()
        self.window_size = config.window_size
        self.shift_size = config.window_size // 2
        # The reference applies the same rate to every block (no linear schedule).
        self.blocks = nn.ModuleList(
            MaskFormerSwinLayer(
                config,
                dim,
                num_heads,
                shift_size=0 if index % 2 == 0 else self.shift_size,
                drop_path_rate=config.drop_path_rate,
            )
            for index in range(depth)
        )
        self.downsample = MaskFormerSwinPatchMerging(dim) if downsample else None
        self._mask_cache: tuple[tuple, Tensor | None] | None = None

    def shift_mask(self, hidden_states: Tensor) -> Tensor | None:
        """``(windows, 1, N, N)`` mask for this stage's shifted blocks, cached per size/dtype/device."""
        if self.shift_size == 0 or len(self.blocks) < 2:
            return None
        height, width = hidden_states.shape[1:3]
        ws = self.window_size
        padded = (math.ceil(height / ws) * ws, math.ceil(width / ws) * ws)
        key = (padded, hidden_states.dtype, hidden_states.device)
        if self._mask_cache is None or self._mask_cache[0] != key:
            mask = shifted_window_mask(*padded, ws, self.shift_size, *key[1:])
            self._mask_cache = (key, mask.unsqueeze(1))
        return self._mask_cache[1]

    def forward(self, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (stage output before merging, merged input of the next stage)."""
        shift_mask = self.shift_mask(hidden_states)
        for block in self.blocks:
            hidden_states = block(hidden_states, shift_mask if block.shift_size else None)
        merged = self.downsample(hidden_states) if self.downsample is not None else hidden_states
        return hidden_states, merged


class MaskFormerSwinEncoder(nn.Module):
    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        num_stages = len(config.depths)
        self.layers = nn.ModuleList(
            MaskFormerSwinStage(
                config,
                dim=int(config.embed_dim * 2**index),
                depth=config.depths[index],
                num_heads=config.num_heads[index],
                downsample=index < num_stages - 1,
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
