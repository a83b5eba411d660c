"""MaskFormerConfig and the nested configs: defaults, JSON files, validation, reference parity."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import SHARED_REFERENCE, requires_shared_reference

from maskformer.configuration import (
    DetrConfig,
    MaskFormerConfig,
    MaskFormerSwinConfig,
    ResNetConfig,
    SwinConfig,
)

ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]
SWIN_TINY = {
    "model_type": "swin",
    "embed_dim": 96,
    "depths": [2, 2, 6, 2],
    "num_heads": [3, 6, 12, 24],
    "window_size": 7,
    "image_size": 224,
    "out_features": ALL_STAGES,
}
CONFIG_CASES = {
    "default": {},
    "labels": {"num_labels": 150},
    "swin-tiny-ade": {"backbone_config": SWIN_TINY, "num_labels": 150},
    "resnet": {
        "backbone_config": {
            "model_type": "resnet",
            "embedding_size": 16,
            "hidden_sizes": [32, 64, 128, 256],
            "depths": [1, 1, 1, 1],
            "layer_type": "basic",
            "out_features": ALL_STAGES,
        },
        "decoder_config": {"model_type": "detr", "d_model": 32, "num_queries": 5},
    },
    "converter-extras": {
        "backbone_config": {**SWIN_TINY, "pretrain_img_size": 384, "in_channels": 3},
        "ce_weight": 1.0,
        "num_queries": 5,
        "use_auxiliary_loss": True,
        "output_hidden_states": True,
        "return_dict": False,
        "torch_dtype": "float32",
        "id2label": {0: "wall", 1: "sky", 2: "floor"},
        "label2id": {"wall": 0, "sky": 1, "floor": 2},
    },
    "maskformer-swin": {
        "backbone_config": {
            "model_type": "maskformer-swin",
            "embed_dim": 32,
            "out_features": ALL_STAGES,
        }
    },
}


def reference_json(name: str) -> dict:
    return json.loads((SHARED_REFERENCE / name).read_text())


@requires_shared_reference
def test_default_config_json_equals_reference_file():
    assert json.loads(MaskFormerConfig().to_json_string()) == reference_json(
        "hf_config_default.json"
    )


@requires_shared_reference
def test_small_config_loads_and_writes_back_identically(tmp_path):
    small = reference_json("hf_config_small.json")
    (tmp_path / "config.json").write_text(json.dumps(small))
    config = MaskFormerConfig.from_pretrained(tmp_path)
    assert config.num_labels == 10 and config.id2label[3] == "LABEL_3"
    assert config.decoder_config.num_queries == 10 and config.backbone_config.window_size == 4
    config.save_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == small


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_json_and_full_dict_match_reference(hf, case):
    kwargs = CONFIG_CASES[case]
    reference = hf.MaskFormerConfig(**copy.deepcopy(kwargs))
    ours = MaskFormerConfig(**copy.deepcopy(kwargs))
    assert json.loads(ours.to_json_string()) == json.loads(reference.to_json_string())
    full_reference = json.loads(reference.to_json_string(use_diff=False))
    full_ours = json.loads(ours.to_json_string(use_diff=False))
    if full_reference.get("label2id") is None:  # the reference leaves it unset; we derive it
        full_ours["label2id"] = None
    assert full_ours == full_reference


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_reference_reads_our_files_and_we_read_its_full_files(hf, case, tmp_path):
    kwargs = CONFIG_CASES[case]
    ours = MaskFormerConfig(**copy.deepcopy(kwargs))
    ours.save_pretrained(tmp_path)
    reference = hf.MaskFormerConfig.from_pretrained(tmp_path)
    assert json.loads(reference.to_json_string()) == json.loads(ours.to_json_string())
    full = json.loads(hf.MaskFormerConfig(**copy.deepcopy(kwargs)).to_json_string(use_diff=False))
    reloaded = MaskFormerConfig.from_dict(full)
    assert json.loads(reloaded.to_json_string()) == json.loads(ours.to_json_string())


def test_converter_extras_are_kept():
    config = MaskFormerConfig(**copy.deepcopy(CONFIG_CASES["converter-extras"]))
    assert config.ce_weight == 1.0 and config.num_queries == 5
    assert config.decoder_config.num_queries == 100  # only the decoder's value counts
    assert config.backbone_config.pretrain_img_size == 384
    again = MaskFormerConfig.from_dict(json.loads(config.to_json_string()))
    assert again.backbone_config.in_channels == 3 and again.ce_weight == 1.0
    assert again.torch_dtype is torch.float32


def test_defaults_and_aliases():
    config = MaskFormerConfig()
    assert config.hidden_size == config.mask_feature_size == 256
    assert config.num_attention_heads == 8 and config.num_hidden_layers == 6
    assert config.num_labels == 2 and config.use_return_dict
    assert isinstance(config.backbone_config, SwinConfig)
    assert config.backbone_config.model_type == "swin"
    assert config.backbone_config.hidden_size == 1024
    assert config.backbone_config.num_attention_heads == [4, 8, 16, 32]
    assert isinstance(config.decoder_config, DetrConfig)
    assert config.decoder_config.hidden_size == 256
    config.hidden_size = 128
    assert config.mask_feature_size == 128
    config.num_labels = 5
    assert config.id2label == {i: f"LABEL_{i}" for i in range(5)}
    assert config.label2id["LABEL_4"] == 4
    config.return_dict = False
    assert not config.use_return_dict


def test_string_label_keys_become_ints():
    config = MaskFormerConfig.from_dict({"id2label": {"0": "a", "1": "b", "2": "c"}})
    assert config.id2label == {0: "a", 1: "b", 2: "c"}
    assert config.label2id == {"a": 0, "b": 1, "c": 2}
    assert config.num_labels == 3


def test_caller_dicts_are_not_modified():
    backbone = copy.deepcopy(SWIN_TINY)
    decoder = {"model_type": "detr", "d_model": 64}
    outer = {"backbone_config": backbone, "decoder_config": decoder}
    snapshot = copy.deepcopy(outer)
    MaskFormerConfig(**outer)
    MaskFormerConfig.from_dict(outer)
    assert outer == snapshot


def test_sub_config_validation_errors():
    with pytest.raises(ValueError, match="model_type"):
        MaskFormerConfig(backbone_config={"embed_dim": 96})
    with pytest.raises(ValueError, match="model_type"):
        MaskFormerConfig(decoder_config={"d_model": 64})
    with pytest.raises(ValueError, match=r"maskformer-swin.*resnet.*swin"):
        MaskFormerConfig(backbone_config={"model_type": "convnext"})
    with pytest.raises(ValueError, match="detr"):
        MaskFormerConfig(decoder_config={"model_type": "deformable_detr"})
    with pytest.raises(ValueError, match="detr"):
        MaskFormerConfig(decoder_config=SwinConfig())
    with pytest.raises(TypeError, match="backbone_config"):
        MaskFormerConfig(backbone_config=42)


def test_out_features_alignment():
    assert SwinConfig().out_features == ["stage4"] and SwinConfig().out_indices == [4]
    assert SwinConfig(out_indices=[1, 2]).out_features == ["stage1", "stage2"]
    assert ResNetConfig(out_features=["stage2", "stage4"]).out_indices == [2, 4]
    assert SwinConfig(out_features=["stage1"], out_indices=[1]).out_indices == [1]
    with pytest.raises(ValueError, match="do not match"):
        SwinConfig(out_features=["stage1"], out_indices=[2])
    with pytest.raises(ValueError, match="not stages"):
        SwinConfig(out_features=["stage9"])
    with pytest.raises(ValueError, match="out of range"):
        SwinConfig(out_indices=[7])
    with pytest.raises(ValueError, match="list"):
        SwinConfig(out_features="stage1")
    config = MaskFormerSwinConfig()
    config.out_features = ALL_STAGES
    assert config.out_indices == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="layer_type"):
        ResNetConfig(layer_type="wide")


def test_maskformer_swin_config_has_no_encoder_stride():
    assert "encoder_stride" not in MaskFormerSwinConfig().to_dict()
    assert SwinConfig().to_dict()["encoder_stride"] == 32
    assert MaskFormerSwinConfig().layer_norm_eps == 1e-5


def test_from_backbone_and_decoder_configs():
    backbone = SwinConfig(**{k: v for k, v in SWIN_TINY.items() if k != "model_type"})
    decoder = DetrConfig(d_model=128, num_queries=50)
    config = MaskFormerConfig.from_backbone_and_decoder_configs(backbone, decoder, num_labels=7)
    assert config.backbone_config is backbone and config.decoder_config is decoder
    assert config.num_labels == 7


def test_from_pretrained_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MaskFormerConfig.from_pretrained(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        MaskFormerConfig.from_json_file(tmp_path / "broken.json")

    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("We couldn't connect to the hub\nmore")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(
        OSError, match="maskformer-swin-base-ade.*config.json could not be fetched"
    ) as info:
        MaskFormerConfig.from_pretrained("facebook/maskformer-swin-base-ade")
    assert "\n" not in str(info.value)


def test_from_dict_overrides_and_unused_kwargs():
    config, unused = MaskFormerConfig.from_dict(
        {"mask_weight": 5.0}, dice_weight=2.0, brand_new=1, return_unused_kwargs=True
    )
    assert config.mask_weight == 5.0 and config.dice_weight == 2.0
    assert unused == {"brand_new": 1}
    config = MaskFormerConfig.from_dict({}, num_labels=4)
    assert config.num_labels == 4
