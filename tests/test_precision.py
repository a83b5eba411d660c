"""`--dtype bfloat16|float16`: dtype names, the CPU capability check and its warning, and a
bfloat16 `predict` run compared with float32 on the real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from PIL import Image
from test_cli_export import save_decisive_checkpoint

import maskformer.precision as precision
from maskformer.cli import main

PHOTOS = SHARED_DATA / "ade20k_sample" / "images"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, torch.float32),
        ("bfloat16", torch.bfloat16),
        ("torch.float16", torch.float16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_resolve_dtype(given, expected) -> None:
    assert precision.resolve_dtype(given) is expected


@pytest.mark.parametrize("bad", ["float64", "bf16", torch.int8, 3])
def test_resolve_dtype_refuses_other_types(bad) -> None:
    with pytest.raises(ValueError, match="--dtype must be one of float32, bfloat16, float16"):
        precision.resolve_dtype(bad)


@pytest.mark.parametrize(
    ("flags", "bf16", "fp16"),
    [
        ({"avx512f", "avx512_bf16"}, True, False),
        ({"avx512f", "amx_bf16", "amx_fp16"}, True, True),
        ({"fp", "asimd", "bf16", "asimdhp"}, True, True),  # Arm's names (the "Features" line)
        ({"sse4_2", "avx2"}, False, False),
    ],
)
def test_cpu_supports_reads_the_instruction_flags(monkeypatch, flags, bf16, fp16) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.cpu_supports(torch.float32) is True
    assert precision.cpu_supports(torch.bfloat16) is bf16
    assert precision.cpu_supports(torch.float16) is fp16


def test_cpu_flags_of_this_machine_parse() -> None:
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    if flags:  # Linux: the flags line is split into names, none holding spaces or colons
        assert all(" " not in f and ":" not in f for f in flags)


def test_the_warning_names_the_dtype_and_the_slowdown(monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    warning = precision.precision_warning("bfloat16", "cpu")
    assert warning is not None and "\n" not in warning
    assert "--dtype bfloat16" in warning and "avx512_bf16" in warning and "slower" in warning
    assert precision.precision_warning("float32", "cpu") is None
    assert precision.precision_warning("bfloat16", "cuda") is None  # a GPU: not this check
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert precision.precision_warning("bfloat16", "cpu") is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_decisive_checkpoint(tmp_path_factory.mktemp("checkpoint"))


def _predict(checkpoint, output_dir, dtype: str) -> int:
    return main(
        ["predict", "--model", str(checkpoint), "--task", "semantic", "--dtype", dtype]
        + ["--device", "cpu", "--output-dir", str(output_dir), "--no-progress", "--no-overlay"]
        + [str(PHOTOS)]
    )


@requires_shared_data
def test_bfloat16_predict_agrees_with_float32(checkpoint, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert _predict(checkpoint, tmp_path / "fp32", "float32") == 0
    assert _predict(checkpoint, tmp_path / "bf16", "bfloat16") == 0
    assert "warning" not in capsys.readouterr().err
    same = total = 0
    for photo in sorted(PHOTOS.glob("*.jpg")):
        full = np.asarray(Image.open(tmp_path / "fp32" / "semantic" / f"{photo.stem}.png"))
        half = np.asarray(Image.open(tmp_path / "bf16" / "semantic" / f"{photo.stem}.png"))
        assert half.shape == full.shape == Image.open(photo).size[::-1]
        same, total = same + int((half == full).sum()), total + full.size
    agreement = same / total
    # bfloat16 keeps 8 significant bits: each layer's outputs move by ~2^-8 of their size and
    # the errors compound over the backbone, so pixels near a class boundary (where two classes'
    # scores are within a few percent) may change. The decisive model's boundaries are thin
    # lines on these photos; 95% leaves room for those and still fails if bf16 inputs, weights
    # or the float32 post-processing were wrong (that gives unrelated maps, far below).
    print(f"bfloat16 vs float32: {agreement:.4%} identical semantic pixels")
    assert agreement >= 0.95, agreement
    assert agreement <= 1.0


@requires_shared_data
def test_bfloat16_on_a_cpu_without_it_warns_in_one_line(
    checkpoint, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"sse4_2", "avx2"}))
    code = main(
        ["predict", "--model", str(checkpoint), "--task", "semantic", "--dtype", "bfloat16"]
        + ["--device", "cpu", "--output-dir", str(tmp_path), "--no-progress", "--no-overlay"]
        + [str(sorted(PHOTOS.glob("*.jpg"))[0])]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 0
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 1 and "--dtype bfloat16" in warnings[0] and "slower" in warnings[0]
