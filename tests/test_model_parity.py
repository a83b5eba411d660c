"""Numerical parity of the model with transformers 4.34.1 (same weights, same inputs)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import SHARED_REFERENCE, requires_shared_reference

from maskformer.configuration import MaskFormerConfig
from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation, MaskFormerModel

TOLERANCE = 1e-4
ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]
SMALL_DECODER = {
    "model_type": "detr",
    "d_model": 64,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 128,
    "decoder_layers": 3,
    "encoder_attention_heads": 4,
    "encoder_layers": 2,
    "num_queries": 10,
}
SMALL_HEADS = {"fpn_feature_size": 64, "mask_feature_size": 64, "num_labels": 5}

SWIN_SHIFTED = {
    "backbone_config": {
        "model_type": "swin",
        "embed_dim": 32,
        "depths": [2, 2, 2, 2],
        "num_heads": [1, 2, 2, 4],
        "window_size": 7,
        "out_features": ALL_STAGES,
    },
    "decoder_config": SMALL_DECODER,
    **SMALL_HEADS,
}
RESNET_BOTTLENECK = {
    "backbone_config": {
        "model_type": "resnet",
        "embedding_size": 16,
        "hidden_sizes": [32, 64, 128, 256],
        "depths": [2, 1, 2, 1],
        "layer_type": "bottleneck",
        "out_features": ALL_STAGES,
    },
    "decoder_config": SMALL_DECODER,
    **SMALL_HEADS,
}
RESNET_BASIC = {
    "backbone_config": {
        "model_type": "resnet",
        "embedding_size": 16,
        "hidden_sizes": [16, 32, 64, 64],
        "depths": [2, 1, 2, 1],
        "layer_type": "basic",
        "out_features": ALL_STAGES,
    },
    "decoder_config": SMALL_DECODER,
    **SMALL_HEADS,
}
MASKFORMER_SWIN_DECODER_AUX = {
    "backbone_config": {
        "model_type": "maskformer-swin",
        "embed_dim": 32,
        "depths": [1, 2, 1, 2],
        "num_heads": [1, 2, 2, 4],
        "window_size": 5,
        "out_features": ALL_STAGES,
    },
    # decoder_config.auxiliary_loss changes inference in the reference (kept for parity).
    "decoder_config": {**SMALL_DECODER, "auxiliary_loss": True},
    **SMALL_HEADS,
}


def small_config_dict() -> dict:
    return json.loads((SHARED_REFERENCE / "hf_config_small.json").read_text())


def build_pair(hf, config_dict: dict, head: bool = True):
    """The reference model and ours with identical (perturbed, so norms are non-trivial) weights."""
    torch.manual_seed(0)
    hf_class = hf.MaskFormerForInstanceSegmentation if head else hf.MaskFormerModel
    ours_class = MaskFormerForInstanceSegmentation if head else MaskFormerModel
    reference = hf_class(hf.MaskFormerConfig.from_dict(copy.deepcopy(config_dict))).eval()
    generator = torch.Generator().manual_seed(1)
    state_dict = reference.state_dict()
    with torch.no_grad():
        for tensor in state_dict.values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    reference.load_state_dict(state_dict)
    ours = ours_class(MaskFormerConfig.from_dict(copy.deepcopy(config_dict))).eval()
    ours.load_state_dict(state_dict, strict=True)
    return reference, ours


def assert_outputs_close(reference_output, our_output, tolerance: float = TOLERANCE) -> None:
    assert list(reference_output.keys()) == list(our_output.keys())
    for key in reference_output:
        expected, actual = reference_output[key], our_output[key]
        if isinstance(expected, torch.Tensor):
            assert expected.shape == actual.shape, key
            assert (expected - actual).abs().max().item() < tolerance, key
        else:
            assert len(expected) == len(actual), key
            for index, (e, a) in enumerate(zip(expected, actual)):
                assert e.shape == a.shape, (key, index)
                assert (e - a).abs().max().item() < tolerance, (key, index)


@requires_shared_reference
def test_state_dict_names_match_reference_listing():
    listing = (SHARED_REFERENCE / "hf_state_dict_keys_small.txt").read_text().splitlines()
    expected = {}
    for line in listing:
        if line and not line.startswith("#"):
            name, _, dtype, shape = line.split(" ", 3)
            expected[name] = json.loads(shape)
    model = MaskFormerForInstanceSegmentation(MaskFormerConfig.from_dict(small_config_dict()))
    ours = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == expected


@requires_shared_reference
def test_small_config_parity_all_outputs(hf):
    reference, ours = build_pair(hf, small_config_dict())
    pixel_values = torch.randn(2, 3, 70, 50)
    with torch.no_grad():
        expected = reference(pixel_values, output_hidden_states=True, output_attentions=True)
        actual = ours(pixel_values, output_hidden_states=True, output_attentions=True)
    assert actual.masks_queries_logits.shape == (2, 10, 18, 13)
    assert_outputs_close(expected, actual)


@pytest.mark.parametrize(
    "config_dict",
    [SWIN_SHIFTED, RESNET_BOTTLENECK, RESNET_BASIC, MASKFORMER_SWIN_DECODER_AUX],
    ids=["swin-shifted", "resnet-bottleneck", "resnet-basic", "maskformer-swin-decoder-aux"],
)
def test_parity_odd_input_with_hidden_states(hf, config_dict):
    reference, ours = build_pair(hf, config_dict)
    pixel_values = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        expected = reference(pixel_values, output_hidden_states=True)
        actual = ours(pixel_values, output_hidden_states=True)
    assert len(actual.encoder_hidden_states) == 4
    assert len(actual.transformer_decoder_hidden_states) == SMALL_DECODER["decoder_layers"] + 1
    assert_outputs_close(expected, actual)


def test_return_dict_false_tuples_match(hf):
    reference, ours = build_pair(hf, SWIN_SHIFTED)
    pixel_values = torch.randn(1, 3, 64, 96)
    for kwargs in ({}, {"output_hidden_states": True}, {"output_attentions": True}):
        with torch.no_grad():
            expected = reference(pixel_values, return_dict=False, **kwargs)
            actual = ours(pixel_values, return_dict=False, **kwargs)
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for e, a in zip(expected, actual):
            if isinstance(e, torch.Tensor):
                assert (e - a).abs().max().item() < TOLERANCE
            else:
                assert len(e) == len(a)
                assert all((x - y).abs().max().item() < TOLERANCE for x, y in zip(e, a))
    with torch.no_grad():
        assert len(ours(pixel_values, return_dict=False)) == 5


def test_base_model_parity(hf):
    reference, ours = build_pair(hf, SWIN_SHIFTED, head=False)
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(pixel_values, output_hidden_states=True, output_attentions=True)
        actual = ours(pixel_values, output_hidden_states=True, output_attentions=True)
    assert_outputs_close(expected, actual)
    with torch.no_grad():
        expected_tuple = reference(pixel_values, return_dict=False)
        actual_tuple = ours(pixel_values, return_dict=False)
    assert len(expected_tuple) == len(actual_tuple) == 3


def test_auxiliary_logits_are_layernormed_intermediate_layers(hf):
    """Our auxiliary sets are the heads applied to layernorm(output of layer l), l < L-1."""
    config_dict = {**SWIN_SHIFTED, "use_auxiliary_loss": True}
    reference, ours = build_pair(hf, config_dict)
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(pixel_values, output_hidden_states=True)
        actual = ours(pixel_values, output_auxiliary_logits=True)  # no output_hidden_states needed
        layernorm = reference.model.transformer_module.decoder.layernorm
        pixel_embeddings = expected.pixel_decoder_last_hidden_state
        layers = SMALL_DECODER["decoder_layers"]
        assert len(actual.auxiliary_logits) == layers - 1
        for index, auxiliary in enumerate(actual.auxiliary_logits):
            # transformer_decoder_hidden_states[l + 1] is the raw output of layer l (l < L-1).
            normed = layernorm(expected.transformer_decoder_hidden_states[index + 1])
            classes = reference.class_predictor(normed)
            masks = torch.einsum(
                "bqc,bchw->bqhw", reference.mask_embedder(normed), pixel_embeddings
            )
            assert (auxiliary["class_queries_logits"] - classes).abs().max() < TOLERANCE
            assert (auxiliary["masks_queries_logits"] - masks).abs().max() < TOLERANCE
    # the main outputs are unaffected by the auxiliary path
    assert (actual.class_queries_logits - expected.class_queries_logits).abs().max() < TOLERANCE
    assert (actual.masks_queries_logits - expected.masks_queries_logits).abs().max() < TOLERANCE


def test_gradients_match_reference(hf):
    """Backward through the fast attention paths gives the reference's parameter gradients."""
    reference, ours = build_pair(hf, SWIN_SHIFTED)
    pixel_values = torch.randn(1, 3, 45, 70)
    reference.model.pixel_level_module.encoder.model.layernorm.requires_grad_(False)
    for model in (reference, ours):
        model.zero_grad()
        output = model(pixel_values)
        (output.masks_queries_logits.square().mean() + output.class_queries_logits.sum()).backward()
    reference_grads = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        if parameter.grad is None:
            continue
        expected = reference_grads[name].grad
        # absolute floor: some gradients (e.g. key biases) are zero up to rounding
        allowed = 1e-3 * expected.abs().max().item() + 1e-6
        assert (parameter.grad - expected).abs().max().item() < allowed, name
