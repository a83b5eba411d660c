"""Drop-in details that transformers' own MaskFormer tests rely on: foreign sub-config objects,
the old gradient-checkpointing config flag, class attributes, the Swin backbone's bookkeeping and
the module-level RLE helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskformer import (
    MaskFormerConfig,
    MaskFormerModel,
    MaskFormerSwinBackbone,
    MaskFormerSwinConfig,
    binary_mask_to_rle,
    convert_segmentation_to_rle,
)
from maskformer.presets import get_preset


def test_transformers_sub_configs_are_accepted(hf) -> None:
    swin = hf.SwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    detr = hf.DetrConfig(decoder_layers=2, d_model=32, num_queries=5)
    for config in (
        MaskFormerConfig(backbone_config=swin, decoder_config=detr),
        MaskFormerConfig.from_backbone_and_decoder_configs(swin, detr),
    ):
        assert type(config.backbone_config).__name__ == "SwinConfig"
        assert config.backbone_config.embed_dim == 16 and config.decoder_config.decoder_layers == 2
        assert config.backbone_config.__module__.startswith("maskformer")
        MaskFormerModel(config)  # builds


def test_old_gradient_checkpointing_flag_turns_it_on_and_is_dropped() -> None:
    config = get_preset("tiny-swin")
    config.gradient_checkpointing = True
    model = MaskFormerModel(config)
    assert model.is_gradient_checkpointing
    assert not hasattr(model.config, "gradient_checkpointing")
    assert MaskFormerModel._tied_weights_keys is None


def test_swin_backbone_bookkeeping_lists_the_stem_first() -> None:
    config = MaskFormerSwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
        out_features=["stage2", "stage4"],
    )  # fmt: skip
    backbone = MaskFormerSwinBackbone(config)
    assert backbone.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert backbone.num_features == [16, 16, 32, 64, 128]
    indices = [backbone.stage_names.index(name) for name in config.out_features]
    assert backbone.channels == [backbone.num_features[i] for i in indices] == [32, 128]
    assert backbone.out_feature_channels["stage4"] == 128
    assert backbone.backbone_type == "transformers"
    maps = backbone(torch.randn(1, 3, 64, 64)).feature_maps
    assert [m.shape[1] for m in maps] == backbone.channels


def test_rle_helpers_equal_the_reference(hf) -> None:
    from transformers.models.maskformer import image_processing_maskformer as reference

    generator = np.random.default_rng(0)
    for _ in range(30):
        mask = generator.integers(0, 2, tuple(generator.integers(1, 9, 2)))
        assert binary_mask_to_rle(mask) == list(reference.binary_mask_to_rle(mask))
        ids = torch.from_numpy(generator.integers(0, 4, (5, 6)))
        expected = [list(r) for r in reference.convert_segmentation_to_rle(ids)]
        assert convert_segmentation_to_rle(ids) == expected


@pytest.mark.parametrize("mask", [np.zeros((3, 4)), np.ones((3, 4))])
def test_rle_of_empty_and_full_masks(mask) -> None:
    assert binary_mask_to_rle(mask) == ([] if mask.sum() == 0 else [1, 12])


@pytest.mark.parametrize("cls", [MaskFormerSwinBackbone, "MaskFormerSwinModel"])
def test_swin_classes_save_and_load(cls, tmp_path) -> None:
    import maskformer

    cls = getattr(maskformer, cls) if isinstance(cls, str) else cls
    config = MaskFormerSwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    model = cls(config).eval()
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(
            torch.equal(a, b)
            for a, b in zip(model(pixels).to_tuple()[0], loaded(pixels).to_tuple()[0])
        )
    assert type(loaded.config) is MaskFormerSwinConfig
