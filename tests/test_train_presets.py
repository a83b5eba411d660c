"""Named starting configurations (maskformer.presets)."""

from __future__ import annotations

import pytest
import torch

from maskformer import MaskFormerForInstanceSegmentation
from maskformer.configuration import MaskFormerConfig
from maskformer.presets import get_preset, list_presets


def test_preset_names():
    assert list_presets() == ["swin-tiny-ade", "swin-base-ade", "tiny-swin", "tiny-resnet"]


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="unknown preset 'swin-huge'.*tiny-resnet"):
        get_preset("swin-huge")


def test_swin_base_ade_is_the_reference_default_with_150_labels():
    config, default = get_preset("swin-base-ade"), MaskFormerConfig()
    assert config.num_labels == 150
    assert config.backbone_config.to_dict() == default.backbone_config.to_dict()
    assert config.decoder_config.to_dict() == default.decoder_config.to_dict()


def test_swin_tiny_ade_layout():
    backbone = get_preset("swin-tiny-ade").backbone_config
    assert (backbone.embed_dim, backbone.depths, backbone.num_heads, backbone.window_size) == (
        96,
        [2, 2, 6, 2],
        [3, 6, 12, 24],
        7,
    )
    assert backbone.out_features == ["stage1", "stage2", "stage3", "stage4"]


def test_tiny_resnet_layout():
    config = get_preset("tiny-resnet")
    backbone, decoder = config.backbone_config, config.decoder_config
    assert backbone.model_type == "resnet" and backbone.layer_type == "basic"
    assert (backbone.embedding_size, backbone.hidden_sizes, backbone.depths) == (
        16,
        [16, 32, 64, 128],
        [1, 1, 1, 1],
    )
    assert (decoder.d_model, decoder.decoder_layers, decoder.decoder_attention_heads) == (64, 2, 4)
    assert (decoder.decoder_ffn_dim, decoder.num_queries) == (128, 16)
    assert config.fpn_feature_size == config.mask_feature_size == 64


def test_overrides_reach_the_config_and_merge_into_sub_configs():
    config = get_preset(
        "tiny-swin",
        id2label={0: "a", 1: "b", 2: "c"},
        mask_weight=5.0,
        decoder_config={"num_queries": 7},
    )
    assert config.num_labels == 3 and config.id2label == {0: "a", 1: "b", 2: "c"}
    assert config.mask_weight == 5.0
    assert config.decoder_config.num_queries == 7
    assert config.decoder_config.d_model == 64  # the rest of the preset's decoder is kept
    # Each call builds a fresh config: overrides do not leak into the next one.
    assert get_preset("tiny-swin").decoder_config.num_queries == 16


def test_inconsistent_label_overrides_are_rejected():
    with pytest.raises(ValueError, match="num_labels=5 disagrees with id2label"):
        get_preset("tiny-resnet", num_labels=5, id2label={0: "a"})


@pytest.mark.parametrize("name", ["tiny-swin", "tiny-resnet"])
def test_tiny_presets_build_and_run(name):
    model = MaskFormerForInstanceSegmentation(get_preset(name, num_labels=4)).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 48))
    assert outputs.class_queries_logits.shape == (1, 16, 5)
    assert outputs.masks_queries_logits.shape == (1, 16, 16, 12)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
