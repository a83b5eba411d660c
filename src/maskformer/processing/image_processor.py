"""``MaskFormerImageProcessor``: images (and label maps) in, model inputs out; logits in, segments out.

The API class of transformers 4.34.1, thin: inputs are coerced by ``inputs.py``, resized and
padded by ``geometry.py``, rescaled and normalised by ``pixels.py``, label maps encoded by
``targets.py``, configs read and written by ``serialization.py``, outputs post-processed by
``postprocess.py`` (through ``post_process_methods.py``). For 8-bit RGB inputs the outputs are
the reference's, bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from maskformer.processing.batch import BatchFeature, check_return_tensors
from maskformer.processing.deprecation import MISSING, deprecated
from maskformer.processing.geometry import (
    DEFAULT_LONGEST_EDGE,
    get_output_size,
    get_size_dict,
    pad_stack,
    padded_size,
    pixel_mask,
    resize_image,
    resize_label_map,
)
from maskformer.processing.inputs import (
    CHANNELS_FIRST,
    CHANNELS_LAST,
    as_list,
    channel_axis,
    check_map_sizes,
    data_format_value,
    image_size,
    image_to_array,
    label_map_to_array,
    processed_to_chw,
    to_numpy,
)
from maskformer.processing.pixels import batch_pixels, channel_stats, copy_writer, make_writer
from maskformer.processing.post_process_methods import PostProcessMixin
from maskformer.processing.rle import (  # noqa: F401 - the reference's module-level helpers
    binary_mask_to_rle,
    convert_segmentation_to_rle,
)
from maskformer.processing.serialization import (  # noqa: F401 (CONFIG_NAME: re-exported)
    CONFIG_NAME,
    TYPE_KEYS,
    ProcessorConfigMixin,
)
from maskformer.processing.targets import convert_segmentation_map_to_binary_masks, encode_labels
from maskformer.utils.constants import IMAGENET_MEAN, IMAGENET_STD


class MaskFormerImageProcessor(PostProcessMixin, ProcessorConfigMixin):
    """Prepares images (and optional label maps) for MaskFormer and post-processes its outputs.

    Arguments and defaults are those of transformers 4.34.1 (``do_resize=True``, shortest edge
    800 / longest 1333, ``size_divisor=32``, bilinear, rescale 1/255, ImageNet normalisation,
    ``ignore_index=None``, ``do_reduce_labels=False``). The legacy keywords ``size_divisibility``,
    ``max_size`` and ``reduce_labels`` are accepted with a FutureWarning.
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    processor_type = "MaskFormerImageProcessor"

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        size_divisor: int = 32,
        resample: int = Image.BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        ignore_index: int | None = None,
        do_reduce_labels: bool = False,
        **kwargs: Any,
    ):
        legacy_divisor = deprecated("size_divisibility", "use `size_divisor`", kwargs)
        size_divisor = size_divisor if legacy_divisor is MISSING else legacy_divisor
        max_size = deprecated("max_size", "use `size['longest_edge']`", kwargs)
        self._max_size = DEFAULT_LONGEST_EDGE if max_size is MISSING else max_size
        legacy_reduce = deprecated("reduce_labels", "use `do_reduce_labels`", kwargs)
        do_reduce_labels = do_reduce_labels if legacy_reduce is MISSING else legacy_reduce
        for key in TYPE_KEYS:
            kwargs.pop(key, None)
        self.do_resize = do_resize
        self.size = get_size_dict(
            size if size is not None else {"shortest_edge": 800, "longest_edge": self._max_size},
            max_size=self._max_size,
        )
        self.resample = int(resample)
        self.size_divisor = size_divisor
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = image_mean if image_mean is not None else list(IMAGENET_MEAN)
        self.image_std = image_std if image_std is not None else list(IMAGENET_STD)
        self.ignore_index = ignore_index
        self.do_reduce_labels = do_reduce_labels
        for key, value in kwargs.items():  # unknown keys (e.g. num_labels) stay as attributes
            setattr(self, key, value)

    @classmethod
    def from_dict(
        cls, image_processor_dict: dict[str, Any], **kwargs: Any
    ) -> MaskFormerImageProcessor:
        """Build from a config dict; legacy keys (``size_divisibility``, ``max_size``,
        ``reduce_labels``, int ``size``) are translated quietly. ``kwargs`` override the dict."""
        config = dict(image_processor_dict)
        config.update(kwargs)
        max_size = config.pop("_max_size", None) if "max_size" not in config else None
        if max_size is not None:
            size = config.get("size")
            if isinstance(size, int) or size is None:
                config["size"] = get_size_dict(size if size is not None else 800, max_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            processor = cls(**config)
        if max_size is not None:
            processor._max_size = max_size
        return processor

    # ------------------------------------------------------------------ image operations

    def resize(
        self,
        image: np.ndarray,
        size: dict[str, int],
        size_divisor: int = 0,
        resample: int = Image.BILINEAR,
        data_format: str | None = None,
        input_data_format: str | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Resize one image (PIL resampling) to the size ``size`` / ``size_divisor`` give; the
        result keeps the input's channel layout unless ``data_format`` says otherwise."""
        max_size = deprecated("max_size", "use `size['longest_edge']`", kwargs)
        size = get_size_dict(size, self._max_size if max_size is MISSING else max_size)
        channels_first = (
            isinstance(image, (np.ndarray, torch.Tensor))
            and np.ndim(image) == 3
            and channel_axis(to_numpy(image), input_data_format) == 0
        )
        array = image_to_array(image, input_data_format)
        out_size = get_output_size(*image_size(array), size, size_divisor)
        resized = resize_image(array, out_size, resample)
        out_format = data_format_value(data_format, "data_format")
        out_first = channels_first if out_format is None else out_format == CHANNELS_FIRST
        return resized.transpose(2, 0, 1) if out_first else resized

    def rescale(self, image: np.ndarray, rescale_factor: float, **kwargs: Any) -> np.ndarray:
        """``float32(image * rescale_factor)``."""
        return np.asarray(image * rescale_factor).astype(np.float32)

    def normalize(
        self,
        image: np.ndarray,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        data_format: str | None = None,
        input_data_format: str | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """``(image - mean) / std`` per channel, in float32."""
        image = np.asarray(image, dtype=np.float32)
        axis = channel_axis(image, input_data_format)
        shape = (-1, 1, 1) if axis == 0 else (1, 1, -1)
        channels = image.shape[axis]
        mean32 = channel_stats(mean, "image_mean", channels).reshape(shape)
        std32 = channel_stats(std, "image_std", channels).reshape(shape)
        return (image - mean32) / std32

    def convert_segmentation_map_to_binary_masks(
        self,
        segmentation_map: np.ndarray,
        instance_id_to_semantic_id: dict[int, int] | None = None,
        ignore_index: int | None = None,
        reduce_labels: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """See the module-level function; ``reduce_labels=None`` uses ``do_reduce_labels``."""
        return convert_segmentation_map_to_binary_masks(
            segmentation_map,
            instance_id_to_semantic_id,
            ignore_index if ignore_index is not None else self.ignore_index,
            reduce_labels if reduce_labels is not None else self.do_reduce_labels,
        )

    # ------------------------------------------------------------------ preprocessing

    def __call__(self, images: Any, segmentation_maps: Any = None, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, segmentation_maps=segmentation_maps, **kwargs)

    def preprocess(
        self,
        images: Any,
        segmentation_maps: Any = None,
        instance_id_to_semantic_id: dict[int, int] | list[dict[int, int]] | None = None,
        do_resize: bool | None = None,
        size: dict[str, int] | None = None,
        size_divisor: int | None = None,
        resample: int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        ignore_index: int | None = None,
        do_reduce_labels: bool | None = None,
        return_tensors: str | None = None,
        data_format: str = CHANNELS_FIRST,
        input_data_format: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Resize, rescale, normalise and pad ``images``; turn ``segmentation_maps`` into
        ``mask_labels`` / ``class_labels``.

        Returns a ``BatchFeature`` with ``pixel_values`` ``(batch, channels, H, W)`` float32
        (zero padded bottom/right to the batch's largest size; 3 channels for PIL images and
        gray arrays, as many as given for other arrays), ``pixel_mask`` ``(batch, H, W)`` int64
        (1 = real pixel) and, with maps, ``mask_labels`` (list of float32 ``(n_i, H, W)``, padded
        with ``ignore_index``, or 0 when it is None) and ``class_labels`` (list of int64 ``(n_i,)``).
        """
        deprecated("pad_and_return_pixel_mask", "it is ignored", kwargs)
        legacy_divisor = deprecated("size_divisibility", "use `size_divisor`", kwargs)
        size_divisor = size_divisor if legacy_divisor is MISSING else legacy_divisor
        max_size = deprecated("max_size", "use `size['longest_edge']`", kwargs)
        legacy_reduce = deprecated("reduce_labels", "use `do_reduce_labels`", kwargs)
        if legacy_reduce is not MISSING:
            if do_reduce_labels is not None:
                raise ValueError("pass either `reduce_labels` or `do_reduce_labels`, not both")
            do_reduce_labels = legacy_reduce
        if kwargs:
            raise TypeError(f"preprocess() got unexpected keyword arguments {sorted(kwargs)}")

        do_resize = self.do_resize if do_resize is None else do_resize
        max_size = self._max_size if max_size in (MISSING, None) else max_size
        size = get_size_dict(self.size if size is None else size, max_size)
        size_divisor = self.size_divisor if size_divisor is None else size_divisor
        resample = self.resample if resample is None else int(resample)
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        image_mean = self.image_mean if image_mean is None else image_mean
        image_std = self.image_std if image_std is None else image_std
        ignore_index = self.ignore_index if ignore_index is None else ignore_index
        do_reduce_labels = self.do_reduce_labels if do_reduce_labels is None else do_reduce_labels
        return_tensors = check_return_tensors(return_tensors)
        data_format = data_format_value(data_format, "data_format") or CHANNELS_FIRST
        if do_rescale and rescale_factor is None:
            raise ValueError("`rescale_factor` must be given when `do_rescale=True`")
        if do_normalize and (image_mean is None or image_std is None):
            raise ValueError("`image_mean` and `image_std` must be given when `do_normalize=True`")

        image_list = as_list(images, "images", 3)
        map_list = (
            None
            if segmentation_maps is None
            else as_list(segmentation_maps, "segmentation_maps", 2)
        )
        if map_list is not None and len(map_list) != len(image_list):
            raise ValueError(
                f"`images` ({len(image_list)}) and `segmentation_maps` ({len(map_list)}) must "
                "have the same length"
            )
        arrays = [image_to_array(image, input_data_format) for image in image_list]
        sizes = [image_size(array) for array in arrays]
        label_maps = None
        if map_list is not None:
            label_maps = [label_map_to_array(m) for m in map_list]
            check_map_sizes(label_maps, sizes, "images")
        if do_resize:
            sizes = [get_output_size(h, w, size, size_divisor) for h, w in sizes]
            pixels = [resize_image(array, s, resample) for array, s in zip(arrays, sizes)]
            if label_maps is not None:
                label_maps = [resize_label_map(m, s) for m, s in zip(label_maps, sizes)]
        else:
            pixels = [np.asarray(array) for array in arrays]
        channels = pixels[0].shape[-1]
        write = make_writer(
            do_rescale, rescale_factor, do_normalize, image_mean, image_std, channels
        )
        pixel_values, mask = batch_pixels(pixels, write)
        return self._batch(
            pixel_values,
            mask,
            label_maps,
            instance_id_to_semantic_id,
            ignore_index,
            do_reduce_labels,
            return_tensors,
            data_format,
        )

    @staticmethod
    def _batch(
        pixel_values: np.ndarray,
        mask: np.ndarray,
        label_maps: list[np.ndarray] | None,
        instance_id_to_semantic_id: Any,
        ignore_index: int | None,
        reduce_labels: bool,
        return_tensors: str | None,
        data_format: str,
    ) -> BatchFeature:
        """The ``BatchFeature`` of padded ``pixel_values`` ``(batch, channels, H, W)`` and
        ``mask`` ``(batch, H, W)``, with the label maps (each the size of its image) encoded at
        the padded size."""
        data: dict[str, Any] = {}
        if label_maps is not None:
            data["mask_labels"], data["class_labels"] = encode_labels(
                label_maps,
                instance_id_to_semantic_id,
                ignore_index,
                reduce_labels,
                tuple(mask.shape[1:]),
            )
        if data_format == CHANNELS_LAST:
            pixel_values = np.ascontiguousarray(pixel_values.transpose(0, 2, 3, 1))
        data["pixel_values"] = pixel_values if return_tensors else list(pixel_values)
        data["pixel_mask"] = mask if return_tensors else list(mask)
        return BatchFeature(data, tensor_type=return_tensors)

    def pad(
        self,
        images: list[np.ndarray],
        constant_values: float = 0,
        return_pixel_mask: bool = True,
        return_tensors: str | None = None,
        data_format: str | None = None,
        input_data_format: str | None = None,
    ) -> BatchFeature:
        """Pad already processed images ``(channels, h, w)`` (or channels-last) bottom/right
        with ``constant_values`` to the batch's largest size; ``pixel_mask`` marks the real
        pixels."""
        chw = [
            processed_to_chw(image, input_data_format, "images")
            for image in as_list(images, "images", 3)
        ]
        if len({image.shape[0] for image in chw}) != 1:
            raise ValueError("`images` must all have the same number of channels")
        batch = pad_stack(chw, constant_values)
        if data_format_value(data_format, "data_format") == CHANNELS_LAST:
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        return_tensors = check_return_tensors(return_tensors)
        data = {"pixel_values": batch if return_tensors else list(batch)}
        if return_pixel_mask:
            sizes = [image.shape[1:] for image in chw]
            mask = pixel_mask(sizes, padded_size(sizes))
            data["pixel_mask"] = mask if return_tensors else list(mask)
        return BatchFeature(data, tensor_type=return_tensors)

    def encode_inputs(
        self,
        pixel_values_list: list[Any],
        segmentation_maps: Any = None,
        instance_id_to_semantic_id: dict[int, int] | list[dict[int, int]] | None = None,
        ignore_index: int | None = None,
        reduce_labels: bool = False,
        return_tensors: str | None = None,
        input_data_format: str | None = None,
    ) -> BatchFeature:
        """Pad already processed images and encode their label maps (no resizing).
        ``ignore_index`` / ``reduce_labels`` fall back to the processor's when None."""
        ignore_index = self.ignore_index if ignore_index is None else ignore_index
        reduce_labels = self.do_reduce_labels if reduce_labels is None else reduce_labels
        chw = [
            processed_to_chw(image, input_data_format, "pixel_values_list")
            for image in as_list(pixel_values_list, "pixel_values_list", 3)
        ]
        label_maps = None
        if segmentation_maps is not None:
            label_maps = [
                label_map_to_array(m) for m in as_list(segmentation_maps, "segmentation_maps", 2)
            ]
            if len(label_maps) != len(chw):
                raise ValueError(
                    f"`pixel_values_list` ({len(chw)}) and `segmentation_maps` "
                    f"({len(label_maps)}) must have the same length"
                )
            check_map_sizes(label_maps, [image.shape[1:] for image in chw], "pixel_values_list")
        pixel_values, mask = batch_pixels([image.transpose(1, 2, 0) for image in chw], copy_writer)
        return self._batch(
            pixel_values,
            mask,
            label_maps,
            instance_id_to_semantic_id,
            ignore_index,
            reduce_labels,
            check_return_tensors(return_tensors),
            CHANNELS_FIRST,
        )


class MaskFormerFeatureExtractor(MaskFormerImageProcessor):
    """Deprecated alias of ``MaskFormerImageProcessor`` (warns on construction)."""

    def __init__(self, *args: Any, **kwargs: Any):
        deprecated("MaskFormerFeatureExtractor", "use MaskFormerImageProcessor instead")
        super().__init__(*args, **kwargs)
