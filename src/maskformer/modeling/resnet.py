"""ResNet backbone in the Hugging Face layout (``embedder`` + ``encoder.stages``), bottleneck or basic.

Feature maps are the raw stage outputs (no extra norm), strides 4, 8, 16 and 32.
"""

from __future__ import annotations

from torch import Tensor, nn

from maskformer.configuration import ResNetConfig
from maskformer.modeling.initialization import init_enabled
from maskformer.modeling.outputs import BackboneOutput
from maskformer.modeling.swin import activation_module


class ResNetConvLayer(nn.Module):
    """Conv (no bias, ``padding=k//2``) -> BatchNorm -> activation (``None`` = identity)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        activation: str | None = "relu",
    ) -> None:
        super().__init__()
        self.convolution = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False
        )
        self.normalization = nn.BatchNorm2d(out_channels)
        self.activation = activation_module(activation) if activation is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.normalization(self.convolution(x)))


class ResNetEmbeddings(nn.Module):
    """7x7/2 conv stem then 3x3/2 max pool: stride 4."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.embedder = ResNetConvLayer(
            config.num_channels, config.embedding_size, 7, 2, activation=config.hidden_act
        )
        self.pooler = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.pooler(self.embedder(pixel_values))


class ResNetShortCut(nn.Module):
    """1x1 conv with stride then BatchNorm, projecting the residual."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.normalization(self.convolution(x))


class ResNetBasicLayer(nn.Module):
    """Two 3x3 convs (the first carries the stride) plus a residual."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: str) -> None:
        super().__init__()
        needs_projection = in_channels != out_channels or stride != 1
        self.shortcut = (
            ResNetShortCut(in_channels, out_channels, stride) if needs_projection else nn.Identity()
        )
        self.layer = nn.Sequential(
            ResNetConvLayer(in_channels, out_channels, stride=stride, activation=activation),
            ResNetConvLayer(out_channels, out_channels, activation=None),
        )
        self.activation = activation_module(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.layer(x) + self.shortcut(x))


class ResNetBottleNeckLayer(nn.Module):
    """1x1 reduce to ``out/4`` -> 3x3 (with the stride) -> 1x1 expand, plus a residual."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        activation: str,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        needs_projection = in_channels != out_channels or stride != 1
        reduced = out_channels // reduction
        self.shortcut = (
            ResNetShortCut(in_channels, out_channels, stride) if needs_projection else nn.Identity()
        )
        self.layer = nn.Sequential(
            ResNetConvLayer(in_channels, reduced, kernel_size=1, activation=activation),
            ResNetConvLayer(reduced, reduced, stride=stride, activation=activation),
            ResNetConvLayer(reduced, out_channels, kernel_size=1, activation=None),
        )
        self.activation = activation_module(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.layer(x) + self.shortcut(x))


class ResNetStage(nn.Module):
    def __init__(
        self, config: ResNetConfig, in_channels: int, out_channels: int, stride: int, depth: int
    ) -> None:
        super().__init__()
        layer_class = (
            ResNetBottleNeckLayer if config.layer_type == "bottleneck" else ResNetBasicLayer
        )
        self.layers = nn.Sequential(
            layer_class(in_channels, out_channels, stride, config.hidden_act),
            *(
                layer_class(out_channels, out_channels, 1, config.hidden_act)
                for _ in range(depth - 1)
            ),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ResNetEncoder(nn.Module):
    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        widths = [config.embedding_size, *config.hidden_sizes]
        self.stages = nn.ModuleList(
            ResNetStage(
                config,
                widths[index],
                widths[index + 1],
                stride=2 if index > 0 or config.downsample_in_first_stage else 1,
                depth=depth,
            )
            for index, depth in enumerate(config.depths)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class ResNetBackbone(nn.Module):
    """ResNet returning the ``(batch, C_i, H_i, W_i)`` map of each requested stage."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embedder = ResNetEmbeddings(config)
        self.encoder = ResNetEncoder(config)
        widths = [config.embedding_size, *config.hidden_sizes]
        self.channels = [widths[i] for i in config.out_indices]
        self.init_weights()

    def init_weights(self) -> None:
        """Convs: Kaiming normal (fan_out, relu); norms: weight 1, bias 0."""
        if not init_enabled():
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            module._maskformer_initialized = True

    def forward(
        self,
        pixel_values: Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BackboneOutput | tuple[tuple[Tensor, ...], ...]:
        """``(batch, channels, height, width)`` -> ``feature_maps``, one ``(batch, C_i, H_i, W_i)``
        map per stage in ``out_features`` (and with ``output_hidden_states`` the stem and all
        stage maps). ResNet has no attentions: ``output_attentions`` is accepted and ignored."""
        config = self.config
        if output_hidden_states is None:
            output_hidden_states = config.output_hidden_states
        if return_dict is None:
            return_dict = config.use_return_dict
        stem = self.embedder(pixel_values)
        maps = [stem, *self.encoder(stem)]
        feature_maps = tuple(maps[i] for i in config.out_indices)
        hidden_states = tuple(maps) if output_hidden_states else None
        if not return_dict:
            return (feature_maps,) + ((hidden_states,) if hidden_states is not None else ())
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states)
