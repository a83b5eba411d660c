"""Model behaviour beyond the reference: half precision, odd sizes, input checks, outputs, loss."""

from __future__ import annotations

import copy

import pytest
import torch

from maskformer.configuration import MaskFormerConfig
from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation, MaskFormerModel
from maskformer.modeling.outputs import MaskFormerForInstanceSegmentationOutput
from maskformer.modeling.swin import relative_position_index, shifted_window_mask
from maskformer.modeling.transformer_decoder import MaskFormerSinePositionEmbedding

ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def tiny_config(**overrides) -> MaskFormerConfig:
    values = {
        "backbone_config": {
            "model_type": "swin",
            "embed_dim": 32,
            "depths": [2, 2, 2, 2],
            "num_heads": [1, 2, 2, 4],
            "window_size": 7,
            "out_features": ALL_STAGES,
        },
        "decoder_config": {
            "model_type": "detr",
            "d_model": 64,
            "decoder_attention_heads": 4,
            "decoder_ffn_dim": 128,
            "decoder_layers": 3,
            "num_queries": 8,
        },
        "fpn_feature_size": 64,
        "mask_feature_size": 64,
        "num_labels": 4,
    }
    values.update(overrides)
    return MaskFormerConfig(**values)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(tiny_config()).eval()
    with torch.no_grad():  # make the relative position bias matter
        for name, parameter in model.named_parameters():
            if "relative_position_bias_table" in name:
                parameter.normal_(std=0.5)
    return model


def run(model, pixel_values, **kwargs):
    with torch.no_grad():
        return model(pixel_values, **kwargs)


@pytest.mark.parametrize("size", [(97, 131), (32, 32), (33, 7), (224, 160)])
def test_odd_sizes_and_batch_one(model, size):
    height, width = size
    output = run(model, torch.randn(1, 3, height, width))
    expected = (1, 8, -(-height // 4), -(-width // 4))
    assert output.masks_queries_logits.shape == expected
    assert output.class_queries_logits.shape == (1, 8, 5)
    assert torch.isfinite(output.masks_queries_logits).all()


def test_batch_elements_are_independent(model):
    pixel_values = torch.randn(3, 3, 50, 70)
    batched = run(model, pixel_values).masks_queries_logits
    single = run(model, pixel_values[1:2]).masks_queries_logits
    assert (batched[1:2] - single).abs().max() < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_close_to_float32(model, dtype):
    pixel_values = torch.randn(2, 3, 61, 90)
    expected = run(model, pixel_values)
    half = copy.deepcopy(model).to(dtype)
    actual = run(half, pixel_values)  # float32 input is cast to the model dtype
    assert actual.masks_queries_logits.dtype == dtype
    for name in ("class_queries_logits", "masks_queries_logits"):
        reference = getattr(expected, name)
        difference = (getattr(actual, name).float() - reference).abs().max()
        assert difference < 0.05 * reference.abs().max() + 0.05, name


@pytest.mark.parametrize(
    "pixel_values, error, message",
    [
        (None, ValueError, "pixel_values"),
        (torch.randn(3, 32, 32), ValueError, r"\(batch_size, num_channels, height, width\)"),
        (torch.randn(1, 1, 3, 32, 32), ValueError, "5-D"),
        (torch.randn(1, 4, 32, 32), ValueError, "num_channels=3"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "floating point"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.bool), TypeError, "floating point"),
        (torch.zeros(0, 3, 32, 32), ValueError, "empty"),
        (torch.zeros(1, 3, 0, 32), ValueError, "empty"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_pixel_values_raise_clear_errors(model, pixel_values, error, message):
    with pytest.raises(error, match=message):
        run(model, pixel_values)
    with pytest.raises(error, match=message):
        run(model.model, pixel_values)


def test_bad_labels_raise_clear_errors(model):
    pixel_values = torch.randn(2, 3, 32, 32)
    masks = [torch.zeros(2, 32, 32), torch.zeros(1, 32, 32)]
    classes = [torch.tensor([0, 1]), torch.tensor([2])]
    with pytest.raises(ValueError, match="mask_labels.*batch size is 2"):
        model(pixel_values, mask_labels=masks[:1], class_labels=classes)
    with pytest.raises(ValueError, match="class_labels.*batch size is 2"):
        model(pixel_values, mask_labels=masks, class_labels=classes[:1])
    with pytest.raises(
        ValueError, match=r"mask_labels\[1\] has 1 masks but class_labels\[1\] has 2"
    ):
        model(pixel_values, mask_labels=masks, class_labels=[classes[0], torch.tensor([1, 2])])
    with pytest.raises(ValueError, match="class_labels is missing"):
        model(pixel_values, mask_labels=masks)
    with pytest.raises(TypeError, match="mask_labels must be a list"):
        model(pixel_values, mask_labels={"a": 1}, class_labels=classes)
    with pytest.raises(ValueError, match="mask_labels.*batch size is 2"):  # stacked tensor
        model(pixel_values, mask_labels=torch.zeros(3, 2, 32, 32), class_labels=classes)
    with pytest.raises(ValueError, match=r"mask_labels\[0\] must have shape"):
        model(pixel_values, mask_labels=[torch.zeros(32, 32), masks[1]], class_labels=classes)


def test_loss_is_a_differentiable_scalar_with_weighted_terms():
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(tiny_config(use_auxiliary_loss=True)).train()
    pixel_values = torch.randn(2, 3, 48, 64)
    masks = [(torch.rand(3, 48, 64) > 0.5).float(), (torch.rand(1, 48, 64) > 0.5).float()]
    classes = [torch.tensor([0, 1, 3]), torch.tensor([2])]
    output = model(pixel_values, mask_labels=masks, class_labels=classes)
    assert output.loss.shape == ()
    output.loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []

    raw = model.criterion(
        output.masks_queries_logits,
        output.class_queries_logits,
        masks,
        classes,
        # auxiliary logits are only returned on request; recompute them
        model(pixel_values, output_auxiliary_logits=True).auxiliary_logits,
    )
    assert set(raw) == {
        f"{term}{suffix}"
        for term in ("loss_mask", "loss_dice", "loss_cross_entropy")
        for suffix in ("", "_0", "_1")
    }
    weighted = model.get_loss_dict(
        output.masks_queries_logits, output.class_queries_logits, masks, classes, None
    )
    assert weighted["loss_mask"].item() == pytest.approx(20.0 * raw["loss_mask"].item(), rel=1e-4)
    assert weighted["loss_dice"].item() == pytest.approx(raw["loss_dice"].item(), rel=1e-4)
    assert model.get_loss(weighted).shape == ()


def test_auxiliary_logits_without_hidden_states():
    model = MaskFormerForInstanceSegmentation(tiny_config(use_auxiliary_loss=True)).eval()
    output = run(model, torch.randn(1, 3, 40, 40), output_auxiliary_logits=True)
    assert output.transformer_decoder_hidden_states is None
    assert len(output.auxiliary_logits) == 2  # decoder_layers - 1
    assert set(output.auxiliary_logits[0]) == {"class_queries_logits", "masks_queries_logits"}
    assert run(model, torch.randn(1, 3, 40, 40)).auxiliary_logits is None
    plain = MaskFormerForInstanceSegmentation(tiny_config()).eval()
    assert (
        run(plain, torch.randn(1, 3, 40, 40), output_auxiliary_logits=True).auxiliary_logits == []
    )


def test_output_container_behaviour(model):
    output = run(model, torch.randn(1, 3, 32, 32))
    assert isinstance(output, MaskFormerForInstanceSegmentationOutput)
    assert output.keys()[:2] == ["class_queries_logits", "masks_queries_logits"]
    assert output[0] is output.class_queries_logits
    assert output["masks_queries_logits"] is output.masks_queries_logits
    assert len(output.to_tuple()) == 5 and output[1:3][0] is output.masks_queries_logits
    assert "loss" not in output
    with pytest.raises(KeyError):
        output["loss"]
    assert list(output) == output.keys()


def test_config_flags_drive_defaults():
    config = tiny_config(output_hidden_states=True, return_dict=False)
    model = MaskFormerModel(config).eval()
    result = run(model, torch.randn(1, 3, 32, 32))
    assert isinstance(result, tuple)
    assert len(result) == 3 + 3 + 1  # 3 last states, 3 hidden-state tuples, all hidden states
    assert len(result[-1]) == 4 + 3 + 4


def test_shape_helpers_follow_size_and_dtype(model):
    embedder = MaskFormerSinePositionEmbedding(num_pos_feats=32, normalize=True)
    first = embedder.flat(5, 7, torch.float32, torch.device("cpu"))
    assert torch.equal(embedder.flat(5, 7, torch.float32, torch.device("cpu")), first)
    assert embedder.flat(5, 7, torch.bfloat16, torch.device("cpu")).dtype == torch.bfloat16
    assert first.shape == (1, 35, 64)
    a = run(model, torch.randn(1, 3, 64, 64))
    b = run(model, torch.randn(1, 3, 100, 36))
    assert a.masks_queries_logits.shape[-2:] != b.masks_queries_logits.shape[-2:]
    mask = shifted_window_mask(14, 14, 7, 3, torch.float32, torch.device("cpu"))
    assert mask.shape == (4, 49, 49) and set(mask.unique().tolist()) == {0.0, -100.0}
    assert mask[0].abs().sum() == 0  # the top-left window holds one region only
    index = relative_position_index(3)
    assert (
        index.shape == (9, 9) and index.max() == 24 and index.diagonal().unique().tolist() == [12]
    )


def test_pixel_mask_is_accepted_and_ignored(model):
    pixel_values = torch.randn(1, 3, 32, 32)
    with_mask = run(model, pixel_values, pixel_mask=torch.zeros(1, 32, 32, dtype=torch.long))
    without = run(model, pixel_values)
    assert torch.equal(with_mask.masks_queries_logits, without.masks_queries_logits)


def test_maskformer_swin_backbone_needs_several_out_features():
    config = tiny_config(backbone_config={"model_type": "maskformer-swin", "embed_dim": 32})
    with pytest.raises(ValueError, match="out_features"):
        MaskFormerForInstanceSegmentation(config)


def test_stacked_label_tensors_equal_lists(model):
    pixel_values = torch.randn(2, 3, 32, 32)
    masks = (torch.rand(2, 3, 32, 32) > 0.5).float()
    classes = torch.tensor([[0, 1, 2], [3, 3, 1]])
    with torch.no_grad():
        stacked = model(pixel_values, mask_labels=masks, class_labels=classes).loss
        listed = model(pixel_values, mask_labels=list(masks), class_labels=list(classes)).loss
    assert torch.isfinite(stacked) and stacked.item() == pytest.approx(listed.item(), rel=1e-6)
