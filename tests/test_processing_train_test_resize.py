"""Training resizes with ``F.interpolate(antialias=True)`` (``data/transforms.py``), inference with
PIL (the image processor). Both compute the same antialiased bilinear filter (PyTorch's antialias
kernel reproduces PIL's: support 1 scaled by the downscale factor, weights normalised per output
pixel); they differ only by rounding. These tests bound that skew.

The bound, in 0..255 units, for one output pixel:

* PIL's 8-bit path resizes in two passes (width, then height) and rounds each pass to uint8:
  0.5 from the first rounding, carried at most unchanged through the second pass (its weights
  are non-negative and sum to 1), plus 0.5 from the second: 1.0 in all.
* PIL's weights are fixed point with 22 fractional bits (rounded: error <= 2**-23 each) and
  PyTorch's are float32 (relative error a few 2**-24): over ``n`` taps of values <= 255 that is at
  most ``n * 255 * (2**-23 + 2**-22)`` per pass.

So ``|train - inference| <= 1 + (n_x + n_y) * 255 * (2**-23 + 2**-22)``, with
``n = 2 * ceil(max(1, in / out)) + 1`` taps per axis. After normalisation this is divided by
``255 * std``; float32 normalisation adds a few ulps of values below 3 (1e-5 covers it).
Label maps (nearest): the two pick the same source pixel except on exact ties, where they pick
neighbours.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.data.transforms import EvalTransform, image_to_tensor, resize_pair
from maskformer.processing import MaskFormerImageProcessor
from maskformer.processing.geometry import resize_image, resize_label_map
from maskformer.utils.constants import IMAGENET_STD
from tests.conftest import SHARED_DATA

# (input height, width) -> (output height, width): down by up to 8x, up by up to 4x, mixed.
SIZES = [
    ((96, 128), (12, 16)),
    ((61, 97), (37, 23)),
    ((40, 50), (160, 130)),
    ((17, 120), (68, 45)),
    ((128, 33), (64, 99)),
    ((7, 9), (28, 11)),
]


def _taps(size_in: int, size_out: int) -> int:
    return 2 * math.ceil(max(1.0, size_in / size_out)) + 1


def skew_bound(size_in: tuple[int, int], size_out: tuple[int, int]) -> float:
    """The largest ``|train - inference|`` (0..255 units) the module docstring derives."""
    taps = _taps(size_in[0], size_out[0]) + _taps(size_in[1], size_out[1])
    return 1.0 + taps * 255 * (2.0**-23 + 2.0**-22)


@pytest.mark.parametrize(("size_in", "size_out"), SIZES)
def test_train_and_inference_resizes_differ_by_at_most_one_level(size_in, size_out):
    rng = np.random.default_rng(sum(size_in) + sum(size_out))
    image = rng.integers(0, 256, (*size_in, 3), dtype=np.uint8)  # noise: every rounding counts
    labels = torch.zeros(size_in, dtype=torch.int64)
    train, _ = resize_pair(image_to_tensor(image), labels, *size_out)
    inference = resize_image(image, size_out, Image.BILINEAR).transpose(2, 0, 1)
    difference = np.abs(train.double().numpy() - inference)
    assert difference.max() <= skew_bound(size_in, size_out)
    # Not one filter against another: on average they agree to well below half a level.
    assert difference.mean() < 0.5


@pytest.mark.parametrize(("size_in", "size_out"), SIZES)
def test_train_and_inference_label_resizes_differ_only_on_ties(size_in, size_out):
    # Label i * 1000 + j identifies the source pixel (i, j) (ids > 255: PIL's 32-bit path).
    rows, cols = np.meshgrid(np.arange(size_in[0]), np.arange(size_in[1]), indexing="ij")
    ids = rows * 1000 + cols
    _, train = resize_pair(torch.zeros(3, *size_in), torch.from_numpy(ids), *size_out)
    inference = resize_label_map(ids.astype(np.int32), size_out)
    train = train.numpy()
    for axis, source in ((0, lambda v: v // 1000), (1, lambda v: v % 1000)):
        n_in, n_out = size_in[axis], size_out[axis]
        index = np.arange(n_out)
        # Output index i samples (i + 0.5) * n_in / n_out: a tie when that is an integer.
        tie = ((2 * index + 1) * n_in) % (2 * n_out) == 0
        tie = tie[:, None] if axis == 0 else tie[None, :]
        source_train, source_pil = source(train), source(inference)
        assert not ((source_train != source_pil) & ~tie).any()
        assert np.abs(source_train - source_pil).max() <= 1


def _photo() -> np.ndarray:
    photos = sorted((SHARED_DATA / "ade20k_sample" / "images").glob("*.jpg"))
    if photos:
        with Image.open(photos[0]) as image:
            return np.asarray(image.convert("RGB").reduce(4))
    return np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.mark.parametrize("short_side", [48, 200])
def test_eval_transform_and_processor_agree_within_the_bound(short_side):
    image = _photo()
    labels = np.zeros(image.shape[:2], np.int64)
    train, _ = EvalTransform(short_side=short_side)(image, labels)
    size_out = tuple(train.shape[1:])
    processor = MaskFormerImageProcessor(
        size={"height": size_out[0], "width": size_out[1]}, size_divisor=0
    )
    inference = processor(image, return_tensors="np")["pixel_values"][0]
    bound = skew_bound(image.shape[:2], size_out)
    per_channel = bound / (255 * np.asarray(IMAGENET_STD))[:, None, None] + 1e-5
    difference = np.abs(train.numpy().astype(np.float64) - inference)
    assert (difference <= per_channel).all()
