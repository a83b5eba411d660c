"""The Swin Transformer blocks as MaskFormer uses them (four feature maps at strides 4 to 32).

Tokens travel between blocks as ``(batch, height, width, channels)``. Each block moves its
tokens into (shifted) windows with one ``index_select`` (padding, cyclic shift and window
partition at once, indices computed per stage from the map size) and back with another that
also drops the padding. Window attention is a 4-D ``scaled_dot_product_attention`` (explicit
matmuls in half precision on CPU, where they are faster on 49-token windows) with a single
additive bias per block: the relative position bias plus, for shifted blocks, the shifted-window
mask (built in the activations' dtype so half precision works). Nothing derived from the weights
or the input is cached between calls, so the blocks trace (``torch.jit.trace``,
``torch.export``) and follow ``load_state_dict``. Stochastic depth grows linearly over the blocks
and applies to both residual branches. Parameter names follow the Hugging Face checkpoint layout;
the model and backbone classes are in :mod:`maskformer.modeling.swin_backbone`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskformer.configuration import SwinConfig
from maskformer.modeling.model_utils import checkpointed, use_checkpointing

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

    def band(size: int) -> Tensor:  # 0 on [0, -ws), 1 on [-ws, -shift), 2 on [-shift, size)
        index = torch.arange(size, device=device)
        return (index >= size - window_size).long() + (index >= size - shift).long()

    region = band(padded_height)[:, None] * 3 + band(padded_width)[None, :]  # 9 region ids
    windows = region.view(
        padded_height // window_size, window_size, padded_width // window_size, window_size
    ).permute(0, 2, 1, 3)
    windows = windows.reshape(-1, window_size * window_size)
    different = windows[:, :, None] != windows[:, None, :]
    mask = torch.zeros(different.shape, dtype=dtype, device=device)
    return mask.masked_fill_(different, SHIFT_MASK_VALUE)


def matmul_attention(query: Tensor) -> bool:
    """Whether window attention on ``query`` runs as explicit matmuls rather than the fused
    ``scaled_dot_product_attention``: half precision on CPU does. The fused CPU kernel is built
    for long sequences and spends more than the matmuls on 49-token windows (bfloat16 swin-tiny
    at 512x512, 2 threads: 65 ms fused vs ~30 ms); in float32 both take the same time, and on
    CUDA the fused kernels are the fast path, so those stay fused."""
    return query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16)


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
        # A channels-last input makes the convolution write channels-last, so the token layout
        # below is a free view (copying 3 input channels beats copying embed_dim output ones).
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
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

    The three projections keep their checkpoint names (``query``, ``key``, ``value``) and run as
    three matmuls (as fast as one fused matmul here, measured), so nothing derived from the
    weights has to be kept between calls.
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

    def relative_position_bias(self) -> Tensor:
        """``(heads, ws*ws, ws*ws)``."""
        tokens = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        # Contiguous: the attention kernels copy a strided mask, and a broadcast add reading it
        # strided is ~30x slower than a plain one (measured in bfloat16).
        return bias.reshape(tokens, tokens, -1).permute(2, 0, 1).contiguous()

    def _heads(self, x: Tensor) -> Tensor:
        """``(count, tokens, dim)`` -> ``(count, heads, tokens, head_dim)``."""
        count, tokens, _ = x.shape
        return x.view(count, tokens, self.num_attention_heads, -1).transpose(1, 2)

    def forward(
        self, windows: Tensor, attention_bias: Tensor, output_attentions: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``windows`` ``(batch*windows, ws*ws, dim)``; ``attention_bias`` broadcastable to
        ``(batch*windows, heads, ws*ws, ws*ws)``. Returns ``(batch*windows, ws*ws, dim)`` and, when
        asked, the attention probabilities ``(batch*windows, heads, ws*ws, ws*ws)``."""
        count, tokens, dim = windows.shape
        query = self._heads(self.query(windows))
        key = self._heads(self.key(windows))
        value = self._heads(self.value(windows))
        dropout = self.dropout_prob if self.training else 0.0
        probabilities = None
        if output_attentions or matmul_attention(query):
            scores = torch.matmul(query * self.attention_head_size**-0.5, key.transpose(-1, -2))
            # (A float32 result, then rounded: the same values, half the time of a bf16 softmax.)
            weights = (scores + attention_bias).softmax(-1, dtype=torch.float32).to(scores.dtype)
            context = torch.matmul(F.dropout(weights, dropout, self.training), value)
            probabilities = weights if output_attentions else None
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_bias, dropout_p=dropout
            )
        return context.transpose(1, 2).clone(memory_format=torch.contiguous_format).view(
            count, tokens, dim
        ), probabilities


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

    def forward(
        self, windows: Tensor, attention_bias: Tensor, output_attentions: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        context, probabilities = self.self(windows, attention_bias, output_attentions)
        return self.output(context), probabilities


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
    ``(windows*ws*ws,)`` is token ``gather[i]`` of the flattened map, and ``keep``
    ``(windows*ws*ws, 1)`` is 0 on the padding rows (1 elsewhere; None without padding).
    ``scatter`` ``(height*width,)`` is the inverse: the windowed row of each map token.
    ``shift_mask`` is ``(windows, 1, N, N)`` for shifted layouts, else None.

    Everything is a function of the map size, window and shift only (index arithmetic, no
    data-dependent shapes), so it traces and exports; it is rebuilt on every forward pass.
    """

    num_windows: int
    gather: Tensor
    keep: Tensor | None
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
    # Windowed position (window row, window col, row in window, col in window) -> padded map row
    # and column before the roll.
    rows = (torch.arange(padded_h, device=device) + shift) % padded_h
    cols = (torch.arange(padded_w, device=device) + shift) % padded_w
    rows = rows.view(grid_h, 1, ws, 1).expand(grid_h, grid_w, ws, ws).reshape(-1)
    cols = cols.view(1, grid_w, 1, ws).expand(grid_h, grid_w, ws, ws).reshape(-1)
    inside = (rows < height) & (cols < width)
    gather = torch.where(inside, rows * width + cols, torch.zeros_like(rows))
    keep = None if (padded_h, padded_w) == (height, width) else inside.to(dtype).unsqueeze(1)
    # The inverse, by the same arithmetic: map token (r, c) sits at rolled row (r - shift) mod Hp.
    # (Operands kept non-negative: inductor's range analysis mishandles a negative modulus.)
    rolled_r = (torch.arange(height, device=device) + (padded_h - shift)) % padded_h
    rolled_c = (torch.arange(width, device=device) + (padded_w - shift)) % padded_w
    window = (rolled_r // ws)[:, None] * grid_w + (rolled_c // ws)[None, :]
    within = (rolled_r % ws)[:, None] * ws + (rolled_c % ws)[None, :]
    scatter = (window * (ws * ws) + within).reshape(-1)
    shift_mask = None
    if shift:
        shift_mask = shifted_window_mask(padded_h, padded_w, ws, shift, dtype, device).unsqueeze(1)
    return WindowLayout(grid_h * grid_w, gather, keep, scatter, shift_mask)


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

    def attention_bias(self, layout: WindowLayout, batch: int, dtype: torch.dtype) -> Tensor:
        """``(1, heads, N, N)`` relative position bias, plus the shift mask for shifted blocks
        (``(batch*windows, heads, N, N)``), computed from the current table on every call."""
        bias = self.attention.self.relative_position_bias().to(dtype).unsqueeze(0)
        if layout.shift_mask is None:
            return bias
        bias = bias + layout.shift_mask  # (windows, heads, N, N)
        # One copy per image (a view for a single image): the fused attention wants 4-D masks.
        return bias.unsqueeze(0).expand(batch, -1, -1, -1, -1).flatten(0, 1)

    def forward(
        self, hidden_states: Tensor, layout: WindowLayout, output_attentions: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``(batch, height, width, dim)`` -> same shape; ``layout`` is this block's
        :class:`WindowLayout` for the map size. Also returns the attention probabilities
        ``(batch*windows, heads, N, N)`` when asked."""
        batch, height, width, dim = hidden_states.shape
        tokens = self.window_size * self.window_size
        flat = hidden_states.reshape(batch, height * width, dim)
        windows = self.layernorm_before(flat).index_select(1, layout.gather)
        if layout.keep is not None:
            windows.mul_(layout.keep)  # zero the padding tokens (a fresh tensor: in place)
        windows = windows.view(batch * layout.num_windows, tokens, dim)
        bias = self.attention_bias(layout, batch, windows.dtype)
        context, probabilities = self.attention.self(windows, bias, output_attentions)
        context = context.view(batch, layout.num_windows * tokens, dim)
        # Back to map order (dropping padding) before the output projection: fewer rows.
        attended = self.attention.output(context.index_select(1, layout.scatter))
        flat = flat + self.drop_path(attended)
        mlp = self.output(self.intermediate(self.layernorm_after(flat)))
        flat = flat + self.drop_path(mlp)
        return flat.view(batch, height, width, dim), probabilities


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


@dataclass
class StageOutput:
    """One stage's results: ``hidden_states`` ``(batch, h, w, dim)`` before merging, ``merged``
    (the next stage's input), and when asked ``block_states`` (each block's input and output as
    ``(batch, h*w, dim)`` tokens) and ``attentions`` (one per block)."""

    hidden_states: Tensor
    merged: Tensor
    block_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


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

    def layout(self, hidden_states: Tensor, shift: int) -> WindowLayout:
        """The :class:`WindowLayout` for this ``(batch, h, w, dim)`` map and ``shift``."""
        height, width = hidden_states.shape[1:3]
        return window_layout(
            height, width, self.window_size, shift, hidden_states.dtype, hidden_states.device
        )

    def forward(
        self,
        hidden_states: Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        checkpoint_kwargs: dict[str, Any] | None = None,
    ) -> StageOutput:
        """``(batch, h, w, dim)`` -> :class:`StageOutput`. With ``checkpoint_kwargs`` (a dict,
        possibly empty) each block runs under gradient checkpointing."""
        shifts = {block.shift_size for block in self.blocks}
        layouts = {shift: self.layout(hidden_states, shift) for shift in shifts}
        block_states: list[Tensor] = []
        attentions: list[Tensor] = []
        for block in self.blocks:
            if output_hidden_states:
                block_states.append(hidden_states.flatten(1, 2))
            layout = layouts[block.shift_size]
            if checkpoint_kwargs is not None:
                hidden_states, probabilities = checkpointed(
                    block,
                    hidden_states,
                    layout,
                    output_attentions,
                    checkpoint_kwargs=checkpoint_kwargs,
                )
            else:
                hidden_states, probabilities = block(hidden_states, layout, output_attentions)
            if output_hidden_states:
                block_states.append(hidden_states.flatten(1, 2))
            if output_attentions:
                attentions.append(probabilities)
        merged = self.downsample(hidden_states) if self.downsample is not None else hidden_states
        return StageOutput(
            hidden_states,
            merged,
            tuple(block_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )


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
        self.gradient_checkpointing = False
        self.checkpoint_kwargs: dict[str, Any] = {}

    def forward(
        self,
        hidden_states: Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> list[StageOutput]:
        """``(batch, h, w, C)`` embeddings -> one :class:`StageOutput` per stage."""
        checkpoint_kwargs = self.checkpoint_kwargs if use_checkpointing(self) else None
        outputs = []
        for stage in self.layers:
            output = stage(
                hidden_states, output_attentions, output_hidden_states, checkpoint_kwargs
            )
            outputs.append(output)
            hidden_states = output.merged
        return outputs
