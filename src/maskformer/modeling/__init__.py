"""The MaskFormer network: backbones, pixel decoder, transformer decoder, heads, matcher and loss."""
