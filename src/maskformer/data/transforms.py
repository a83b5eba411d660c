"""Augmentations of the MaskFormer training recipe on (image, label map) pairs.

Every transform maps an `(height, width, 3)` uint8 image and an `(height, width)` integer label map
to a normalised float32 `(3, H, W)` tensor and an int64 `(H, W)` label map. All random draws come
from the `torch.Generator` passed in, so a sample is a pure function of that generator's seed.

`TrainTransform` follows the original recipe: random resize of the short side by a factor in
[0.5, 2.0] of a base size, random crop to a fixed size (padding the image with 0 after
normalisation and the label map with ``ignore_index``), horizontal flip, photometric jitter
(brightness, contrast, saturation, hue), then ImageNet normalisation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# RGB -> YIQ; hue is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_LUMA = (0.299, 0.587, 0.114)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """`(height, width, 3)` uint8 array -> `(3, height, width)` float32 tensor in [0, 255]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (height, width, 3), got shape {image.shape}")
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32)


def normalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """`(3, H, W)` float image in [0, 255] -> `(image / 255 - mean) / std`."""
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device)[:, None, None]
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device)[:, None, None]
    return (image / 255.0 - mean_t) / std_t


def resize_pair(
    image: torch.Tensor, label_map: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a `(3, H, W)` float image (bilinear, antialiased) and its label map (nearest)."""
    if (height, width) == tuple(image.shape[-2:]):
        return image, label_map
    image = F.interpolate(
        image[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )[0]
    in_height, in_width = label_map.shape
    rows = (
        ((torch.arange(height) + 0.5) * (in_height / height))
        .floor()
        .long()
        .clamp_max(in_height - 1)
    )
    cols = ((torch.arange(width) + 0.5) * (in_width / width)).floor().long().clamp_max(in_width - 1)
    return image, label_map[rows][:, cols]


def short_side_size(
    height: int, width: int, short_side: int, max_size: int | None
) -> tuple[int, int]:
    """Output `(height, width)` with the short side at `short_side`, long side capped at `max_size`."""
    scale = short_side / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def adjust_hue(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate the hue of a `(3, H, W)` RGB image by `degrees` (a linear YIQ rotation)."""
    angle = math.radians(degrees)
    rotation = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [0.0, math.cos(angle), -math.sin(angle)],
            [0.0, math.sin(angle), math.cos(angle)],
        ],
        dtype=torch.float64,
    )
    matrix = (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).to(image.dtype)
    return torch.einsum("ij,jhw->ihw", matrix, image)


class PhotometricJitter:
    """Random brightness, contrast, saturation and hue changes, each applied with probability 1/2.

    Args:
        brightness_delta: brightness shift drawn from [-delta, delta] (pixel units, 0..255).
        contrast_range: contrast factor range.
        saturation_range: saturation factor range.
        hue_degrees: hue rotation drawn from [-degrees, degrees].
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_degrees: float = 18.0,
    ):
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_degrees = hue_degrees

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Jitter a `(3, H, W)` float image in [0, 255]; always draws 8 numbers from `generator`."""
        apply, amount = torch.rand(2, 4, generator=generator, dtype=torch.float64).tolist()
        if apply[0] < 0.5:
            image = image + (2 * amount[0] - 1) * self.brightness_delta
        if apply[1] < 0.5:
            low, high = self.contrast_range
            image = image * (low + (high - low) * amount[1])
        if apply[2] < 0.5:
            low, high = self.saturation_range
            luma = torch.tensor(_LUMA, dtype=image.dtype)[:, None, None]
            gray = (image * luma).sum(0, keepdim=True)
            image = gray + (image - gray) * (low + (high - low) * amount[2])
        if apply[3] < 0.5:
            image = adjust_hue(image, (2 * amount[3] - 1) * self.hue_degrees)
        return image.clamp(0.0, 255.0)


class TrainTransform:
    """Random scale, crop (with padding), flip and photometric jitter, then normalisation.

    Args:
        crop_size: output `(height, width)` (or one int for a square).
        base_size: short side before scaling; the scaled short side is `base_size * factor`.
        scale_range: range of the random factor.
        max_size: optional cap on the long side after resizing.
        flip_prob: probability of a horizontal flip.
        jitter: True for the default `PhotometricJitter`, a `PhotometricJitter`, or False/None for
            no jitter.
        mean, std: normalisation constants (RGB, for images in [0, 1]).
        ignore_index: label value of padded pixels.
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int] = 512,
        base_size: int = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        max_size: int | None = None,
        flip_prob: float = 0.5,
        jitter: PhotometricJitter | bool | None = True,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        ignore_index: int = 255,
    ):
        self.crop_size = _pair(crop_size)
        self.base_size = base_size
        self.scale_range = scale_range
        self.max_size = max_size
        self.flip_prob = flip_prob
        self.jitter = PhotometricJitter() if jitter is True else (jitter or None)
        self.mean = mean
        self.std = std
        self.ignore_index = ignore_index

    def __call__(
        self, image: np.ndarray, label_map: np.ndarray, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(pixel_values (3, crop_h, crop_w) float32, label_map (crop_h, crop_w) int64)`."""
        pixels = image_to_tensor(image)
        labels = torch.as_tensor(np.asarray(label_map), dtype=torch.int64)
        scale_draw, top_draw, left_draw, flip_draw = torch.rand(
            4, generator=generator, dtype=torch.float64
        ).tolist()

        low, high = self.scale_range
        short_side = max(1, round(self.base_size * (low + (high - low) * scale_draw)))
        height, width = short_side_size(*labels.shape, short_side, self.max_size)
        pixels, labels = resize_pair(pixels, labels, height, width)

        crop_height, crop_width = self.crop_size
        top = int(top_draw * (max(height - crop_height, 0) + 1))
        left = int(left_draw * (max(width - crop_width, 0) + 1))
        pixels = pixels[:, top : top + crop_height, left : left + crop_width]
        labels = labels[top : top + crop_height, left : left + crop_width]

        pixels = self.jitter(pixels, generator) if self.jitter else pixels
        pixels = normalize(pixels, self.mean, self.std)

        # Pad bottom/right to the crop size: image with 0 (after normalisation), labels ignored.
        out_pixels = pixels.new_zeros((3, crop_height, crop_width))
        out_labels = torch.full((crop_height, crop_width), self.ignore_index, dtype=torch.int64)
        out_pixels[:, : pixels.shape[1], : pixels.shape[2]] = pixels
        out_labels[: labels.shape[0], : labels.shape[1]] = labels

        if flip_draw < self.flip_prob:
            out_pixels, out_labels = out_pixels.flip(-1), out_labels.flip(-1)
        return out_pixels.contiguous(), out_labels.contiguous()


class EvalTransform:
    """Deterministic conversion: optional short-side resize, then normalisation.

    Args:
        short_side: resize the short side to this size (None keeps the image size).
        max_size: optional cap on the long side.
        mean, std: normalisation constants.
        ignore_index: label value of ignored pixels (kept for symmetry with `TrainTransform`).
    """

    def __init__(
        self,
        short_side: int | None = None,
        max_size: int | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        ignore_index: int = 255,
    ):
        self.short_side = short_side
        self.max_size = max_size
        self.mean = mean
        self.std = std
        self.ignore_index = ignore_index

    def __call__(
        self, image: np.ndarray, label_map: np.ndarray, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(pixel_values (3, H, W) float32, label_map (H, W) int64)`."""
        pixels = image_to_tensor(image)
        labels = torch.as_tensor(np.asarray(label_map), dtype=torch.int64)
        if self.short_side is not None:
            height, width = short_side_size(*labels.shape, self.short_side, self.max_size)
            pixels, labels = resize_pair(pixels, labels, height, width)
        return normalize(pixels, self.mean, self.std).contiguous(), labels
