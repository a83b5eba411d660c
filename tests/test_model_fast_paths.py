"""Swin fast paths stay correct: window layout, weights followed, modes; stochastic depth."""

from __future__ import annotations

import pytest
import torch

from maskformer.configuration import MaskFormerConfig
from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation
from maskformer.modeling.swin import MaskFormerSwinLayer, window_layout

ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def tiny_config(**backbone) -> MaskFormerConfig:
    backbone_config = {
        "model_type": "swin",
        "embed_dim": 16,
        "depths": [2, 2, 1, 1],
        "num_heads": [1, 2, 2, 2],
        "window_size": 4,
        "out_features": ALL_STAGES,
    }
    backbone_config.update(backbone)
    return MaskFormerConfig(
        backbone_config=backbone_config,
        decoder_config={
            "model_type": "detr",
            "d_model": 32,
            "decoder_attention_heads": 2,
            "decoder_ffn_dim": 64,
            "decoder_layers": 2,
            "num_queries": 5,
        },
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=3,
    )


def blocks(model: MaskFormerForInstanceSegmentation) -> list[MaskFormerSwinLayer]:
    return [m for m in model.modules() if isinstance(m, MaskFormerSwinLayer)]


def labels(batch: int, size: int) -> dict:
    masks = torch.zeros(2, size, size)
    masks[0, : size // 2] = 1
    masks[1, size // 2 :] = 1
    return {"mask_labels": [masks] * batch, "class_labels": [torch.tensor([0, 2])] * batch}


def test_window_layout_matches_pad_roll_partition():
    height, width, ws, shift = 9, 6, 4, 2
    layout = window_layout(height, width, ws, shift, torch.float32, torch.device("cpu"))
    values = torch.arange(1, height * width + 1, dtype=torch.float32).view(height, width)
    padded = torch.nn.functional.pad(values, (0, 2, 0, 3))  # to (12, 8)
    rolled = torch.roll(padded, shifts=(-shift, -shift), dims=(0, 1))
    expected = rolled.view(3, ws, 2, ws).permute(0, 2, 1, 3).reshape(-1)
    gathered = values.reshape(-1)[layout.gather] * layout.keep.squeeze(1)
    assert torch.equal(gathered, expected)
    assert torch.equal(gathered[layout.scatter], values.reshape(-1))
    assert layout.num_windows == 6 and layout.shift_mask.shape == (6, 1, 16, 16)


def test_outputs_follow_load_state_dict_and_optimizer_steps():
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(tiny_config()).eval()
    other = MaskFormerForInstanceSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(pixel_values).masks_queries_logits
        other_out = other(pixel_values).masks_queries_logits
        model.load_state_dict(other.state_dict())
        # Same weights, same input, same kernels: identical up to nothing.
        assert torch.equal(model(pixel_values).masks_queries_logits, other_out)
    assert not torch.allclose(before, other_out, atol=1e-4)

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(pixel_values, **labels(1, 64)).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        stepped = model(pixel_values).masks_queries_logits
        fresh = MaskFormerForInstanceSegmentation(tiny_config()).eval()
        fresh.load_state_dict(model.state_dict())
        assert torch.equal(fresh(pixel_values).masks_queries_logits, stepped)
    assert not torch.allclose(stepped, other_out, atol=1e-4)  # the step changed the outputs


def test_no_state_derived_from_weights_or_inputs():
    """A forward pass leaves every module's attributes as they were (no cache filled), and no
    module holds a tensor outside its parameters and buffers."""
    model = MaskFormerForInstanceSegmentation(tiny_config()).eval()

    def attributes() -> dict:
        return {
            (name, key): (id(value), repr(value) if not isinstance(value, torch.Tensor) else None)
            for name, module in model.named_modules()
            for key, value in vars(module).items()
            if key not in ("_parameters", "_buffers", "_modules")
        }

    before = attributes()
    with torch.no_grad():
        model(torch.randn(1, 3, 48, 40))
    with torch.inference_mode():
        model(torch.randn(2, 3, 40, 48))
    assert attributes() == before
    for name, module in model.named_modules():
        for key, value in vars(module).items():
            assert not isinstance(value, torch.Tensor), (name, key)


def test_inference_mode_run_does_not_break_later_training():
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 48, 48)
    with torch.inference_mode():
        model(pixel_values)
    model.train()
    loss = model(pixel_values, **labels(2, 48)).loss
    loss.backward()
    table = blocks(model)[1].attention.self.relative_position_bias_table
    query = blocks(model)[1].attention.self.query.weight
    assert table.grad is not None and query.grad is not None and query.grad.abs().sum() > 0


def test_drop_path_follows_the_linear_schedule():
    config = tiny_config(drop_path_rate=0.3)
    model = MaskFormerForInstanceSegmentation(config)
    rates = [block.drop_path.drop_prob for block in blocks(model)]
    expected = torch.linspace(0, 0.3, sum(config.backbone_config.depths)).tolist()
    assert rates == pytest.approx(expected)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)


def test_drop_path_drops_both_branches_in_training_only():
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(tiny_config(drop_path_rate=1.0))
    last = blocks(model)[-1]
    layout = model.model.pixel_level_module.encoder.model.encoder.layers[-1].layout
    hidden = torch.randn(2, 3, 5, 128)  # last stage: 16 * 2**3 channels
    last.train()
    # Rate 1.0: both residual branches vanish, the block is the identity.
    assert torch.equal(last(hidden, layout(hidden, last.shift_size))[0], hidden)
    last.eval()
    assert not torch.allclose(last(hidden, layout(hidden, last.shift_size))[0], hidden)


@pytest.mark.parametrize("shift", [0, 2])
def test_half_precision_attention_is_as_close_to_float64_as_the_fused_kernel(monkeypatch, shift):
    """bfloat16 window attention on CPU runs as explicit matmuls (``matmul_attention``); float32
    keeps the fused kernel. One block (padding, and the shift mask when ``shift``) runs in bfloat16 on both
    paths and in float64 on the same bfloat16-representable weights and input. Both bfloat16 runs
    round the same intermediates to 8-bit mantissas, so their errors against float64 are of one
    size; the matmul path may be at most twice the fused kernel's error plus one bfloat16 ulp of
    the output's scale (2^-8 * max|out|). A wrong mask, bias or head layout errs by O(max|out|)."""
    import copy

    from maskformer.modeling import swin

    torch.manual_seed(0)
    config = tiny_config().backbone_config
    block = MaskFormerSwinLayer(config, 16, 2, shift_size=shift, drop_path_rate=0.0).eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_((parameter + 0.3 * torch.randn_like(parameter)).bfloat16().float())
    hidden = torch.randn(2, 9, 10, 16).bfloat16()  # 9x10: padded to 12x12 windows of 4

    def run(dtype):
        layout = window_layout(9, 10, 4, shift, dtype, torch.device("cpu"))
        with torch.no_grad():
            return copy.deepcopy(block).to(dtype)(hidden.to(dtype), layout)[0].double()

    exact = run(torch.float64)
    assert swin.matmul_attention(torch.ones(1, dtype=torch.bfloat16))
    assert not swin.matmul_attention(torch.ones(1))
    matmul_error = (run(torch.bfloat16) - exact).abs().max().item()
    monkeypatch.setattr(swin, "matmul_attention", lambda query: False)
    fused_error = (run(torch.bfloat16) - exact).abs().max().item()
    scale = exact.abs().max().item()
    assert matmul_error <= 2 * fused_error + scale * 2**-8, (matmul_error, fused_error, scale)


def test_mask_logits_read_channels_last_maps_and_stacked_queries():
    """The mask product reads the pixel map in either layout and takes the decoder layers stacked
    ``(layers, batch, Q, d)``; it equals the einsum. Tolerance: a float32 dot product of d = 32
    terms summed in any order is within d * 2^-24 * sum|e_c p_c| of the exact value (the standard
    summation bound), so two orders differ by at most twice that."""
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(tiny_config()).eval()
    queries = torch.randn(3, 2, 5, 32)
    pixels = torch.randn(2, 32, 6, 7)
    with torch.no_grad():
        embeddings = model.mask_embedder(queries)
        expected = torch.einsum("lbqc,bchw->lbqhw", embeddings, pixels)
        bound = 2 * 32 * 2**-24 * torch.einsum("lbqc,bchw->lbqhw", embeddings.abs(), pixels.abs())
        for layout in (torch.contiguous_format, torch.channels_last):
            mapped = pixels.contiguous(memory_format=layout)
            stacked = model.mask_logits(queries, mapped)
            single = model.mask_logits(queries[-1], mapped)
            assert stacked.is_contiguous() and single.is_contiguous()
            assert stacked.shape == expected.shape and single.shape == expected.shape[1:]
            assert bool(((stacked - expected).abs() <= bound).all())
            assert bool(((single - expected[-1]).abs() <= bound[-1]).all())
