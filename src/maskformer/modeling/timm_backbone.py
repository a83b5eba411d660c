"""A ``timm`` image model as the MaskFormer backbone (the optional extra ``maskformer[timm]``).

``timm.create_model(name, features_only=True, out_indices=..., pretrained=...)`` gives a module
returning one map per level and a ``feature_info`` with each level's channels and stride
("reduction"). The pixel decoder's FPN is built from those channels, finest level first.

* Hierarchical models (ResNet, ConvNeXt, Swin, PVT, EfficientViT, ...): the levels are used as
  they are; by default those at stride >= 4 (the FPN's finest map sets the mask resolution).
  Channels-last outputs (timm's Swin) are turned to ``(batch, channels, height, width)``.
* Plain ViTs (every level at one stride ``s``, e.g. 16), or a single level asked for with
  ``out_indices``: the last level becomes a pyramid at
  strides ``s/4, s/2, s, 2s`` with ViTDet's simple feature pyramid: two stride-2 transposed
  convolutions (norm and GELU between), one, identity, and 2x2 max pooling.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from maskformer.configuration import TimmBackboneConfig
from maskformer.modeling.initialization import init_enabled
from maskformer.modeling.outputs import BackboneOutput

INSTALL_HINT = "pip install 'maskformer[timm]'"


def import_timm() -> Any:
    """The ``timm`` module, or ``ImportError`` in one line saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ImportError(f"timm backbones need the timm package: {INSTALL_HINT}") from None
    except Exception as error:  # e.g. a torchvision built for another torch
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ImportError(
            f"timm is installed but cannot be imported ({type(error).__name__}: {first_line}); "
            "it needs a torchvision built for this torch"
        ) from None
    return timm


def backbone_config_from_spec(spec: str, **fields: Any) -> TimmBackboneConfig:
    """``"timm:NAME"`` (the CLI's ``--backbone`` value) -> a :class:`TimmBackboneConfig`.

    ``fields`` set the other config fields (``pretrained``, ``out_indices``, ``model_kwargs``).
    """
    prefix, _, name = spec.partition(":")
    if prefix != "timm" or not name:
        raise ValueError(
            f"backbone spec must look like 'timm:NAME' (e.g. timm:resnet50), got {spec!r}"
        )
    return TimmBackboneConfig(name=name, **fields)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of ``(batch, channels, height, width)`` maps."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class SimpleFeaturePyramid(nn.Module):
    """One ``(batch, C, h, w)`` map at stride ``s`` -> maps at strides ``s/4, s/2, s, 2s`` with
    ``C/4, C/2, C, C`` channels (ViTDet's simple pyramid, before its output convolutions, which
    the FPN's lateral projections take the place of)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half, quarter = max(channels // 2, 1), max(channels // 4, 1)
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(channels, half, kernel_size=2, stride=2),
            LayerNorm2d(half),
            nn.GELU(),
            nn.ConvTranspose2d(half, quarter, kernel_size=2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(channels, half, kernel_size=2, stride=2)
        self.down2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.channels = [quarter, half, channels, channels]

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.up4(x), self.up2(x), x, self.down2(x)]


def _is_channels_last(module: nn.Module) -> bool:
    fmt = getattr(module, "output_fmt", "NCHW")
    return str(getattr(fmt, "value", fmt)) == "NHWC"


class TimmBackbone(nn.Module):
    """A timm feature extractor returning ``(batch, C_i, H_i, W_i)`` maps, finest first.

    Attributes:
        body: the timm module (``features_only=True``).
        channels: channels of each returned map (what the pixel decoder is built from).
        strides: stride of each returned map relative to the input.
    """

    def __init__(self, config: TimmBackboneConfig) -> None:
        super().__init__()
        timm = import_timm()
        kwargs = dict(config.model_kwargs)
        if config.out_indices is not None:
            kwargs["out_indices"] = tuple(config.out_indices)
        try:
            self.body = timm.create_model(
                config.name,
                features_only=True,
                pretrained=bool(config.pretrained) and init_enabled(),  # a checkpoint's weights win
                in_chans=config.num_channels,
                **kwargs,
            )
        except RuntimeError as error:  # timm's "Unknown model (...)" and similar
            raise ValueError(f"timm cannot build backbone {config.name!r}: {error}") from None
        for module in self.body.modules():  # keep timm's own initialisation (or its weights)
            module._maskformer_initialized = True

        channels = [int(c) for c in self.body.feature_info.channels()]
        strides = [int(r) for r in self.body.feature_info.reduction()]
        self.channels_last = _is_channels_last(self.body)
        self.pyramid: SimpleFeaturePyramid | None = None
        if len(set(strides)) == 1:
            self.selected = [len(channels) - 1]
            self.pyramid = SimpleFeaturePyramid(channels[-1])
            self.channels = list(self.pyramid.channels)
            stride = strides[-1]
            scaled = (stride / 4, stride / 2, stride, stride * 2)
            self.strides = [int(s) if float(s).is_integer() else s for s in scaled]
        else:
            if any(b <= a for a, b in zip(strides, strides[1:])):
                raise ValueError(
                    f"timm backbone {config.name!r}: the levels' strides {strides} must increase "
                    "(or all be equal, as in a plain ViT)"
                )
            keep = list(range(len(strides)))
            if config.out_indices is None:  # timm's default levels, less those finer than 4
                keep = [i for i in keep if strides[i] >= 4]
            self.selected = keep
            self.channels = [channels[i] for i in self.selected]
            self.strides = [strides[i] for i in self.selected]

    def forward(
        self,
        pixel_values: Tensor,
        output_hidden_states: bool | None = False,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BackboneOutput | tuple[tuple[Tensor, ...], ...]:
        """``pixel_values`` ``(batch, channels, height, width)`` -> one map per level.

        The backbones' common signature: ``output_attentions`` is accepted and ignored (timm
        feature extractors return maps only); ``return_dict=False`` gives a tuple."""
        maps = list(self.body(pixel_values))
        if self.channels_last:
            maps = [m.permute(0, 3, 1, 2) for m in maps]
        maps = [maps[i] for i in self.selected]
        if self.pyramid is not None:
            maps = self.pyramid(maps[-1])
        output = BackboneOutput(
            feature_maps=tuple(maps), hidden_states=tuple(maps) if output_hidden_states else None
        )
        return output if return_dict is not False else output.to_tuple()
