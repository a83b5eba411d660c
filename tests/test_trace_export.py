"""The model holds no run-time state derived from its weights, so it loads and runs under
``inference_mode``, traces (``torch.jit.trace`` with the trace check, following later
``load_state_dict``), exports (``torch.export``) and, where ``onnx`` is importable, goes to ONNX."""

from __future__ import annotations

import pytest
import torch

from maskformer import MaskFormerConfig, MaskFormerForInstanceSegmentation

ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]
DECODER = {
    "model_type": "detr",
    "d_model": 32,
    "decoder_attention_heads": 2,
    "decoder_ffn_dim": 32,
    "decoder_layers": 1,
    "num_queries": 4,
}
BACKBONES = {
    # depth 2 in stage 1: a shifted block; window 4 on odd map sizes: padding.
    "swin": {
        "model_type": "swin",
        "embed_dim": 8,
        "depths": [2, 1, 1, 1],
        "num_heads": [1, 1, 2, 2],
        "window_size": 4,
        "out_features": ALL_STAGES,
    },
    "resnet": {
        "model_type": "resnet",
        "embedding_size": 8,
        "hidden_sizes": [8, 16, 16, 32],
        "depths": [1, 1, 1, 1],
        "layer_type": "basic",
        "out_features": ALL_STAGES,
    },
}
# Output magnitudes here are O(1-10). Re-ordered float32 reductions (decomposed or differently
# dispatched kernels: attention, norms, convolutions) move each result by a few ulps of the
# partial sums; through ~10 chained layers with reductions of <= 300 terms that stays well below
# 1e-4 (observed ~1e-6), while a wrong weight or layout moves outputs by > 1e-2.
REORDERED_TOLERANCE = 1e-4


def build(kind: str, seed: int, **overrides) -> MaskFormerForInstanceSegmentation:
    config = MaskFormerConfig(
        backbone_config=dict(BACKBONES[kind]),
        decoder_config=dict(DECODER),
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=3,
        **overrides,
    )
    torch.manual_seed(seed)
    return MaskFormerForInstanceSegmentation(config).eval()


def pixel_values() -> torch.Tensor:
    return torch.randn(2, 3, 36, 28, generator=torch.Generator().manual_seed(1))


def logits(output) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(output, tuple):
        return output[0], output[1]
    return output.class_queries_logits, output.masks_queries_logits


def assert_outputs_close(actual, expected, tolerance: float) -> None:
    for a, e in zip(logits(actual), logits(expected)):
        torch.testing.assert_close(a, e, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("kind", ["swin", "resnet"])
def test_load_and_run_under_inference_mode(kind, tmp_path):
    model = build(kind, seed=0)
    model.save_pretrained(tmp_path)
    x = pixel_values()
    with torch.no_grad():
        expected = model(x)
    with torch.inference_mode():
        loaded = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path).eval()
        first = loaded(x)
        second = loaded(x)  # a second call must not trip over anything the first one left
    # Same weights and inputs; the loaded tensors may be laid out or aligned differently, which
    # can pick another convolution / matmul blocking: re-ordered sums, the bound above.
    assert_outputs_close(first, expected, REORDERED_TOLERANCE)
    assert_outputs_close(second, first, 0.0)  # the same model twice: the very same ops


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("kind", ["swin", "resnet"])
def test_jit_trace_passes_the_check_and_follows_load_state_dict(kind):
    model = build(kind, seed=0, torchscript=True)
    x = pixel_values()
    # check_trace re-runs the model and compares graphs and outputs (raises if they differ).
    traced = torch.jit.trace(model, (x,), check_trace=True)
    with torch.no_grad():
        assert_outputs_close(traced(x), model(x), REORDERED_TOLERANCE)
        other = build(kind, seed=1, torchscript=True)
        expected = other(x)
        assert not torch.allclose(logits(expected)[1], logits(model(x))[1], atol=1e-2)
        traced.load_state_dict(other.state_dict())
        # The graph holds no weight-derived constants: the new weights give the new outputs.
        assert_outputs_close(traced(x), expected, REORDERED_TOLERANCE)


@pytest.mark.parametrize("kind", ["swin", "resnet"])
def test_torch_export_matches_eager_and_follows_load_state_dict(kind):
    model = build(kind, seed=0)
    x = pixel_values()
    exported = torch.export.export(model, (x,)).module()
    with torch.no_grad():
        output = exported(x)
        assert type(output).__name__ == "MaskFormerForInstanceSegmentationOutput"
        assert_outputs_close(output, model(x), REORDERED_TOLERANCE)
        other = build(kind, seed=1)
        exported.load_state_dict(other.state_dict())
        assert_outputs_close(exported(x), other(x), REORDERED_TOLERANCE)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_onnx_export_runs_like_eager(tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed")
    model = build("swin", seed=0, torchscript=True)
    x = pixel_values()
    path = tmp_path / "maskformer.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["pixel_values"],
        output_names=["class_queries_logits", "masks_queries_logits"],
        dynamo=False,
    )
    assert path.stat().st_size > 0
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    classes, masks = session.run(None, {"pixel_values": x.numpy()})[:2]
    with torch.no_grad():
        expected = model(x)
    # onnxruntime's own kernels: re-ordered float32 reductions, the same bound as above.
    assert_outputs_close(
        (torch.from_numpy(classes), torch.from_numpy(masks)), expected, REORDERED_TOLERANCE
    )
