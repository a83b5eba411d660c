"""Real-size presets (Swin-B ADE = the default config, Swin-T ADE) against the reference.

Each preset is built once per module: the reference model with its own random init, ours built
without init and given the reference's weights.
"""

from __future__ import annotations

import json

import pytest
import torch

from maskformer.configuration import MaskFormerConfig
from maskformer.modeling.initialization import no_init_weights
from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation

pytestmark = pytest.mark.slow

SWIN_TINY_ADE = {
    "backbone_config": {
        "model_type": "swin",
        "embed_dim": 96,
        "depths": [2, 2, 6, 2],
        "num_heads": [3, 6, 12, 24],
        "window_size": 7,
        "image_size": 224,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
    "num_labels": 150,
}
PRESETS = {"swin-base-ade": {"num_labels": 150}, "swin-tiny-ade": SWIN_TINY_ADE}


@pytest.fixture(scope="module", params=sorted(PRESETS))
def preset(request, hf):
    kwargs = PRESETS[request.param]
    torch.manual_seed(0)
    reference = hf.MaskFormerForInstanceSegmentation(
        hf.MaskFormerConfig(**json.loads(json.dumps(kwargs)))
    ).eval()
    with no_init_weights():
        ours = MaskFormerForInstanceSegmentation(MaskFormerConfig(**json.loads(json.dumps(kwargs))))
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval()
    pixel_values = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(pixel_values)
    return request.param, reference, ours, pixel_values, expected


def test_preset_matches_reference_on_384_input(preset):
    name, reference, ours, pixel_values, expected = preset
    with torch.no_grad():
        actual = ours(pixel_values)
    assert actual.masks_queries_logits.shape == (1, 100, 96, 96)
    assert actual.class_queries_logits.shape == (1, 100, 151)
    for key in expected:
        assert (expected[key] - actual[key]).abs().max().item() < 1e-4, (name, key)


def test_preset_round_trips_through_both_libraries(preset, hf, tmp_path):
    name, reference, ours, pixel_values, expected = preset
    ours.save_pretrained(tmp_path)
    config_text = json.loads((tmp_path / "config.json").read_text())
    assert config_text["backbone_config"]["model_type"] == "swin"
    loaded_by_reference = hf.MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    reference_state = loaded_by_reference.state_dict()
    for key, tensor in ours.state_dict().items():
        assert torch.equal(reference_state[key], tensor), key
    loaded_by_us = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    reloaded_config = json.loads(loaded_by_us.config.to_json_string())
    assert reloaded_config.pop("_name_or_path") == str(tmp_path)
    assert reloaded_config == config_text
    for key, tensor in loaded_by_us.state_dict().items():
        assert torch.equal(reference_state[key], tensor), key


def test_default_config_builds_swin_base():
    config = MaskFormerConfig()
    with no_init_weights():
        model = MaskFormerForInstanceSegmentation(config)
    assert model.config.backbone_config.embed_dim == 128
    assert model.model.pixel_level_module.encoder.channels == [128, 256, 512, 1024]
    assert len(model.model.transformer_module.decoder.layers) == 6
