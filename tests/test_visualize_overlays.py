"""Overlays and contact sheets: colours, outlines, legends, sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.visualize import (
    OUTLINE_COLOR,
    class_color,
    class_palette,
    contact_sheet,
    draw_segments,
    overlay_instances,
    overlay_panoptic,
    overlay_semantic,
    segment_boundaries,
)


def _grey_image(height: int = 40, width: int = 60) -> np.ndarray:
    return np.full((height, width, 3), 100, dtype=np.uint8)


def test_palette_is_deterministic_and_distinct():
    palette = class_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    assert np.array_equal(palette, class_palette(300))
    assert tuple(palette[7]) == class_color(7)
    assert len({tuple(c) for c in palette[:150]}) == 150  # ADE20K's classes all differ
    with pytest.raises(ValueError):
        class_color(-1)


def test_segment_boundaries_marks_both_sides_of_an_edge():
    ids = np.zeros((5, 6), dtype=np.int64)
    ids[:, 3:] = 1
    edges = segment_boundaries(torch.from_numpy(ids))
    assert edges[:, 2].all() and edges[:, 3].all()
    assert not edges[:, [0, 1, 4, 5]].any()
    with pytest.raises(ValueError, match="height, width"):
        segment_boundaries(np.zeros(4))


def test_draw_segments_blends_colours_and_outlines():
    image = _grey_image()
    ids = np.zeros((40, 60), dtype=np.int64)
    ids[10:30, 10:30] = 5
    picture = draw_segments(image, ids, {5: 2}, {2: "square"}, alpha=1.0, legend=False)
    pixels = np.asarray(picture)
    assert picture.size == (60, 40)
    assert tuple(pixels[20, 20]) != (100, 100, 100)  # inside: the class colour
    assert tuple(pixels[0, 0]) == (100, 100, 100)  # uncoloured id 0 keeps the photo
    assert tuple(pixels[10, 20]) == OUTLINE_COLOR and tuple(pixels[9, 20]) == OUTLINE_COLOR
    half = np.asarray(draw_segments(image, ids, {5: 2}, alpha=0.5, legend=False, outline=False))
    # The first segment's shade factor is 1.0, so the blend is 0.5 * 100 + 0.5 * colour: halves
    # of integers < 256, exact in float32, rounded half up to uint8. The only slack allowed is
    # one level for that rounding (in case a shade factor that is not a power of two is used).
    expected = np.floor(0.5 * 100 + 0.5 * np.array(class_color(2), dtype=np.float64) + 0.5)
    assert np.all(np.abs(half[20, 20].astype(float) - expected) <= 1)


def test_legend_and_scale_grow_the_picture():
    ids = np.zeros((40, 60), dtype=np.int64)
    ids[:20] = 1
    plain = draw_segments(_grey_image(), ids, {1: 0}, {0: "sky"}, legend=False, scale=2)
    with_legend = draw_segments(_grey_image(), ids, {1: 0}, {0: "sky"}, scale=2)
    assert plain.size == (120, 80)
    assert with_legend.width > 120 and with_legend.height >= 80
    # The legend panel holds the class colour swatch.
    panel = np.asarray(with_legend)[:, 120:]
    assert (np.abs(panel.astype(int) - np.array(class_color(0))).sum(-1) == 0).any()


def test_overlay_semantic_panoptic_and_instances():
    image = Image.fromarray(_grey_image())
    semantic = np.zeros((40, 60), dtype=np.int64)
    semantic[:, 30:] = 3
    semantic[0, 0] = 255  # ignored: stays uncoloured
    out = overlay_semantic(
        image, semantic, {0: "a", 3: "d"}, legend=False, alpha=1.0, outline=False
    )
    assert tuple(np.asarray(out)[0, 0]) == (100, 100, 100)
    assert out.size == (60, 40)

    panoptic = torch.zeros(40, 60, dtype=torch.int32)
    panoptic[5:15, 5:15] = 1
    panoptic[20:30, 20:30] = 2
    segments = [{"id": 1, "label_id": 1}, {"id": 2, "category_id": 1}]
    out = np.asarray(overlay_panoptic(image, panoptic, segments, legend=False, alpha=1.0))
    # Two instances of one class get different shades.
    assert tuple(out[10, 10]) != tuple(out[25, 25])

    masks = np.zeros((2, 40, 60), dtype=bool)
    masks[0, 0:20, 0:20] = True
    masks[1, 10:30, 10:30] = True
    low_on_top = overlay_instances(image, masks, [1, 2], scores=[0.9, 0.1], legend=False, alpha=1.0)
    high_on_top = overlay_instances(
        image, masks, [1, 2], scores=[0.1, 0.9], legend=False, alpha=1.0
    )
    assert tuple(np.asarray(low_on_top)[15, 15]) != tuple(np.asarray(high_on_top)[15, 15])
    with pytest.raises(ValueError, match="masks"):
        overlay_instances(image, masks, [1], legend=False)


def test_bad_overlay_arguments():
    with pytest.raises(ValueError, match="segment_map has shape"):
        draw_segments(_grey_image(), np.zeros((3, 3), dtype=np.int64), {})
    with pytest.raises(ValueError, match="alpha"):
        draw_segments(_grey_image(), np.zeros((40, 60), dtype=np.int64), {}, alpha=2.0)
    with pytest.raises(TypeError, match="uint8"):
        draw_segments(np.zeros((40, 60, 3)), np.zeros((40, 60), dtype=np.int64), {})


def test_contact_sheet_grid_and_titles():
    tiles = [Image.new("RGB", (30, 20), (255, 0, 0)), Image.new("RGB", (50, 10), (0, 255, 0))]
    tiles.append(Image.new("RGB", (10, 10), (0, 0, 255)))
    sheet = contact_sheet(tiles, columns=2, titles=["a", "b", "c"], padding=4)
    assert sheet.mode == "RGB"
    assert sheet.width == 2 * (50 + 4) + 4
    untitled = contact_sheet(tiles, columns=2, padding=4)
    assert untitled.height == 2 * (20 + 4) + 4 and sheet.height > untitled.height
    pixels = np.asarray(untitled)
    assert (pixels == [0, 0, 255]).all(-1).sum() == 100  # every tile pasted whole
    with pytest.raises(ValueError, match="titles"):
        contact_sheet(tiles, titles=["a"])
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([])
