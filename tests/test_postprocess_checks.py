"""Post-processing input checks: non-finite logits, threshold ranges, half-precision logits."""

from __future__ import annotations

import types

import pytest
import torch

from maskformer.processing import MaskFormerImageProcessor

PROCESSOR = MaskFormerImageProcessor()
TASKS = ["semantic", "instance", "panoptic"]


def outputs(seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(
        class_queries_logits=(torch.randn(2, 6, 5, generator=generator) * 3).to(dtype),
        masks_queries_logits=(torch.randn(2, 6, 9, 11, generator=generator) * 4).to(dtype),
    )


def run(task, out, **kwargs):
    return getattr(PROCESSOR, f"post_process_{task}_segmentation")(out, **kwargs)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("field", ["class_queries_logits", "masks_queries_logits"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits_are_named(task, field, value):
    out = outputs()
    getattr(out, field)[1, 2].view(-1)[3] = value
    word = "NaN" if value != value else "infinite"
    with pytest.raises(ValueError, match=f"{field} contains {word}"):
        run(task, out, target_sizes=[(20, 30)] * 2)


def test_large_finite_logits_are_accepted():
    out = outputs()
    out.masks_queries_logits[:, :, 0, 0] = 3e38  # the sum overflows; the values are finite
    assert len(run("panoptic", out)) == 2


@pytest.mark.parametrize("task", ["instance", "panoptic"])
@pytest.mark.parametrize("name", ["threshold", "mask_threshold", "overlap_mask_area_threshold"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_thresholds_out_of_range_are_named(task, name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be in \\[0, 1\\]"):
        run(task, outputs(), **{name: value})


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_thresholds_must_be_numbers(task):
    with pytest.raises(TypeError, match="`threshold` must be a number"):
        run(task, outputs(), threshold="0.5")
    for value in (0, 1, 0.0, 1.0):  # the bounds are allowed
        run(task, outputs(), threshold=value, overlap_mask_area_threshold=value)


def test_integer_logits_are_refused():
    out = outputs()
    out.class_queries_logits = out.class_queries_logits.long()
    with pytest.raises(TypeError, match="class_queries_logits"):
        run("semantic", out)


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("target_sizes", [None, [(40, 50), (150, 170)]])
def test_half_precision_logits_give_the_float32_results(dtype, task, target_sizes):
    half = outputs(seed=3, dtype=dtype)
    upcast = types.SimpleNamespace(
        class_queries_logits=half.class_queries_logits.float(),
        masks_queries_logits=half.masks_queries_logits.float(),
    )
    kwargs = {"target_sizes": target_sizes}
    if task != "semantic":
        kwargs["threshold"] = 0.2
    for ours, expected in zip(run(task, half, **kwargs), run(task, upcast, **kwargs), strict=True):
        if task == "semantic":
            assert _same(ours, expected)
        else:
            assert ours["segments_info"] == expected["segments_info"]
            assert _same(ours["segmentation"], expected["segmentation"])
    assert half.masks_queries_logits.dtype == dtype  # the caller's tensors are left alone
