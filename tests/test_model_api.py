"""The reference model API beyond forward: Swin model/backbone outputs (against the oracle), the
PreTrainedModel methods, gradient checkpointing, init_xavier_std, retain_grad on the decoder's
first hidden state, and the optimiser grouping helpers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import maskformer
from maskformer import (
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    MaskFormerModel,
    MaskFormerSwinBackbone,
    MaskFormerSwinConfig,
    MaskFormerSwinModel,
)
from maskformer.engine.train import parameter_groups
from maskformer.modeling.swin import MaskFormerSwinLayer
from maskformer.modeling.transformer_decoder import DetrDecoderLayer

ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]
SWIN = {
    "model_type": "swin",
    "embed_dim": 16,
    "depths": [2, 2, 1, 1],
    "num_heads": [1, 2, 2, 2],
    "window_size": 4,
    "out_features": ALL_STAGES,
}
RESNET = {
    "model_type": "resnet",
    "embedding_size": 8,
    "hidden_sizes": [8, 16, 16, 32],
    "depths": [1, 1, 1, 1],
    "layer_type": "bottleneck",
    "out_features": ALL_STAGES,
}
DECODER = {
    "model_type": "detr",
    "d_model": 32,
    "decoder_attention_heads": 2,
    "decoder_ffn_dim": 64,
    "decoder_layers": 2,
    "num_queries": 5,
}
# Swin on the same weights and inputs as the oracle: the fused attention and our window gather
# re-order float32 sums; activations are O(1-10) through a handful of blocks, so differences stay
# at ~1e-6; 1e-4 (the parity tests' bound) still catches any layout or weight mistake (>1e-2).
PARITY_TOLERANCE = 1e-4


def config(backbone: dict | None = None, **overrides) -> MaskFormerConfig:
    return MaskFormerConfig(
        backbone_config=dict(backbone or SWIN),
        decoder_config=dict(DECODER),
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=3,
        **overrides,
    )


def swin_config(**overrides) -> MaskFormerSwinConfig:
    values = {**SWIN, **overrides}
    values.pop("model_type")
    return MaskFormerSwinConfig(**values)


def labels(batch: int, height: int, width: int) -> dict:
    masks = torch.zeros(2, height, width)
    masks[0, : height // 2] = 1
    masks[1, height // 2 :] = 1
    return {"mask_labels": [masks] * batch, "class_labels": [torch.tensor([0, 2])] * batch}


# ----------------------------------------------------------------------------- exports


def test_every_top_level_maskformer_name_of_the_reference_is_exported(hf):
    reference_names = {name for name in dir(hf) if name.startswith("MaskFormer")}
    missing = sorted(name for name in reference_names if not hasattr(maskformer, name))
    assert missing == []
    assert "MaskFormerSwinBackbone" in maskformer.__all__


# ----------------------------------------------------------------------------- Swin vs oracle


def swin_pair(hf, **overrides):
    values = {k: v for k, v in {**SWIN, **overrides}.items() if k != "model_type"}
    reference_config = hf.MaskFormerSwinConfig(**values)
    ours_config = MaskFormerSwinConfig(**values)
    torch.manual_seed(0)
    reference = hf.MaskFormerSwinBackbone(reference_config).eval()
    ours = MaskFormerSwinBackbone(ours_config).eval()
    with torch.no_grad():  # non-trivial norms and bias tables, so a wrong mapping shows
        for parameter in reference.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=False)
    assert not unexpected and not missing
    return reference, ours


def assert_nested_close(ours, reference) -> None:
    if isinstance(reference, torch.Tensor):
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours, reference, atol=PARITY_TOLERANCE, rtol=PARITY_TOLERANCE)
        return
    assert isinstance(ours, tuple) and len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert_nested_close(a, b)


def test_swin_backbone_outputs_match_the_oracle(hf):
    reference, ours = swin_pair(hf)
    x = torch.randn(2, 3, 70, 50)  # odd map sizes: padding at every stage, shifted windows
    with torch.no_grad():
        expected = reference(x, output_hidden_states=True)
        got = ours(x, output_hidden_states=True)
        as_tuple = ours(x, output_hidden_states=True, return_dict=False)
    assert type(got).__name__ == "BackboneOutput"
    assert_nested_close(got.feature_maps, expected.feature_maps)
    # The reference layout: embeddings, then per stage every block's input and output tokens.
    assert_nested_close(got.hidden_states, expected.hidden_states)
    assert got.attentions is None and expected.attentions is None
    assert len(as_tuple) == 2
    assert_nested_close(as_tuple[0], expected.feature_maps)


def test_swin_model_outputs_match_the_oracle(hf):
    reference, ours = swin_pair(hf)
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        ours.model.layernorm.weight.copy_(reference.model.layernorm.weight)
        expected = reference.model(x, output_hidden_states=True)
        got = ours.model(x, output_hidden_states=True)
        plain = ours.model(x)
    assert type(got).__name__ == "MaskFormerSwinModelOutputWithPooling"
    assert_nested_close(got.last_hidden_state, expected.last_hidden_state)
    assert_nested_close(got.pooler_output, expected.pooler_output)
    assert_nested_close(got.hidden_states, expected.hidden_states)
    assert got.hidden_states_spatial_dimensions == tuple(
        tuple(d) for d in expected.hidden_states_spatial_dimensions
    )
    assert plain.hidden_states is None and plain.attentions is None
    assert isinstance(ours.get_input_embeddings(), nn.Module)
    assert ours.get_input_embeddings() is ours.model.embeddings.patch_embeddings


def test_swin_attentions_are_the_window_attention_probabilities():
    backbone = MaskFormerSwinBackbone(swin_config()).eval()
    with torch.no_grad():
        output = backbone(torch.randn(2, 3, 36, 28), output_attentions=True)
        plain = backbone(torch.randn(2, 3, 36, 28))
    # One map per block: (batch * windows, heads, N, N) with N = 16 tokens per 4x4 window.
    assert len(output.attentions) == sum(SWIN["depths"])
    first = output.attentions[0]  # stage 1 map 9x7 -> padded 12x8 -> 3*2 windows
    assert first.shape == (2 * 6, 1, 16, 16)
    sums = torch.stack([a.sum(-1).flatten() for a in output.attentions[:1]])
    torch.testing.assert_close(sums, torch.ones_like(sums))  # softmax rows
    # The explicit-softmax path gives the same features as the fused path.
    with torch.no_grad():
        x = torch.randn(1, 3, 36, 28)
        fused = backbone(x).feature_maps
        explicit = backbone(x, output_attentions=True).feature_maps
    assert_nested_close(explicit, fused)
    assert plain.attentions is None


def test_swin_head_mask_is_refused():
    model = MaskFormerSwinModel(swin_config())
    with pytest.raises(ValueError, match="head_mask"):
        model(torch.randn(1, 3, 32, 32), head_mask=torch.ones(2))


# ----------------------------------------------------------------------------- model methods


def test_reference_model_methods():
    model = MaskFormerForInstanceSegmentation(config()).eval()
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert buffers > 0  # the relative position indices
    assert model.get_memory_footprint() == parameters + buffers
    assert model.get_memory_footprint(return_buffers=False) == parameters
    assert model.can_generate() is False and MaskFormerModel.can_generate() is False
    assert model.base_model is model.model and model.model.base_model is model.model
    with pytest.raises(NotImplementedError):
        model.get_input_embeddings()
    with pytest.raises(NotImplementedError):
        model.model.get_input_embeddings()
    assert model.get_output_embeddings() is None
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.tie_weights()
    model.init_weights()  # every module is initialised already: nothing changes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.supports_gradient_checkpointing is True
    assert callable(model.push_to_hub)


def test_push_to_hub_offline_names_the_repository(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = MaskFormerModel(config())
    with pytest.raises(OSError, match="someone/maskformer"):
        model.push_to_hub("someone/maskformer")


def test_decoder_hidden_state_zero_retains_grad():
    model = MaskFormerForInstanceSegmentation(config()).train()
    outputs = model(torch.randn(1, 3, 64, 64), output_hidden_states=True, **labels(1, 64, 64))
    first = outputs.transformer_decoder_hidden_states[0]
    first.retain_grad()
    outputs.loss.backward()
    assert first.grad is not None and first.grad.shape == first.shape
    assert first.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- initialisation


def xavier_weights(model: MaskFormerForInstanceSegmentation) -> dict[str, torch.Tensor]:
    """The weights the reference initialises with xavier_uniform(gain=init_xavier_std)."""
    fpn = model.model.pixel_level_module.decoder.fpn
    weights = {"fpn.stem": fpn.stem[0].weight}
    for index, layer in enumerate(fpn.layers):
        weights[f"fpn.layers.{index}.proj"] = layer.proj[0].weight
        weights[f"fpn.layers.{index}.block"] = layer.block[0].weight
    for index, block in enumerate(model.mask_embedder):
        weights[f"mask_embedder.{index}"] = block[0].weight
    weights["input_projection"] = model.model.transformer_module.input_projection.weight
    return weights


@pytest.mark.parametrize("gain", [0.25, 1.0, 2.0])
def test_init_xavier_std_is_the_xavier_gain(gain):
    model = MaskFormerForInstanceSegmentation(config(init_xavier_std=gain))
    for name, weight in xavier_weights(model).items():
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        # U(-b, b): every value within the bound, and the sample std near b / sqrt(3). The sample
        # std of n uniform values has relative standard error sqrt(Var(x^2)) / (2 E[x^2] sqrt(n))
        # = (sqrt(4/45) * 3 / 2) / sqrt(n) ~= 0.447 / sqrt(n); allow six of those.
        n = weight.numel()
        assert weight.abs().max() <= bound, name
        relative_error = abs(weight.std().item() / (bound / math.sqrt(3)) - 1)
        assert relative_error < 6 * 0.447 / math.sqrt(n), (name, n, relative_error)
    # Not xavier in the reference: the class head and the mask projection keep normal(init_std).
    assert model.class_predictor.weight.std().item() == pytest.approx(0.02, rel=0.2)
    mask_projection = model.model.pixel_level_module.decoder.mask_projection.weight
    assert mask_projection.std().item() == pytest.approx(0.02, rel=0.1)


# ----------------------------------------------------------------------------- checkpointing


def loss_and_gradients(model, x, batch_labels, seed: int) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout / drop-path draws on both runs
    loss = model(x, **batch_labels).loss
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize("backbone", [SWIN, RESNET], ids=["swin", "resnet"])
def test_gradient_checkpointing_gives_the_same_gradients(backbone):
    dropout = {"dropout": 0.1} if backbone is SWIN else {}
    model = MaskFormerForInstanceSegmentation(
        MaskFormerConfig(
            backbone_config={**backbone, "drop_path_rate": 0.2} if backbone is SWIN else backbone,
            decoder_config={**DECODER, **dropout},
            fpn_feature_size=32,
            mask_feature_size=32,
            num_labels=3,
        )
    ).train()
    x = torch.randn(2, 3, 40, 36)
    batch_labels = labels(2, 40, 36)
    loss, gradients = loss_and_gradients(model, x, batch_labels, seed=3)

    calls = {"decoder": 0, "swin": 0}

    def count(kind):
        def hook(module, args):
            calls[kind] += 1

        return hook

    for module in model.modules():
        if isinstance(module, DetrDecoderLayer):
            module.register_forward_pre_hook(count("decoder"))
        if isinstance(module, MaskFormerSwinLayer):
            module.register_forward_pre_hook(count("swin"))

    assert not model.is_gradient_checkpointing
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checkpointed_loss, checkpointed = loss_and_gradients(model, x, batch_labels, seed=3)
    # Real checkpointing: every layer ran twice (forward, then recomputed in backward).
    assert calls["decoder"] == 2 * DECODER["decoder_layers"]
    assert calls["swin"] == (2 * sum(SWIN["depths"]) if backbone is SWIN else 0)
    # The recomputation replays the same kernels on the same inputs with the same random state,
    # so activations are identical; the backward runs the same ops, only the order in which
    # autograd sums a tensor's gradient contributions may differ: a few float32 ulps of the
    # largest contribution, i.e. <= 1e-6 relative to each gradient's scale.
    assert checkpointed_loss == loss
    assert gradients.keys() == checkpointed.keys()
    for name, gradient in gradients.items():
        scale = gradient.abs().max().item()
        torch.testing.assert_close(
            checkpointed[name], gradient, atol=1e-6 * scale + 1e-12, rtol=0, msg=name
        )
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    with torch.no_grad():  # no checkpointing without autograd, nor in eval mode
        model(x)
    assert calls["decoder"] == 3 * DECODER["decoder_layers"]


def test_gradient_checkpointing_kwargs_are_checked():
    model = MaskFormerModel(config())
    with pytest.raises(TypeError, match="gradient_checkpointing_kwargs"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=["use_reentrant"])
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_gradient_checkpointing


# ----------------------------------------------------------------------------- optimiser grouping


@pytest.mark.parametrize("backbone", [SWIN, RESNET], ids=["swin", "resnet"])
def test_no_weight_decay_and_backbone_names_match_parameter_groups(backbone):
    model = MaskFormerForInstanceSegmentation(config(backbone))
    groups = parameter_groups(model, 1.0, 0.05, 0.1)
    by_group = {group["name"]: set(group["parameter_names"]) for group in groups}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    no_decay = model.no_weight_decay()
    backbone_names = model.backbone_parameter_names()
    assert no_decay & trainable == by_group.get("head_no_decay", set()) | by_group.get(
        "backbone_no_decay", set()
    )
    assert backbone_names & trainable == by_group.get("backbone_decay", set()) | by_group.get(
        "backbone_no_decay", set()
    )
    assert "model.transformer_module.queries_embedder.weight" in no_decay
    assert "class_predictor.bias" not in no_decay  # other biases keep weight decay
    assert all(name.startswith("model.pixel_level_module.encoder.") for name in backbone_names)
    if backbone is SWIN:
        assert any(name.endswith("relative_position_bias_table") for name in no_decay)
    # The bare model names its parameters without the "model." prefix.
    bare = MaskFormerModel(config(backbone))
    assert bare.backbone_parameter_names() == {
        name.removeprefix("model.") for name in backbone_names
    }
