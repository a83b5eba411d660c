"""Sliding-window inference: blending weights, band-wise reduction, segment merging, bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_DATA, requires_shared_data
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from maskformer.engine.sliding_window import (
    check_window,
    edge_ramp,
    sliding_window_segments,
    sliding_window_semantic,
    tile_starts,
)
from maskformer.presets import get_preset


@pytest.fixture(scope="module")
def tiny_model() -> MaskFormerForInstanceSegmentation:
    torch.manual_seed(0)
    return MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", num_labels=5)).eval()


def _photo(size: tuple[int, int]) -> Image.Image:
    path = SHARED_DATA / "ade20k_sample" / "images" / "ADE_val_00000001.jpg"
    return Image.open(path).convert("RGB").resize(size[::-1], Image.BILINEAR)


def test_tile_starts_cover_the_length_with_the_last_tile_flush() -> None:
    assert tile_starts(128, 128, 0.33) == [0]
    starts = tile_starts(512, 128, 1 / 3)
    assert starts[0] == 0 and starts[-1] == 512 - 128
    assert all(s % 4 == 0 for s in starts)
    assert all(b - a <= 128 for a, b in zip(starts, starts[1:]))  # no gaps


def test_edge_ramp_is_positive_and_one_without_neighbours() -> None:
    assert torch.equal(edge_ramp(8, 0, 0), torch.ones(8))
    ramp = edge_ramp(8, 3, 2)
    assert (ramp > 0).all() and ramp[3:6].eq(1).all()
    assert ramp[0] < ramp[1] < ramp[2] < 1 and ramp[-1] < ramp[-2] < 1


@requires_shared_data
def test_one_window_equals_whole_image_inference(tiny_model) -> None:
    """With one tile every weight is exactly 1 (no neighbour), so the blended scores are the
    tile's scores bit for bit, and the band-wise resize equals one whole-map resize (same source
    coordinates: each band is resized with its neighbouring rows as halo)."""
    processor = MaskFormerImageProcessor()
    image = _photo((256, 320))
    ours = sliding_window_semantic(tiny_model, processor, image, window=(256, 320))
    inputs = processor(images=[image], do_resize=False, return_tensors="pt")
    with torch.inference_mode():
        outputs = tiny_model(pixel_values=inputs["pixel_values"])
    whole = processor.post_process_semantic_segmentation(outputs, target_sizes=[(256, 320)])[0]
    assert torch.equal(ours, whole)


@requires_shared_data
def test_band_reduction_equals_a_whole_map_reduction(tiny_model, monkeypatch) -> None:
    """An image 4 windows high and wide: the result equals blending every tile into one
    full-image score map and resizing it at once (the reference computation), computed here
    directly; bands of 8 mask rows are resized with halo rows, so values are identical."""
    import maskformer.engine.tiles as sw

    processor = MaskFormerImageProcessor()
    image = _photo((256, 256))
    window = (64, 64)
    ours = sliding_window_semantic(tiny_model, processor, image, window=window, overlap=0.25)
    assert ours.shape == (256, 256) and ours.dtype == torch.int64

    rows = tile_starts(256, 64, 0.25)
    array = np.asarray(image)
    total = torch.zeros(5, 64, 64)
    weight = torch.zeros(64, 64)
    for i, top in enumerate(rows):
        for j, left in enumerate(rows):
            class_logits, mask_logits = sw.run_tiles(
                tiny_model, processor, [array[top : top + 64, left : left + 64]]
            )
            scores = torch.einsum(
                "bqc,bqhw->bchw", class_logits.softmax(-1)[..., :-1], mask_logits.sigmoid()
            )[0]
            w = sw.tile_weights(rows, i, 64)[:, None] * sw.tile_weights(rows, j, 64)[None, :]
            total[:, top // 4 : top // 4 + 16, left // 4 : left // 4 + 16] += scores * w
            weight[top // 4 : top // 4 + 16, left // 4 : left // 4 + 16] += w
    expected = F.interpolate((total / weight)[None], size=(256, 256), mode="bilinear")[0]
    assert torch.equal(ours, expected.argmax(0))


class _BrightnessModel(torch.nn.Module):
    """A stand-in model: query 0 (class 1) claims bright pixels, query 1 (class 0) dark ones."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(id2label={0: "dark", 1: "bright"})

    def forward(self, pixel_values: torch.Tensor, **_: object) -> SimpleNamespace:
        brightness = F.avg_pool2d(pixel_values.mean(dim=1, keepdim=True), 4)[:, 0]
        masks = torch.stack([brightness * 20, -brightness * 20], dim=1)
        classes = torch.tensor([[0.0, 9.0, 0.0], [9.0, 0.0, 0.0]]).expand(len(masks), 2, 3)
        return SimpleNamespace(class_queries_logits=classes, masks_queries_logits=masks)


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_a_segment_cut_by_tile_borders_is_one_segment(task) -> None:
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:256, :256]
    image[(yy - 128) ** 2 + (xx - 128) ** 2 < 90**2] = 255  # one disc across every tile border
    result = sliding_window_segments(
        _BrightnessModel(),
        MaskFormerImageProcessor(),
        Image.fromarray(image),
        task=task,
        window=(96, 96),
        overlap=0.5,
        threshold=0.5,
    )
    bright = [s for s in result["segments_info"] if s["label_id"] == 1]
    assert len(bright) == 1
    disc = result["segmentation"].numpy() == bright[0]["id"]
    truth = (yy - 128) ** 2 + (xx - 128) ** 2 < 90**2
    assert (disc == truth).mean() > 0.97


@pytest.mark.parametrize(
    ("window", "overlap", "message"),
    [
        ((512, 512), 0.3, "larger than the image"),
        ((64, 64), 1.0, "--overlap"),
        ((64, 64), -0.1, "--overlap"),
        ((60, 64), 0.3, "multiple of 32"),
    ],
)
def test_bad_window_settings_name_the_flag(window, overlap, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_window(window, overlap, (256, 256))
