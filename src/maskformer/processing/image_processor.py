"""``MaskFormerImageProcessor``: images (and label maps) in, model inputs out; logits in, segments out.

Preprocessing reproduces transformers 4.34.1 exactly for 8-bit RGB inputs (PIL resize, then
``float32(uint8 * rescale_factor)``, then ``(x - mean) / std`` in float32, done here through a
256-entry lookup table per channel, which gives the same floats). Label maps become per-image
binary ``mask_labels`` and ``class_labels``. Post-processing lives in ``postprocess.py``.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from maskformer.processing import postprocess
from maskformer.processing.batch import BatchFeature, check_return_tensors

CONFIG_NAME = "preprocessor_config.json"
IMAGENET_DEFAULT_MEAN = [0.485, 0.456, 0.406]
IMAGENET_DEFAULT_STD = [0.229, 0.224, 0.225]
CHANNELS_FIRST, CHANNELS_LAST = "channels_first", "channels_last"
# Keys of a serialized processor that only describe its class.
_TYPE_KEYS = (
    "image_processor_type",
    "feature_extractor_type",
    "processor_class",
    "_processor_class",
)


# ----------------------------------------------------------------------------------------------
# Inputs: images and label maps to numpy
# ----------------------------------------------------------------------------------------------


def _is_image_like(value: Any) -> bool:
    return isinstance(value, (Image.Image, np.ndarray, torch.Tensor))


def _as_list(values: Any, name: str, single_ndim: int) -> list[Any]:
    """A list of single images (maps): lists/tuples kept, a batch array split, one item wrapped."""
    if isinstance(values, (list, tuple)):
        if not all(_is_image_like(v) for v in values):
            raise ValueError(
                f"`{name}` must be PIL images, numpy arrays or torch tensors (or lists of them)"
            )
        if not values:
            raise ValueError(f"`{name}` is empty")
        return list(values)
    if isinstance(values, Image.Image):
        return [values]
    if isinstance(values, (np.ndarray, torch.Tensor)):
        if values.ndim == single_ndim + 1:
            return list(values)
        if values.ndim <= single_ndim:
            return [values]
        raise ValueError(
            f"`{name}` has {values.ndim} dimensions; expected {single_ndim} (one) or "
            f"{single_ndim + 1} (a batch)"
        )
    raise ValueError(
        f"`{name}` must be PIL images, numpy arrays or torch tensors (or lists of them), "
        f"got {type(values).__name__}"
    )


def _channel_axis(array: np.ndarray, input_data_format: str | None) -> int:
    """0 for channels-first, -1 for channels-last (inferred like the reference when not given)."""
    if input_data_format is not None:
        fmt = getattr(input_data_format, "value", input_data_format)
        if fmt not in (CHANNELS_FIRST, CHANNELS_LAST):
            raise ValueError(
                f"`input_data_format` must be 'channels_first' or 'channels_last', got {input_data_format!r}"
            )
        return 0 if fmt == CHANNELS_FIRST else -1
    if array.shape[0] in (1, 3):
        return 0
    if array.shape[-1] in (1, 3):
        return -1
    if array.shape[0] == 4:
        return 0
    if array.shape[-1] == 4:
        return -1
    raise ValueError(f"`images`: cannot tell the channel axis of an image of shape {array.shape}")


def image_to_hwc(image: Any, input_data_format: str | None = None) -> np.ndarray | Image.Image:
    """An RGB image as a PIL "RGB" image or an ``(H, W, 3)`` numpy array.

    Grayscale (2-D, one channel, PIL "L"/"I"/"F"...) is replicated to three channels, RGBA
    (and LA) loses its alpha, other PIL modes (palette, CMYK...) are converted to RGB.
    """
    if isinstance(image, Image.Image):
        if image.mode == "RGB":
            return image
        if image.mode in ("RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "LA", "1", "L"):
            return image.convert("RGB")
        image = np.asarray(image)  # 16/32-bit or float grayscale: keep the values
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"`images` must hold numbers, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3:
        if _channel_axis(array, input_data_format) == 0:
            array = array.transpose(1, 2, 0)
    else:
        raise ValueError(f"each of `images` must have 2 or 3 dimensions, got shape {array.shape}")
    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels in (2, 4):  # gray + alpha, RGB + alpha: drop alpha
        array = array[..., :-1] if channels == 4 else np.repeat(array[..., :1], 3, axis=-1)
    elif channels != 3:
        raise ValueError(f"`images` must have 1, 3 or 4 channels, got {channels}")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError("`images` contain NaN values")
    return array


def label_map_to_array(segmentation_map: Any) -> np.ndarray:
    """A label map as a 2-D integer numpy array (ids >= 0, any width)."""
    if isinstance(segmentation_map, Image.Image):
        array = np.asarray(segmentation_map)
    elif isinstance(segmentation_map, torch.Tensor):
        array = segmentation_map.detach().cpu().numpy()
    else:
        array = np.asarray(segmentation_map)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])
    if array.ndim != 2:
        raise ValueError(
            f"each of `segmentation_maps` must be 2-D (height, width), got shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any():
            raise ValueError("`segmentation_maps` contain NaN values")
        if not np.array_equal(array, np.round(array)):
            raise ValueError("`segmentation_maps` must hold integer label ids")
        array = array.astype(np.int64)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`segmentation_maps` must hold integers, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError("`segmentation_maps` contain negative label ids")
    return array


def _map_images(function: Any, *columns: Sequence[Any]) -> list[Any]:
    """``[function(*row) for row in zip(*columns)]``, spread over ``torch.get_num_threads()``
    threads (PIL resizing and numpy kernels release the GIL)."""
    rows = list(zip(*columns))
    workers = min(torch.get_num_threads(), len(rows))
    if workers <= 1:
        return [function(*row) for row in rows]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda row: function(*row), rows))


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def get_size_dict(size: Any, max_size: int | None = None) -> dict[str, int]:
    """The reference's size forms: int (shortest edge, ``max_size`` longest), (height, width)
    tuple, or a dict with ``shortest_edge``/``longest_edge`` or ``height``/``width``."""
    if isinstance(size, dict):
        keys = set(size)
        allowed = (
            {"height", "width"},
            {"shortest_edge"},
            {"shortest_edge", "longest_edge"},
            {"longest_edge"},
        )
        if keys not in allowed:
            raise ValueError(f"`size` must have keys {allowed}, got {sorted(keys)}")
        return dict(size)
    if isinstance(size, int):
        return {"shortest_edge": size, "longest_edge": max_size if max_size is not None else 1333}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    raise ValueError(f"`size` must be an int, a (height, width) pair or a dict, got {size!r}")


def get_output_size(
    height: int, width: int, size: dict[str, int], size_divisor: int = 0
) -> tuple[int, int]:
    """Resized ``(height, width)``: shortest edge to ``shortest_edge`` (truncating), capped by
    ``longest_edge``, or exactly ``height``/``width``; then each side rounded *up* to a multiple
    of ``size_divisor`` (the image is stretched, as in the reference)."""
    if "shortest_edge" in size and "longest_edge" in size:
        shortest, longest = size["shortest_edge"], size["longest_edge"]
        if longest <= shortest:
            raise ValueError(
                f"`size['longest_edge']` ({longest}) must be larger than `size['shortest_edge']` ({shortest})"
            )
        short, long = min(height, width), max(height, width)
        new_short, new_long = shortest, int(shortest * long / short)
        if new_long > longest:
            new_short, new_long = int(longest * new_short / new_long), longest
        out_h, out_w = (new_short, new_long) if height <= width else (new_long, new_short)
    elif "height" in size and "width" in size:
        out_h, out_w = size["height"], size["width"]
    else:
        raise ValueError(
            "`size` must contain 'shortest_edge' and 'longest_edge', or 'height' and 'width'; "
            f"got {sorted(size)}"
        )
    if size_divisor and size_divisor > 0:
        out_h = math.ceil(out_h / size_divisor) * size_divisor
        out_w = math.ceil(out_w / size_divisor) * size_divisor
    return out_h, out_w


def _pil_resize(
    image: np.ndarray | Image.Image, size: tuple[int, int], resample: int
) -> np.ndarray:
    """Resize an RGB image to ``size = (height, width)`` with PIL, the reference's way: uint8
    goes through as is, integral floats in [0, 255] are cast, floats in [0, 1] are scaled by 255
    (truncating) and divided back afterwards. Returns ``(H, W, 3)``."""
    if isinstance(image, Image.Image):
        return np.asarray(image.resize((size[1], size[0]), resample=resample))
    scale_back = False
    if image.dtype != np.uint8:
        if np.array_equal(image, np.round(image)) and image.min() >= 0 and image.max() <= 255:
            image = image.astype(np.uint8)
        elif image.min() >= 0 and image.max() <= 1:
            image = (image * 255).astype(np.uint8)
            scale_back = True
        else:
            raise ValueError(
                "`images` of a float dtype must be integral in [0, 255] or lie in [0, 1] to be "
                f"resized; got values in [{image.min()}, {image.max()}]"
            )
    resized = np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample=resample))
    return resized / 255 if scale_back else resized


def _resize_label_map(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL NEAREST resize of a 2-D id map; ids above 255 go through a 32-bit ("I") image, which
    PIL samples exactly like an 8-bit one."""
    if label_map.shape == tuple(size):
        return label_map
    if label_map.dtype == np.uint8 or (label_map.size and label_map.max() <= 255):
        image = Image.fromarray(label_map.astype(np.uint8, copy=False))
    else:
        if label_map.max() > np.iinfo(np.int32).max:
            raise ValueError("`segmentation_maps` ids must fit in 32 bits")
        image = Image.fromarray(label_map.astype(np.int32), mode="I")
    return np.asarray(image.resize((size[1], size[0]), resample=Image.NEAREST))


# ----------------------------------------------------------------------------------------------
# Pixel values and labels
# ----------------------------------------------------------------------------------------------


def _normalization_table(
    do_rescale: bool, rescale_factor: float, do_normalize: bool, mean: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """``(3, 256)`` float32: what rescale + normalize make of each 8-bit value, per channel,
    computed with the reference's dtypes (``float32(v * factor)`` in float64, then float32)."""
    values = np.arange(256, dtype=np.uint8)
    table = (
        (values * rescale_factor).astype(np.float32) if do_rescale else values.astype(np.float32)
    )
    table = np.broadcast_to(table, (3, 256))
    if do_normalize:
        table = (table - mean[:, None]) / std[:, None]
    return np.ascontiguousarray(table, dtype=np.float32)


def _channel_stats(value: float | Sequence[float], name: str) -> np.ndarray:
    stats = np.asarray(value, dtype=np.float32).reshape(-1)
    if stats.size == 1:
        stats = np.repeat(stats, 3)
    if stats.size != 3:
        raise ValueError(f"`{name}` must have 1 or 3 values (one per channel), got {stats.size}")
    return stats


def convert_segmentation_map_to_binary_masks(
    segmentation_map: np.ndarray,
    instance_id_to_semantic_id: dict[int, int] | None = None,
    ignore_index: int | None = None,
    reduce_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary masks ``(n, H, W)`` float32 and class ids ``(n,)`` int64, one per label present.

    With ``reduce_labels`` 0 becomes ``ignore_index`` and every other id k becomes k - 1. Labels
    are taken in ascending order, ``ignore_index`` left out; an empty or all-ignored map gives
    ``(0, H, W)`` and ``(0,)``. ``instance_id_to_semantic_id`` maps instance ids to classes.
    """
    if reduce_labels and ignore_index is None:
        raise ValueError("`reduce_labels=True` needs an `ignore_index`")
    segmentation_map = label_map_to_array(segmentation_map)
    ids = segmentation_map.astype(np.int64, copy=False)
    if reduce_labels:
        ids = np.where(ids == 0, ignore_index, ids - 1)
    labels = _present_ids(ids)
    if ignore_index is not None:
        labels = labels[labels != ignore_index]
    masks = (ids[None] == labels[:, None, None]).astype(np.float32)
    return masks, _classes_of(labels, instance_id_to_semantic_id, reduce_labels)


def _present_ids(ids: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a non-negative int64 map (a bincount when ids are small)."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    largest = int(ids.max())
    if largest < (1 << 20):
        return np.flatnonzero(np.bincount(ids.ravel(), minlength=largest + 1)).astype(np.int64)
    return np.unique(ids)


def _label_positions(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Position of each pixel's id in the sorted ``labels`` (-1 where absent), same shape as
    ``ids``."""
    largest = int(labels[-1])
    if largest < (1 << 20):
        index_of_label = np.full(largest + 2, -1, dtype=np.int64)
        index_of_label[labels] = np.arange(labels.size)
        return index_of_label[np.minimum(ids, largest + 1)]
    positions = np.minimum(np.searchsorted(labels, ids), labels.size - 1)
    return np.where(labels[positions] == ids, positions, -1)


def _classes_of(
    labels: np.ndarray, mapping: dict[int, int] | None, reduce_labels: bool
) -> np.ndarray:
    if mapping is None:
        return labels.astype(np.int64)
    shift = 1 if reduce_labels else 0
    try:
        classes = [mapping[int(label) + shift] - shift for label in labels]
    except KeyError as error:
        raise KeyError(
            f"instance id {error.args[0]} of `segmentation_maps` is missing from "
            "`instance_id_to_semantic_id`"
        ) from None
    return np.asarray(classes, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------


class MaskFormerImageProcessor:
    """Prepares images (and optional label maps) for MaskFormer and post-processes its outputs.

    Arguments and defaults are those of transformers 4.34.1 (``do_resize=True``, shortest edge
    800 / longest 1333, ``size_divisor=32``, bilinear, rescale 1/255, ImageNet normalisation,
    ``ignore_index=None``, ``do_reduce_labels=False``). The legacy keywords ``size_divisibility``,
    ``max_size`` and ``reduce_labels`` are accepted with a FutureWarning.
    """

    model_input_names = ["pixel_values", "pixel_mask"]

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
        if "size_divisibility" in kwargs:
            warnings.warn(
                "`size_divisibility` is deprecated, use `size_divisor`", FutureWarning, stacklevel=2
            )
            size_divisor = kwargs.pop("size_divisibility")
        if "max_size" in kwargs:
            warnings.warn(
                "`max_size` is deprecated, use `size['longest_edge']`", FutureWarning, stacklevel=2
            )
            self._max_size = kwargs.pop("max_size")
        else:
            self._max_size = 1333
        if "reduce_labels" in kwargs:
            warnings.warn(
                "`reduce_labels` is deprecated, use `do_reduce_labels`", FutureWarning, stacklevel=2
            )
            do_reduce_labels = kwargs.pop("reduce_labels")
        for key in _TYPE_KEYS:
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
        self.image_mean = image_mean if image_mean is not None else list(IMAGENET_DEFAULT_MEAN)
        self.image_std = image_std if image_std is not None else list(IMAGENET_DEFAULT_STD)
        self.ignore_index = ignore_index
        self.do_reduce_labels = do_reduce_labels
        for key, value in kwargs.items():  # unknown keys (e.g. num_labels) stay as attributes
            setattr(self, key, value)

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` content (the reference also writes ``_max_size``)."""
        output = copy.deepcopy(
            {key: value for key, value in self.__dict__.items() if not key.startswith("__")}
        )
        output["image_processor_type"] = "MaskFormerImageProcessor"
        return output

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        Path(json_file_path).write_text(self.to_json_string(), encoding="utf-8")

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Write ``preprocessor_config.json`` into ``save_directory`` (created if needed)."""
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"`save_directory` ({directory}) must be a directory, not a file")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        self.to_json_file(path)
        return [str(path)]

    @classmethod
    def from_dict(
        cls, image_processor_dict: dict[str, Any], **kwargs: Any
    ) -> MaskFormerImageProcessor:
        """Build from a config dict; legacy keys (``size_divisibility``, ``max_size``,
        ``reduce_labels``, int ``size``) are translated. ``kwargs`` override the dict."""
        config = dict(image_processor_dict)
        config.update(kwargs)
        if "_max_size" in config and "max_size" not in config:
            max_size = config.pop("_max_size")
            size = config.get("size")
            if isinstance(size, int) or size is None:
                config["size"] = get_size_dict(size if size is not None else 800, max_size)
            processor = cls._quietly(config)
            processor._max_size = max_size
            return processor
        return cls._quietly(config)

    @classmethod
    def _quietly(cls, config: dict[str, Any]) -> MaskFormerImageProcessor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return cls(**config)

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> MaskFormerImageProcessor:
        return cls.from_dict(json.loads(Path(json_file).read_text(encoding="utf-8")))

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> MaskFormerImageProcessor:
        """Load ``preprocessor_config.json`` from a directory, a json file or a hub repo id
        (downloaded with huggingface_hub; hub keywords: ``revision``, ``cache_dir``, ``token``,
        ``local_files_only``). Other keywords override the stored values."""
        hub_keys = (
            "revision",
            "cache_dir",
            "token",
            "use_auth_token",
            "local_files_only",
            "force_download",
        )
        hub_kwargs = {key: kwargs.pop(key) for key in hub_keys if key in kwargs}
        path = Path(pretrained_model_name_or_path)
        if path.is_dir():
            config_file = path / CONFIG_NAME
            if not config_file.is_file():
                raise FileNotFoundError(f"no {CONFIG_NAME} in {path}")
        elif path.is_file():
            config_file = path
        elif str(pretrained_model_name_or_path).startswith((".", "/", "~")) or (
            str(pretrained_model_name_or_path).count("/") > 1
        ):  # a local path, not an "owner/name" hub id
            raise FileNotFoundError(f"{pretrained_model_name_or_path} does not exist")
        else:
            from huggingface_hub import hf_hub_download

            if "use_auth_token" in hub_kwargs:
                hub_kwargs["token"] = hub_kwargs.pop("use_auth_token")
            config_file = Path(
                hf_hub_download(str(pretrained_model_name_or_path), CONFIG_NAME, **hub_kwargs)
            )
        config = json.loads(config_file.read_text(encoding="utf-8"))
        return cls.from_dict(config, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

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
        """Resize one image (PIL resampling) to the size ``size`` / ``size_divisor`` give."""
        if "max_size" in kwargs:
            size = get_size_dict(size, kwargs.pop("max_size"))
        size = get_size_dict(size, self._max_size)
        channels_first = (
            isinstance(image, (np.ndarray, torch.Tensor))
            and np.ndim(image) == 3
            and (_channel_axis(np.asarray(image), input_data_format) == 0)
        )
        rgb = image_to_hwc(image, input_data_format)
        height, width = (rgb.height, rgb.width) if isinstance(rgb, Image.Image) else rgb.shape[:2]
        resized = _pil_resize(rgb, get_output_size(height, width, size, size_divisor), resample)
        out_first = (
            channels_first
            if data_format is None
            else getattr(data_format, "value", data_format) == CHANNELS_FIRST
        )
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
        axis = _channel_axis(image, input_data_format)
        shape = (-1, 1, 1) if axis == 0 else (1, 1, -1)
        mean32 = _channel_stats(mean, "image_mean").reshape(shape)
        std32 = _channel_stats(std, "image_std").reshape(shape)
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

        Returns a ``BatchFeature`` with ``pixel_values`` ``(batch, 3, H, W)`` float32 (zero
        padded bottom/right to the batch's largest size), ``pixel_mask`` ``(batch, H, W)`` int64
        (1 = real pixel) and, with maps, ``mask_labels`` (list of float32 ``(n_i, H, W)``, padded
        with ``ignore_index``, or 0 when it is None) and ``class_labels`` (list of int64 ``(n_i,)``).
        """
        if "pad_and_return_pixel_mask" in kwargs:
            warnings.warn(
                "`pad_and_return_pixel_mask` is deprecated and ignored", FutureWarning, stacklevel=2
            )
            kwargs.pop("pad_and_return_pixel_mask")
        if "size_divisibility" in kwargs:
            warnings.warn(
                "`size_divisibility` is deprecated, use `size_divisor`", FutureWarning, stacklevel=2
            )
            size_divisor = kwargs.pop("size_divisibility")
        max_size = kwargs.pop("max_size", None)
        if "reduce_labels" in kwargs:
            warnings.warn(
                "`reduce_labels` is deprecated, use `do_reduce_labels`", FutureWarning, stacklevel=2
            )
            if do_reduce_labels is not None:
                raise ValueError("pass either `reduce_labels` or `do_reduce_labels`, not both")
            do_reduce_labels = kwargs.pop("reduce_labels")
        if kwargs:
            raise TypeError(f"preprocess() got unexpected keyword arguments {sorted(kwargs)}")

        do_resize = self.do_resize if do_resize is None else do_resize
        size = get_size_dict(self.size if size is None else size, max_size or self._max_size)
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
        data_format = getattr(data_format, "value", data_format) or CHANNELS_FIRST
        if data_format not in (CHANNELS_FIRST, CHANNELS_LAST):
            raise ValueError(
                f"`data_format` must be 'channels_first' or 'channels_last', got {data_format!r}"
            )
        if do_rescale and rescale_factor is None:
            raise ValueError("`rescale_factor` must be given when `do_rescale=True`")
        if do_normalize and (image_mean is None or image_std is None):
            raise ValueError("`image_mean` and `image_std` must be given when `do_normalize=True`")

        image_list = _as_list(images, "images", 3)
        map_list = (
            None
            if segmentation_maps is None
            else _as_list(segmentation_maps, "segmentation_maps", 2)
        )
        if map_list is not None and len(map_list) != len(image_list):
            raise ValueError(
                f"`images` ({len(image_list)}) and `segmentation_maps` ({len(map_list)}) must have "
                "the same length"
            )
        rgb_images = [image_to_hwc(image, input_data_format) for image in image_list]
        sizes = [
            (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]
            for image in rgb_images
        ]
        label_maps = None
        if map_list is not None:
            label_maps = [label_map_to_array(m) for m in map_list]
            for index, (label_map, image_size) in enumerate(zip(label_maps, sizes)):
                if label_map.shape != tuple(image_size):
                    raise ValueError(
                        f"`segmentation_maps[{index}]` has size {label_map.shape}, but its image "
                        f"has size {tuple(image_size)}"
                    )
        out_sizes = (
            [get_output_size(h, w, size, size_divisor) for h, w in sizes] if do_resize else sizes
        )
        if do_resize and label_maps is not None:
            label_maps = [_resize_label_map(m, s) for m, s in zip(label_maps, out_sizes)]

        def prepare_images() -> list[np.ndarray]:
            if not do_resize:
                return [np.asarray(image) for image in rgb_images]
            return [_pil_resize(image, s, resample) for image, s in zip(rgb_images, out_sizes)]

        mean32 = _channel_stats(image_mean, "image_mean") if do_normalize else None
        std32 = _channel_stats(image_std, "image_std") if do_normalize else None
        table = _normalization_table(do_rescale, rescale_factor, do_normalize, mean32, std32)

        def write(image: np.ndarray, out: np.ndarray) -> None:  # out: (3, h, w) view
            if image.dtype == np.uint8:
                for channel in range(3):
                    np.take(table[channel], image[:, :, channel], out=out[channel], mode="clip")
                return
            values = image.transpose(2, 0, 1)
            if do_rescale:
                values = np.asarray(values * rescale_factor).astype(np.float32)
            values = values.astype(np.float32, copy=False)
            if do_normalize:
                values = (values - mean32[:, None, None]) / std32[:, None, None]
            out[...] = values

        return self._assemble(
            prepare_images,
            write,
            label_maps,
            instance_id_to_semantic_id,
            ignore_index,
            do_reduce_labels,
            return_tensors,
            data_format,
        )

    def _assemble(
        self,
        prepare_images: Callable[[], list[np.ndarray]],
        write: Any,
        label_maps: list[np.ndarray] | None,
        instance_id_to_semantic_id: Any,
        ignore_index: int | None,
        reduce_labels: bool,
        return_tensors: str | None,
        data_format: str,
    ) -> BatchFeature:
        """Pad the images of ``prepare_images()`` (``(h, w, 3)`` arrays, converted by
        ``write(image, out_chw)``) into one batch with its pixel mask, and encode the label maps
        (each the size of its image) at the padded size.

        With more than one torch thread, the label maps are encoded in a background thread
        while the images are prepared and written: both are bound by numpy / PIL kernels that
        release the GIL."""
        encode_labels = None
        if label_maps is not None:
            padded_size = tuple(np.max([m.shape for m in label_maps], axis=0).tolist())
            encode_labels = functools.partial(
                self._encode_labels,
                label_maps,
                instance_id_to_semantic_id,
                ignore_index,
                reduce_labels,
                padded_size,
            )
        with ThreadPoolExecutor(max_workers=1) as background:
            labels = None
            if encode_labels is not None and torch.get_num_threads() > 1:
                labels = background.submit(encode_labels)
            data = self._pad_images(prepare_images(), write, return_tensors, data_format)
            if encode_labels is not None:
                encoded = encode_labels() if labels is None else labels.result()
                data["mask_labels"], data["class_labels"] = encoded
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _pad_images(
        images: list[np.ndarray], write: Any, return_tensors: str | None, data_format: str
    ) -> dict[str, Any]:
        """``pixel_values`` (``images`` converted by ``write`` and zero padded to the largest)
        and ``pixel_mask`` (1 = real pixel), batched or as lists."""
        heights = [image.shape[0] for image in images]
        widths = [image.shape[1] for image in images]
        pad_h, pad_w = max(heights), max(widths)
        pixel_values = np.zeros((len(images), 3, pad_h, pad_w), dtype=np.float32)
        pixel_mask = np.zeros((len(images), pad_h, pad_w), dtype=np.int64)
        for index, image in enumerate(images):
            pixel_mask[index, : image.shape[0], : image.shape[1]] = 1
        _map_images(
            lambda image, out: write(image, out[:, : image.shape[0], : image.shape[1]]),
            images,
            list(pixel_values),
        )
        if data_format == CHANNELS_LAST:
            pixel_values = np.ascontiguousarray(pixel_values.transpose(0, 2, 3, 1))
        return {
            "pixel_values": pixel_values if return_tensors else list(pixel_values),
            "pixel_mask": pixel_mask if return_tensors else list(pixel_mask),
        }

    @staticmethod
    def _encode_labels(
        label_maps: list[np.ndarray],
        instance_id_to_semantic_id: Any,
        ignore_index: int | None,
        reduce_labels: bool,
        padded_size: tuple[int, int],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-image ``mask_labels`` (float32 ``(n, H, W)``, padding = ``ignore_index`` or 0) and
        ``class_labels`` (int64 ``(n,)``)."""
        if reduce_labels and ignore_index is None:
            raise ValueError("`do_reduce_labels=True` needs an `ignore_index`")
        if isinstance(instance_id_to_semantic_id, (list, tuple)):
            if len(instance_id_to_semantic_id) != len(label_maps):
                raise ValueError(
                    f"`instance_id_to_semantic_id` has {len(instance_id_to_semantic_id)} entries "
                    f"for {len(label_maps)} segmentation maps"
                )
            mappings = list(instance_id_to_semantic_id)
        else:
            mappings = [instance_id_to_semantic_id] * len(label_maps)
        fill = 0 if ignore_index is None else ignore_index
        pad_h, pad_w = padded_size

        def encode(
            label_map: np.ndarray, mapping: dict[int, int] | None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            ids = label_map.astype(np.int64, copy=False)
            if reduce_labels:
                ids = np.where(ids == 0, ignore_index, ids - 1)
            labels = _present_ids(ids)
            if ignore_index is not None:
                labels = labels[labels != ignore_index]
            h, w = ids.shape
            # One-hot by scatter: zeroed (lazily allocated) memory, a 1 per labelled pixel, and
            # the padding strips filled with `fill`.
            masks = np.zeros((labels.size, pad_h, pad_w), dtype=np.float32)
            if fill:
                masks[:, h:, :] = fill
                masks[:, :h, w:] = fill
            if labels.size:
                label_index = _label_positions(ids, labels)  # (h, w), -1 = ignored
                pixel = (np.arange(h) * pad_w)[:, None] + np.arange(w)
                flat = label_index * (pad_h * pad_w) + pixel
                np.put(masks, flat[label_index >= 0], 1.0)
            classes = _classes_of(labels, mapping, reduce_labels)
            return torch.from_numpy(masks), torch.from_numpy(classes)

        encoded = _map_images(encode, label_maps, mappings)
        mask_labels = [masks for masks, _ in encoded]
        class_labels = [classes for _, classes in encoded]
        return mask_labels, class_labels

    def pad(
        self,
        images: list[np.ndarray],
        constant_values: float = 0,
        return_pixel_mask: bool = True,
        return_tensors: str | None = None,
        data_format: str | None = None,
        input_data_format: str | None = None,
    ) -> BatchFeature:
        """Pad already processed images ``(3, h, w)`` (or channels-last) bottom/right with
        ``constant_values`` to the batch's largest size; ``pixel_mask`` marks the real pixels."""
        chw = [self._as_chw(image, input_data_format) for image in _as_list(images, "images", 3)]
        pad_h = max(image.shape[1] for image in chw)
        pad_w = max(image.shape[2] for image in chw)
        dtype = np.result_type(*[image.dtype for image in chw])
        batch = np.full((len(chw), chw[0].shape[0], pad_h, pad_w), constant_values, dtype=dtype)
        mask = np.zeros((len(chw), pad_h, pad_w), dtype=np.int64)
        for index, image in enumerate(chw):
            batch[index, :, : image.shape[1], : image.shape[2]] = image
            mask[index, : image.shape[1], : image.shape[2]] = 1
        if getattr(data_format, "value", data_format) == CHANNELS_LAST:
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        return_tensors = check_return_tensors(return_tensors)
        data = {"pixel_values": batch if return_tensors else list(batch)}
        if return_pixel_mask:
            data["pixel_mask"] = mask if return_tensors else list(mask)
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _as_chw(image: Any, input_data_format: str | None) -> np.ndarray:
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        array = np.asarray(image)
        if array.ndim != 3:
            raise ValueError(f"each of `pixel_values_list` must be 3-D, got shape {array.shape}")
        return array if _channel_axis(array, input_data_format) == 0 else array.transpose(2, 0, 1)

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
        ``ignore_index`` / ``reduce_labels`` fall back to the processor's when None / False."""
        ignore_index = self.ignore_index if ignore_index is None else ignore_index
        reduce_labels = self.do_reduce_labels if reduce_labels is None else reduce_labels
        chw = [
            self._as_chw(image, input_data_format)
            for image in _as_list(pixel_values_list, "pixel_values_list", 3)
        ]
        label_maps = None
        if segmentation_maps is not None:
            label_maps = [
                label_map_to_array(m) for m in _as_list(segmentation_maps, "segmentation_maps", 2)
            ]
            if len(label_maps) != len(chw):
                raise ValueError(
                    f"`pixel_values_list` ({len(chw)}) and `segmentation_maps` ({len(label_maps)}) "
                    "must have the same length"
                )
            for index, (label_map, image) in enumerate(zip(label_maps, chw)):
                if label_map.shape != image.shape[1:]:
                    raise ValueError(
                        f"`segmentation_maps[{index}]` has size {label_map.shape}, but its image has "
                        f"size {image.shape[1:]}"
                    )

        def write(image: np.ndarray, out: np.ndarray) -> None:
            out[...] = image.transpose(2, 0, 1)

        return self._assemble(
            lambda: [image.transpose(1, 2, 0) for image in chw],
            write,
            label_maps,
            instance_id_to_semantic_id,
            ignore_index,
            reduce_labels,
            check_return_tensors(return_tensors),
            CHANNELS_FIRST,
        )

    # ------------------------------------------------------------------ post-processing

    def post_process_segmentation(
        self, outputs: Any, target_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Deprecated: class scores ``(batch, classes, H, W)``; use
        ``post_process_semantic_segmentation``."""
        warnings.warn(
            "`post_process_segmentation` is deprecated, use `post_process_semantic_segmentation`",
            FutureWarning,
            stacklevel=2,
        )
        return postprocess.post_process_segmentation(outputs, target_size)

    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Any = None
    ) -> list[torch.Tensor]:
        return postprocess.post_process_semantic_segmentation(outputs, target_sizes)

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: Any = None,
        return_coco_annotation: bool | None = False,
        return_binary_maps: bool | None = False,
    ) -> list[dict[str, Any]]:
        return postprocess.post_process_instance_segmentation(
            outputs,
            threshold,
            mask_threshold,
            overlap_mask_area_threshold,
            target_sizes,
            return_coco_annotation,
            return_binary_maps,
        )

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: set[int] | None = None,
        target_sizes: Any = None,
    ) -> list[dict[str, Any]]:
        return postprocess.post_process_panoptic_segmentation(
            outputs,
            threshold,
            mask_threshold,
            overlap_mask_area_threshold,
            label_ids_to_fuse,
            target_sizes,
        )

    post_process_semantic_segmentation.__doc__ = (
        postprocess.post_process_semantic_segmentation.__doc__
    )
    post_process_instance_segmentation.__doc__ = (
        postprocess.post_process_instance_segmentation.__doc__
    )
    post_process_panoptic_segmentation.__doc__ = (
        postprocess.post_process_panoptic_segmentation.__doc__
    )


class MaskFormerFeatureExtractor(MaskFormerImageProcessor):
    """Deprecated alias of ``MaskFormerImageProcessor`` (warns on construction)."""

    def __init__(self, *args: Any, **kwargs: Any):
        warnings.warn(
            "The class MaskFormerFeatureExtractor is deprecated; use MaskFormerImageProcessor instead.",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)
