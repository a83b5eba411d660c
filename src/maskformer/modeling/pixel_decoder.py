"""Pixel decoder: a feature pyramid (FPN) over the backbone maps and the mask projection.

Given backbone maps ``[f1, f2, f3, f4]`` (strides 4..32), the stem convolves ``f4``; each FPN
layer upsamples the running map (nearest) to the next lateral's size, adds the projected lateral
(``f3``, then ``f2``, then ``f1``) and convolves. The stride-4 result is projected to the mask
feature size: the per-pixel embeddings the mask logits are computed against.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from maskformer.modeling.outputs import MaskFormerPixelDecoderOutput


class MaskFormerFPNConvLayer(nn.Sequential):
    """Conv ``k x k`` (no bias) -> GroupNorm(32) -> ReLU; children named "0", "1", "2"."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2, bias=False),
            nn.GroupNorm(32, out_features),
            nn.ReLU(inplace=True),
        )


class MaskFormerFPNLayer(nn.Module):
    def __init__(self, in_features: int, lateral_features: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(lateral_features, in_features, kernel_size=1, bias=False),
            nn.GroupNorm(32, in_features),
        )
        self.block = MaskFormerFPNConvLayer(in_features, in_features)

    def forward(self, down: Tensor, lateral: Tensor) -> Tensor:
        """``down`` ``(batch, F, h, w)`` coarser map; ``lateral`` ``(batch, C, H, W)`` -> ``(batch, F, H, W)``."""
        lateral = self.proj(lateral)
        down = F.interpolate(down, size=lateral.shape[-2:], mode="nearest")
        return self.block(down + lateral)


class MaskFormerFPNModel(nn.Module):
    def __init__(
        self, in_features: int, lateral_widths: list[int], feature_size: int = 256
    ) -> None:
        super().__init__()
        self.stem = MaskFormerFPNConvLayer(in_features, feature_size)
        self.layers = nn.ModuleList(
            MaskFormerFPNLayer(feature_size, width) for width in reversed(lateral_widths)
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """``features`` in stride order -> one ``(batch, F, H_i, W_i)`` map per lateral, coarse to fine."""
        outputs = []
        hidden = self.stem(features[-1])
        for layer, lateral in zip(self.layers, reversed(features[:-1])):
            hidden = layer(hidden, lateral)
            outputs.append(hidden)
        return outputs


class MaskFormerPixelDecoder(nn.Module):
    def __init__(
        self, in_features: int, lateral_widths: list[int], feature_size: int, mask_feature_size: int
    ) -> None:
        super().__init__()
        self.fpn = MaskFormerFPNModel(in_features, lateral_widths, feature_size)
        self.mask_projection = nn.Conv2d(feature_size, mask_feature_size, kernel_size=3, padding=1)

    def forward(
        self, features: list[Tensor], output_hidden_states: bool = False
    ) -> MaskFormerPixelDecoderOutput:
        """``features``: backbone maps in stride order, each ``(batch, C_i, H_i, W_i)`` ->
        mask features ``(batch, mask_feature_size, H_0, W_0)`` at the finest map's size."""
        if self.training:
            # Swin maps arrive channels_last; that suits the convolutions, but GroupNorm's
            # backward on channels_last is slow on CPU, so training runs the FPN in NCHW. (A
            # module flag, not the grad mode, decides: traces must not depend on the grad mode.)
            features = [feature.contiguous() for feature in features]
        fpn_features = self.fpn(features)
        return MaskFormerPixelDecoderOutput(
            last_hidden_state=self.mask_projection(fpn_features[-1]),
            hidden_states=tuple(fpn_features) if output_hidden_states else (),
        )
