"""Export to ONNX and torch.export: parity with PyTorch, metadata, the ONNX Runtime backend."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from maskformer.export import (
    ExportParityError,
    default_size,
    export_model,
    fixed_size_inputs,
    read_metadata,
)
from maskformer.presets import get_preset

pytest.importorskip("onnxruntime", reason="the onnx extra (onnx, onnxruntime) is not installed")

SIZE = (96, 128)


@pytest.fixture(scope="module")
def resnet_model() -> MaskFormerForInstanceSegmentation:
    torch.manual_seed(0)
    return MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", num_labels=4)).eval()


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    folder = SHARED_DATA / "ade20k_sample" / "images"
    if not folder.is_dir():
        pytest.skip(f"sample photos {folder} are absent")
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.jpg"))[:2]]


def _processor() -> MaskFormerImageProcessor:
    return MaskFormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 128})


def test_default_size_is_the_processors_shortest_edge_rounded_up() -> None:
    assert default_size(MaskFormerImageProcessor()) == (800, 800)
    assert default_size(
        MaskFormerImageProcessor(size={"shortest_edge": 500, "longest_edge": 900})
    ) == (512, 512)


def test_fixed_size_inputs_fit_and_pad(photos) -> None:
    pixel_values, pixel_mask = fixed_size_inputs(_processor(), photos, SIZE)
    assert pixel_values.shape == (2, 3, *SIZE)
    for image, pixels, mask in zip(photos, pixel_values, pixel_mask):
        rows, columns = int(mask.any(1).sum()), int(mask.any(0).sum())
        assert rows <= SIZE[0] and columns <= SIZE[1]
        assert max(rows / SIZE[0], columns / SIZE[1]) == 1  # fitted: one side fills the size
        assert abs(rows / columns - image.height / image.width) < 0.05  # aspect kept
        assert pixels[:, rows:, :].abs().sum() == 0 and pixels[:, :, columns:].abs().sum() == 0


@requires_shared_data
def test_onnx_export_matches_pytorch_and_carries_metadata(resnet_model, photos, tmp_path) -> None:
    from maskformer.onnx_backend import OnnxRuntimeModel

    path = tmp_path / "model.onnx"
    report = export_model(resnet_model, _processor(), path, "onnx", SIZE, check_images=photos)
    assert path.is_file() and report.max_difference <= 1e-4
    metadata = read_metadata(path)
    assert metadata["input_size"] == list(SIZE)
    assert metadata["id2label"] == {str(k): v for k, v in resnet_model.config.id2label.items()}
    runtime = OnnxRuntimeModel(path, threads=1)
    pixel_values, _ = fixed_size_inputs(_processor(), photos[:1], SIZE)
    with torch.inference_mode():
        expected = resnet_model(pixel_values=pixel_values)
    got = runtime(pixel_values=pixel_values)
    # Same float32 graph in two runtimes: kernels sum in different orders, so logits move by a
    # few ulp of their magnitude per accumulation; 1e-4 of the logits' scale bounds that.
    scale = float(expected.masks_queries_logits.abs().max())
    torch.testing.assert_close(
        got.masks_queries_logits, expected.masks_queries_logits, rtol=0, atol=1e-4 * scale
    )


@requires_shared_data
def test_torch_export_loads_without_the_package(resnet_model, photos, tmp_path) -> None:
    path = tmp_path / "model.pt2"
    report = export_model(
        resnet_model, _processor(), path, "torch-export", SIZE, check_images=photos
    )
    assert report.max_difference <= 1e-4
    pixel_values, _ = fixed_size_inputs(_processor(), photos[:1], SIZE)
    np.save(tmp_path / "x.npy", pixel_values.numpy())
    script = (
        "import sys, numpy, torch; "
        f"program = torch.export.load({str(path)!r}).module(); "
        f"out = program(torch.from_numpy(numpy.load({str(tmp_path / 'x.npy')!r}))); "
        "assert not any(m.startswith('maskformer') for m in sys.modules); "
        "print(list(out[1].shape))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.strip()) == [1, 16, SIZE[0] // 4, SIZE[1] // 4]


def test_parity_failure_writes_nothing(resnet_model, tmp_path, monkeypatch) -> None:
    import maskformer.export as export

    real = export._torch_export_runner
    monkeypatch.setattr(
        export, "_torch_export_runner", lambda p: lambda x: [o + 1.0 for o in real(p)(x)]
    )
    path = tmp_path / "model.pt2"
    with pytest.raises(ExportParityError, match="differ from PyTorch's by"):
        export_model(resnet_model, _processor(), path, "torch-export", SIZE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("size", "message"), [((100, 128), "--height 100"), ((96, 0), "--width 0")]
)
def test_sizes_that_do_not_fit_the_backbone_are_refused(
    resnet_model, tmp_path, size, message
) -> None:
    with pytest.raises(ValueError, match=message):
        export_model(resnet_model, _processor(), tmp_path / "m.onnx", "onnx", size)


@requires_shared_data
def test_swin_onnx_export_with_a_dynamic_batch_matches_pytorch(photos, tmp_path) -> None:
    from maskformer.export import size_multiple
    from maskformer.onnx_backend import OnnxRuntimeModel

    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(get_preset("tiny-swin", num_labels=4)).eval()
    assert size_multiple(model) == 32  # patch 4 x downsampling 8 over four stages
    path = tmp_path / "swin.onnx"
    report = export_model(
        model, _processor(), path, "onnx", SIZE, dynamic_batch=True, check_images=photos
    )
    # The check ran each photo alone and both as one batch; all within 1e-4 of the scale.
    assert report.max_difference <= 1e-4 and report.checked_images == 2
    runtime = OnnxRuntimeModel(path, threads=1)
    assert runtime.fixed_batch is None
    pixel_values, _ = fixed_size_inputs(_processor(), photos, SIZE)
    with torch.inference_mode():
        expected = model(pixel_values=pixel_values)
    got = runtime(pixel_values=pixel_values)
    for name in ("class_queries_logits", "masks_queries_logits"):
        want = getattr(expected, name)
        # As for ResNet: one float32 graph in two runtimes, 1e-4 of the logits' scale.
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(getattr(got, name), want, rtol=0, atol=1e-4 * scale)
