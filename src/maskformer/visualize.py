"""Pictures a person can read: segmentation overlays with outlines and a legend, contact sheets.

Every overlay is built the same way: a segment map ``(H, W)`` of integer segment ids (0 = nothing)
plus the class of each segment. Each segment is alpha-blended over the photo in its class colour
(instances of one class get slightly different shades), segment outlines are drawn in a dark
colour, and a legend beside the picture lists the classes present with their names from the
config's ``id2label``.

Colours are deterministic: class ``k`` always gets ``class_color(k)``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Hand-picked, mutually distinct colours for the first classes (RGB); later classes are spread
# around the hue circle by the golden angle.
_BASE_PALETTE = np.array(
    [
        (128, 128, 128),  # grey
        (230, 25, 75),  # red
        (60, 180, 75),  # green
        (0, 130, 200),  # blue
        (255, 225, 25),  # yellow
        (245, 130, 48),  # orange
        (145, 30, 180),  # purple
        (70, 240, 240),  # cyan
        (240, 50, 230),  # magenta
        (210, 245, 60),  # lime
        (250, 190, 212),  # pink
        (0, 128, 128),  # teal
        (220, 190, 255),  # lavender
        (170, 110, 40),  # brown
        (255, 250, 200),  # beige
        (128, 0, 0),  # maroon
        (170, 255, 195),  # mint
        (128, 128, 0),  # olive
        (255, 215, 180),  # apricot
        (0, 0, 128),  # navy
    ],
    dtype=np.uint8,
)
_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949
OUTLINE_COLOR = (20, 20, 20)
ImageLike = Image.Image | np.ndarray | torch.Tensor


def class_color(class_id: int) -> tuple[int, int, int]:
    """The deterministic RGB colour of class ``class_id`` (any non-negative integer)."""
    if class_id < 0:
        raise ValueError(f"class_id must be >= 0, got {class_id}")
    if class_id < len(_BASE_PALETTE):
        return tuple(int(v) for v in _BASE_PALETTE[class_id])
    hue = (class_id * _GOLDEN_RATIO_CONJUGATE) % 1.0
    saturation = 0.55 + 0.35 * ((class_id * 7) % 3) / 2
    value = 0.75 + 0.2 * ((class_id * 5) % 2)
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def class_palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 array: row ``k`` is ``class_color(k)``."""
    return np.array([class_color(k) for k in range(num_classes)], dtype=np.uint8).reshape(-1, 3)


def segment_boundaries(segment_map: np.ndarray | torch.Tensor) -> np.ndarray:
    """Boolean ``(H, W)``: pixels whose right, left, lower or upper neighbour has another id."""
    ids = _to_numpy(segment_map)
    if ids.ndim != 2:
        raise ValueError(f"segment_map must have shape (height, width), got {ids.shape}")
    edge = np.zeros(ids.shape, dtype=bool)
    horizontal = ids[:, 1:] != ids[:, :-1]
    vertical = ids[1:, :] != ids[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge


def draw_segments(
    image: ImageLike,
    segment_map: np.ndarray | torch.Tensor,
    segment_classes: Mapping[int, int],
    id2label: Mapping[int, str] | None = None,
    alpha: float = 0.5,
    outline: bool = True,
    legend: bool = True,
    scale: int = 1,
) -> Image.Image:
    """Blend segments over ``image`` and add outlines and a legend.

    Args:
        image: RGB picture, PIL image, uint8 ``(H, W, 3)`` array or tensor.
        segment_map: integer ``(H, W)`` segment ids, 0 (or any id missing from
            ``segment_classes``) = not coloured.
        segment_classes: segment id -> class id.
        id2label: class id -> name for the legend (``"class k"`` when absent).
        alpha: opacity of the class colours, 0..1.
        outline: draw dark segment outlines.
        legend: add a legend panel to the right listing the classes present.
        scale: integer upscaling (nearest) before drawing, for small images.
    Returns:
        An RGB PIL image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    pixels = _to_rgb_array(image)
    ids = _to_numpy(segment_map).astype(np.int64)
    if ids.shape != pixels.shape[:2]:
        raise ValueError(
            f"segment_map has shape {ids.shape} but image has size {pixels.shape[:2]} (H, W)"
        )
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
        ids = ids.repeat(scale, axis=0).repeat(scale, axis=1)

    segment_ids = np.array(sorted(segment_classes), dtype=np.int64)
    colors = np.zeros((len(segment_ids) + 1, 3), dtype=np.float32)
    for row, segment_id in enumerate(segment_ids, start=1):
        colors[row] = _instance_shade(class_color(int(segment_classes[int(segment_id)])), row)
    # row 0 = uncoloured; ids not in segment_classes map to row 0 too.
    rows = np.searchsorted(segment_ids, ids)
    rows = np.clip(rows, 0, max(len(segment_ids) - 1, 0))
    known = (segment_ids[rows] == ids) if len(segment_ids) else np.zeros(ids.shape, dtype=bool)
    rows = np.where(known, rows + 1, 0)

    blended = pixels.astype(np.float32)
    weight = np.where(known, alpha, 0.0)[..., None]
    blended = blended * (1 - weight) + colors[rows] * weight
    if outline:
        blended[segment_boundaries(np.where(known, ids, -1))] = OUTLINE_COLOR
    picture = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    if not legend:
        return picture
    present = sorted({int(segment_classes[int(s)]) for s in np.unique(ids[known])})
    return _add_legend(picture, present, id2label or {})


def overlay_semantic(
    image: ImageLike,
    semantic_map: np.ndarray | torch.Tensor,
    id2label: Mapping[int, str] | None = None,
    ignore_index: int | None = 255,
    **kwargs: Any,
) -> Image.Image:
    """Overlay of a class map ``(H, W)``; pixels equal to ``ignore_index`` stay uncoloured.

    Keyword arguments go to :func:`draw_segments` (``alpha``, ``outline``, ``legend``, ``scale``).
    """
    classes = _to_numpy(semantic_map).astype(np.int64)
    present = [int(c) for c in np.unique(classes) if c >= 0 and c != ignore_index]
    # Shift ids by one so that class 0 is a real segment and 0 stays "nothing".
    ids = np.where(np.isin(classes, present), classes + 1, 0)
    return draw_segments(image, ids, {c + 1: c for c in present}, id2label, **kwargs)


def overlay_panoptic(
    image: ImageLike,
    segmentation: np.ndarray | torch.Tensor,
    segments_info: Sequence[Mapping[str, Any]],
    id2label: Mapping[int, str] | None = None,
    **kwargs: Any,
) -> Image.Image:
    """Overlay of a panoptic result: ``segmentation (H, W)`` ids and their ``segments_info``.

    Each entry of ``segments_info`` needs ``"id"`` and ``"label_id"`` (the processor's output) or
    ``"category_id"`` (the COCO format).
    """
    segment_classes = {int(info["id"]): int(_segment_class(info)) for info in segments_info}
    return draw_segments(image, segmentation, segment_classes, id2label, **kwargs)


def overlay_instances(
    image: ImageLike,
    masks: np.ndarray | torch.Tensor,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    id2label: Mapping[int, str] | None = None,
    scores: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    **kwargs: Any,
) -> Image.Image:
    """Overlay of (possibly overlapping) binary masks ``(N, H, W)`` with class ``labels (N,)``.

    Where masks overlap the one with the higher score (or the later one) is drawn on top.
    """
    binary = _to_numpy(masks).astype(bool)
    classes = _to_numpy(labels).astype(np.int64).reshape(-1)
    if binary.ndim != 3 or binary.shape[0] != classes.shape[0]:
        raise ValueError(
            f"masks must be (N, H, W) with N = len(labels); got {binary.shape} and {classes.shape}"
        )
    order = np.arange(len(classes))
    if scores is not None:
        order = np.argsort(_to_numpy(scores).reshape(-1), kind="stable")
    ids = np.zeros(binary.shape[1:], dtype=np.int64)
    for rank, index in enumerate(order, start=1):  # one pass per instance, not per pixel
        ids[binary[index]] = rank
    segment_classes = {rank: int(classes[index]) for rank, index in enumerate(order, start=1)}
    return draw_segments(image, ids, segment_classes, id2label, **kwargs)


def contact_sheet(
    images: Sequence[Image.Image],
    columns: int = 4,
    titles: Sequence[str] | None = None,
    padding: int = 6,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Arrange ``images`` on a grid of ``columns`` with an optional title above each one.

    Cells take the size of the largest image; smaller images are centred in their cell.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    font = ImageFont.load_default()
    cell_width = max(image.width for image in images)
    cell_height = max(image.height for image in images)
    title_height = _text_height(font) + 4 if titles else 0
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    sheet = Image.new(
        "RGB",
        (
            columns * (cell_width + padding) + padding,
            rows * (cell_height + title_height + padding) + padding,
        ),
        background,
    )
    draw = ImageDraw.Draw(sheet)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        left = padding + column * (cell_width + padding)
        top = padding + row * (cell_height + title_height + padding)
        if titles:
            draw.text(
                (left, top), _fit_text(draw, titles[index], font, cell_width), (0, 0, 0), font
            )
        sheet.paste(
            image.convert("RGB"),
            (
                left + (cell_width - image.width) // 2,
                top + title_height + (cell_height - image.height) // 2,
            ),
        )
    return sheet


# ------------------------------------------------------------------------------------- helpers
def _segment_class(info: Mapping[str, Any]) -> int:
    if "label_id" in info:
        return info["label_id"]
    if "category_id" in info:
        return info["category_id"]
    raise KeyError(f"segment {info.get('id')} has neither 'label_id' nor 'category_id'")


def _instance_shade(color: tuple[int, int, int], row: int) -> np.ndarray:
    """``color`` made slightly lighter or darker per segment, so touching instances differ."""
    factor = (0.82, 1.0, 1.15, 0.9, 1.08)[row % 5]
    return np.clip(np.array(color, dtype=np.float32) * factor, 0, 255)


def _to_numpy(array: np.ndarray | torch.Tensor | Sequence[Any]) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _to_rgb_array(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    pixels = _to_numpy(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.ndim != 3 or pixels.shape[-1] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        raise TypeError(f"image array must be uint8, got {pixels.dtype}")
    return pixels[..., :3]


def _text_height(font: ImageFont.ImageFont) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return bottom - top + 2


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _add_legend(
    picture: Image.Image, class_ids: Sequence[int], id2label: Mapping[int, str]
) -> Image.Image:
    """``picture`` with a white panel on its right: one colour swatch and name per class."""
    font = ImageFont.load_default()
    line = max(_text_height(font), 12) + 4
    swatch = line - 6
    names = [str(id2label.get(k, id2label.get(str(k), f"class {k}"))) for k in class_ids]
    measure = ImageDraw.Draw(picture)
    text_width = max((measure.textlength(name, font=font) for name in names), default=0)
    panel_width = int(8 + swatch + 6 + text_width + 8)
    height = max(picture.height, 8 + line * len(names))
    canvas = Image.new("RGB", (picture.width + panel_width, height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, (class_id, name) in enumerate(zip(class_ids, names)):
        x, y = picture.width + 8, 4 + row * line
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], class_color(class_id), OUTLINE_COLOR)
        draw.text((x + swatch + 6, y + 2), name, (0, 0, 0), font)
    return canvas
