"""What the image processor accepts: channel counts, degenerate sizes, wide PIL modes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.processing import MaskFormerImageProcessor

MEAN4, STD4 = [0.5, 0.4, 0.3, 0.45], [0.2, 0.3, 0.25, 0.22]
SMALL = {"shortest_edge": 48, "longest_edge": 96}


def _reference(hf, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf.MaskFormerImageProcessor(**kwargs)


def assert_same_pixels(ours, theirs) -> None:
    """Same ``pixel_values``; our ``pixel_mask`` all ones (one unpadded image). The reference's
    mask is wrong with an explicit channels-last ``input_data_format`` (a known 4.34.1 bug)."""
    a, b = ours["pixel_values"], theirs["pixel_values"]
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
    assert ours["pixel_mask"].shape == (1, *a.shape[2:]) and ours["pixel_mask"].all()


def _four_channels(seed: int, last_channel: np.ndarray | None = None) -> np.ndarray:
    """``(4, 29, 41)`` uint8, RGB + a near-infrared-like fourth channel."""
    image = np.random.default_rng(seed).integers(0, 256, (4, 29, 41), dtype=np.uint8)
    if last_channel is not None:
        image[3] = last_channel
    return image


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_four_channel_arrays_keep_all_channels_like_the_reference(hf, layout):
    chw = _four_channels(0)
    image = chw if layout == "channels_first" else chw.transpose(1, 2, 0).copy()
    kwargs = {"image_mean": MEAN4, "image_std": STD4, "do_resize": False}
    for given in (image, torch.from_numpy(image)):
        ours = MaskFormerImageProcessor(**kwargs)(
            given, input_data_format=layout, return_tensors="np"
        )
        theirs = _reference(hf, **kwargs)(image, input_data_format=layout, return_tensors="np")
        assert ours["pixel_values"].shape == (1, 4, 29, 41)
        assert_same_pixels(ours, theirs)
    # Without `input_data_format` the 4-channel layout is inferred (the reference raises).
    inferred = MaskFormerImageProcessor(**kwargs)(image, return_tensors="np")
    np.testing.assert_array_equal(inferred["pixel_values"], ours["pixel_values"])


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_four_channel_resize_matches_the_reference_where_it_is_right(hf, layout):
    kwargs = {"image_mean": MEAN4, "image_std": STD4, "size": SMALL}

    def arrange(chw: np.ndarray) -> np.ndarray:
        return chw if layout == "channels_first" else chw.transpose(1, 2, 0).copy()

    # A constant 255 fourth channel: PIL's RGBA resize (premultiplied by the fourth channel)
    # then changes nothing, so the reference's result is right and ours must equal it.
    opaque = arrange(_four_channels(1, last_channel=np.full((29, 41), 255, np.uint8)))
    ours = MaskFormerImageProcessor(**kwargs)(opaque, input_data_format=layout, return_tensors="np")
    theirs = _reference(hf, **kwargs)(opaque, input_data_format=layout, return_tensors="np")
    assert_same_pixels(ours, theirs)

    # A varying fourth channel: every channel must resize on its own. Channels 0-2 equal the
    # reference on the RGB image alone, channel 3 equals it on that channel repeated thrice.
    chw = _four_channels(2)
    ours = MaskFormerImageProcessor(**kwargs)(
        arrange(chw), input_data_format=layout, return_tensors="np"
    )["pixel_values"][0]
    rgb = _reference(hf, image_mean=MEAN4[:3], image_std=STD4[:3], size=SMALL)(
        chw[:3], return_tensors="np"
    )["pixel_values"][0]
    nir = _reference(hf, image_mean=[MEAN4[3]] * 3, image_std=[STD4[3]] * 3, size=SMALL)(
        np.repeat(chw[3:], 3, axis=0), return_tensors="np"
    )["pixel_values"][0]
    np.testing.assert_allclose(ours[:3], rgb, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours[3], nir[0], rtol=0, atol=1e-6)
    # The reference weights the colours by the fourth channel (PIL treats it as alpha).
    theirs = _reference(hf, **kwargs)(arrange(chw), input_data_format=layout, return_tensors="np")
    assert np.abs(theirs["pixel_values"][0][:3] - ours[:3]).max() > 0.1


def test_other_channel_counts_are_kept_with_matching_statistics():
    image = np.random.default_rng(3).integers(0, 256, (2, 10, 12), dtype=np.uint8)
    processor = MaskFormerImageProcessor(image_mean=[0.5, 0.5], image_std=[0.25, 0.25])
    out = processor(image, input_data_format="channels_first", return_tensors="np")
    assert out["pixel_values"].shape[:2] == (1, 2)
    with pytest.raises(ValueError, match="`image_mean` has 3 values but the images have 4"):
        MaskFormerImageProcessor()(np.zeros((4, 10, 12), np.uint8))
    with pytest.raises(ValueError, match="same number of channels"):
        MaskFormerImageProcessor(image_mean=0.5, image_std=0.25)(
            [np.zeros((10, 12, 3), np.uint8), np.zeros((4, 10, 12), np.uint8)]
        )


def test_pil_rgba_drops_alpha_and_wide_pil_modes_are_scaled():
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (12, 16, 1), dtype=np.uint8)
    processor = MaskFormerImageProcessor(do_resize=False)
    expected = processor(rgb, return_tensors="np")["pixel_values"]
    rgba = Image.fromarray(np.concatenate([rgb, alpha], axis=-1))
    np.testing.assert_array_equal(processor(rgba, return_tensors="np")["pixel_values"], expected)
    # 16-bit PIL images: scaled from 0..65535 to 0..255, as `read_image` does.
    sixteen = np.array([[0, 257, 30000, 65535]], dtype=np.uint16)
    eight = np.round(sixteen / 257).astype(np.uint8)
    got = processor(Image.fromarray(sixteen), return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(got, processor(eight, return_tensors="np")["pixel_values"])


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
        np.zeros((5, 0, 3), np.uint8),
        np.zeros((3, 0, 5), np.float32),
        np.zeros((0, 7), np.uint8),
        torch.zeros(3, 4, 0),
        Image.new("RGB", (0, 5)),
        Image.new("L", (5, 0)),
    ],
    ids=["0x0", "0xN", "Nx0", "chw-0xN", "gray-0xN", "tensor-Nx0", "pil-0xN", "pil-L-Nx0"],
)
def test_empty_images_raise_naming_images_and_the_shape(image):
    with pytest.raises(ValueError, match=r"`images`.*(0|\(0)"):
        MaskFormerImageProcessor()(image)
    with pytest.raises(ValueError, match="`images`"):
        MaskFormerImageProcessor(do_resize=False)(image)


@pytest.mark.parametrize("shape", [(1, 5000, 3), (5000, 1, 3), (2, 9000, 3)])
def test_images_too_thin_to_resize_raise_naming_the_size(shape):
    image = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match=r"`images`.*size \(\d+, \d+\).*resizes to"):
        MaskFormerImageProcessor()(image, input_data_format="channels_last")
    # Without resizing it is processed.
    out = MaskFormerImageProcessor(do_resize=False)(
        image, input_data_format="channels_last", return_tensors="np"
    )
    assert out["pixel_values"].shape == (1, 3, *shape[:2])


def test_one_pixel_images_resize():
    out = MaskFormerImageProcessor()(
        np.full((1, 1, 3), 200, np.uint8), input_data_format="channels_last", return_tensors="np"
    )
    assert out["pixel_values"].shape == (1, 3, 800, 800)
    assert np.ptp(out["pixel_values"][0, 0]) == 0  # a constant image stays constant
