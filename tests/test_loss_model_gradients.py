"""Gradients through the whole model equal those of transformers 4.34.1 (aux loss off).

Both models share one state dict and get the same pixels and targets (no ignore pixels); after
`loss.backward()` the gradients of the class head, a decoder layer and a backbone stage must agree
within 1e-4 relative.

Tolerances: both sides compute the same float32 functions with different kernels (fused
query/key/value, scaled-dot-product attention, batched mask logits), so they differ by summation
order only. The longest reductions sum 2 x 64 x 96 = 12,288 terms: sqrt(n) * u = 110 * 6e-8 =
7e-6 relative each, compounded over a few layers; gradients are compared norm-wise (element-wise
entries that cancel to ~0 carry rounding of their summands' size) at 1e-4, the loss at 1e-5.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED_REFERENCE, requires_shared_reference

PARAMETERS = [
    "class_predictor.weight",
    "class_predictor.bias",
    "model.transformer_module.decoder.layers.1.fc1.weight",
    "model.transformer_module.decoder.layers.0.encoder_attn.q_proj.weight",
    "model.pixel_level_module.encoder.model.encoder.layers.1.blocks.0.attention.self.query.weight",
    "model.pixel_level_module.encoder.model.encoder.layers.2.blocks.0.output.dense.weight",
]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).norm() / expected.norm().clamp_min(1e-12)).item()


@requires_shared_reference
def test_gradients_match_reference(hf):
    ours_module = pytest.importorskip("maskformer.modeling.maskformer")
    from transformers import MaskFormerConfig as ReferenceConfig
    from transformers import MaskFormerForInstanceSegmentation as ReferenceModel

    from maskformer.configuration import MaskFormerConfig

    config_text = (SHARED_REFERENCE / "hf_config_small.json").read_text()
    # A fresh dict for each: the reference config pops keys from nested dicts it is given.
    reference = ReferenceModel(ReferenceConfig.from_dict(json.loads(config_text))).eval()
    ours = ours_module.MaskFormerForInstanceSegmentation(
        MaskFormerConfig.from_dict(json.loads(config_text))
    ).eval()
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=False)
    assert not missing and not unexpected

    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 64, 96, generator=generator)
    mask_labels = [(torch.rand(n, 64, 96, generator=generator) > 0.7).float() for n in (3, 5)]
    class_labels = [torch.randint(0, 10, (n,), generator=generator) for n in (3, 5)]

    losses = []
    for model in (reference, ours):
        model.zero_grad()
        output = model(
            pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels
        )
        output.loss.sum().backward()
        losses.append(output.loss.detach().reshape(()))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)

    reference_params = dict(reference.named_parameters())
    our_params = dict(ours.named_parameters())
    for name in PARAMETERS:
        expected, got = reference_params[name].grad, our_params[name].grad
        assert expected is not None and expected.abs().sum() > 0, name
        assert got is not None, name
        assert relative_error(got, expected) < 1e-4, name
