"""`maskformer export`: a Swin model to torch.export through the command line, and each bad input
as one line on stderr with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import SHARED_DATA

from maskformer.cli import main

PHOTOS = SHARED_DATA / "ade20k_sample" / "images"


def save_decisive_checkpoint(
    folder: Path, preset: str = "tiny-resnet", num_labels: int = 5
) -> Path:
    """A tiny random checkpoint whose queries commit to different classes and sharp masks, so
    its label maps hold several classes with clear margins (an untrained model paints one class
    everywhere, which would make any comparison of label maps vacuous)."""
    from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
    from maskformer.presets import get_preset

    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(get_preset(preset, num_labels=num_labels))
    with torch.no_grad():
        model.class_predictor.bias[-1] = -4.0
        model.class_predictor.weight.mul_(30.0)
        for parameter in model.mask_embedder.parameters():
            parameter.mul_(4.0)
    model.save_pretrained(folder)
    MaskFormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 160}).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def swin_checkpoint(tmp_path_factory) -> Path:
    return save_decisive_checkpoint(tmp_path_factory.mktemp("swin"), "tiny-swin")


def _photos() -> list[str]:
    return [str(p) for p in sorted(PHOTOS.glob("*.jpg"))[:2]]


def test_swin_torch_export_through_the_command_line(swin_checkpoint, tmp_path, capsys) -> None:
    from maskformer.export import fixed_size_inputs, read_metadata
    from maskformer.processing.image_processor import MaskFormerImageProcessor

    output = tmp_path / "swin.pt2"
    code = main(
        ["export", "--model", str(swin_checkpoint), "--format", "torch-export", "--output"]
        + [str(output), "--height", "64", "--width", "96", "--check-images", *_photos()]
    )
    message = capsys.readouterr().err.strip().splitlines()
    assert code == 0 and output.is_file(), message
    assert message[-1].startswith("exported ") and "torch-export, input 64x96" in message[-1]
    metadata = read_metadata(output)
    assert metadata["input_size"] == [64, 96] and len(metadata["id2label"]) == 5
    # The program alone, in a fresh interpreter that never imports maskformer, gives the logits
    # the package's model gives.
    from maskformer.engine.loading import load_model

    processor = MaskFormerImageProcessor.from_dict(metadata["processor"])
    from PIL import Image

    photo = Image.open(_photos()[0]).convert("RGB")
    pixel_values, _ = fixed_size_inputs(processor, [photo], (64, 96))
    torch.save(pixel_values, tmp_path / "x.pt")
    script = (
        "import sys, torch; "
        f"program = torch.export.load({str(output)!r}).module(); "
        f"out = program(torch.load({str(tmp_path / 'x.pt')!r})); "
        "assert not any(m.startswith('maskformer') for m in sys.modules); "
        f"torch.save([o.detach() for o in out], {str(tmp_path / 'y.pt')!r})"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    exported = torch.load(tmp_path / "y.pt")
    with torch.inference_mode():
        expected = load_model(swin_checkpoint)(pixel_values=pixel_values)
    for got, want in zip(exported, (expected.class_queries_logits, expected.masks_queries_logits)):
        # One float32 graph, two executions (eager vs the exported program's decompositions):
        # summation orders differ, moving logits by a few ulp per accumulation; 1e-4 of the
        # logits' scale (the export check's bound) covers that on any CPU.
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * scale)


def _one_line_failure(capsys, argv: list[str]) -> str:
    code = main(argv)
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1, error
    return error[0]


def test_a_size_that_does_not_fit_the_swin_patches_is_one_line(
    swin_checkpoint, tmp_path, capsys
) -> None:
    line = _one_line_failure(
        capsys,
        ["export", "--model", str(swin_checkpoint), "--output", str(tmp_path / "m.onnx")]
        + ["--height", "70", "--width", "96"],
    )
    assert "--height 70" in line and "multiple of 32" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--width", "64"], "--width needs --height"),
        (["--format", "tflite"], "--format"),
        (["--check-images", "/nonexistent/photo.jpg"], "/nonexistent/photo.jpg"),
        (["--tolerance", "-1"], "--tolerance"),
        (["--output", "/nonexistent/m.bin"], "must end in .onnx"),
    ],
)
def test_bad_export_arguments_are_one_line(
    swin_checkpoint, tmp_path, capsys, extra, message
) -> None:
    line = _one_line_failure(
        capsys,
        ["export", "--model", str(swin_checkpoint), "--output", str(tmp_path / "m.onnx"), *extra],
    )
    assert message in line


def test_an_existing_output_is_kept_without_overwrite(swin_checkpoint, tmp_path, capsys) -> None:
    output = tmp_path / "m.onnx"
    output.write_bytes(b"keep me")
    line = _one_line_failure(
        capsys, ["export", "--model", str(swin_checkpoint), "--output", str(output)]
    )
    assert "already exists" in line and output.read_bytes() == b"keep me"


class _DataDependent(torch.nn.Module):
    """A backbone whose control flow depends on the pixel values: neither exporter can trace
    it into one static graph."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(id2label={0: "a"}, backbone_config=None)
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        features = pixel_values.mean(1, keepdim=True) * self.scale
        if float(features.sum()) > 0:  # a Python branch on a tensor's value
            features = features * 2
        return SimpleNamespace(
            class_queries_logits=features.flatten(1)[:, :2, None],
            masks_queries_logits=features[:, :, ::4, ::4],
        )


@pytest.mark.parametrize("export_format", ["onnx", "torch-export"])
def test_a_model_that_cannot_be_exported_is_a_value_error(tmp_path, export_format) -> None:
    from maskformer.export import export_model
    from maskformer.processing.image_processor import MaskFormerImageProcessor

    processor = MaskFormerImageProcessor(size={"shortest_edge": 32, "longest_edge": 64})
    if export_format == "onnx":
        pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    with pytest.raises(ValueError, match="this model cannot be exported"):
        output = tmp_path / ("m.onnx" if export_format == "onnx" else "m.pt2")
        export_model(_DataDependent(), processor, output, export_format, (32, 32))
    assert list(tmp_path.iterdir()) == []
