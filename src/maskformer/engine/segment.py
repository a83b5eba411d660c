"""Running a model on images: reading them, one forward pass per group of images of one
processed size (never padded), the post-processing of each task at every image's own size, and
one bad image costing only itself.

The model call is one function, :func:`forward_images` (prepare the pixel values, run the model,
return the logits and the pixel mask): another backend swaps that step and keeps the rest.
Sliding windows and test-time augmentation (:mod:`~maskformer.engine.sliding_window`,
:mod:`~maskformer.engine.tta`) take one image at a time, through :func:`segment_large`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from PIL import Image

from maskformer.images import read_image

TASKS = ("semantic", "instance", "panoptic")
OUT_OF_MEMORY = (MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))
# What segmenting one bad image can raise (a size the processor cannot resize, a shape the
# model cannot take); out-of-memory is a run-wide fault and is re-raised.
_PER_IMAGE_ERRORS = (ValueError, TypeError, RuntimeError, IndexError, ZeroDivisionError)


def load_rgb_image(path: Path) -> Image.Image:
    """The image at ``path`` as people see it (:func:`maskformer.images.read_image`: EXIF
    orientation, 16-bit and float scaled, modes converted); ``OSError`` / ``ValueError`` naming
    the file when it cannot be decoded, whatever PIL's decoder raised."""
    try:
        return read_image(path)
    except (*OUT_OF_MEMORY, OSError, ValueError):
        raise
    except Exception as error:  # a corrupt file can fail in many ways inside PIL's decoders
        raise ValueError(f"cannot read image {path}: {first_line(error)}") from None


def segment_each(
    model: torch.nn.Module,
    processor: Any,
    paths: Sequence[Path],
    images: Sequence[Image.Image],
    options: Any,
) -> list[tuple[Path, Image.Image, dict[str, Any] | str]]:
    """``(path, image, result)`` per image, in input order; ``result`` is the reason (a str)
    when that image could not be segmented.

    Images whose processed size is equal share one forward pass; the others run separately, so
    no image is ever padded and its maps do not depend on its batch-mates' sizes. (A pass over
    one image is the exact single-image result; equal-size batch-mates change the logits only
    by float summation order.) A failing group is retried one image at a time, so one bad image
    costs only itself. ``options`` carries ``task`` and the post-processing thresholds
    (:class:`~maskformer.engine.predict.PredictOptions`); with ``sliding_window`` or ``tta``
    set (a predict option), every image runs alone through :func:`segment_large`.
    """
    if getattr(options, "sliding_window", None) is not None or getattr(options, "tta", None):
        return [
            (
                path,
                image,
                _guarded(path, image, partial(segment_large, model, processor, image, options)),
            )
            for path, image in zip(paths, images)
        ]
    results: dict[int, dict[str, Any] | str] = {}
    for group in _size_groups(processor, images):
        group_paths = [paths[i] for i in group]
        group_images = [images[i] for i in group]
        if len(group) > 1:
            try:
                outcome: list[Any] = _segment_group(model, processor, group_images, options)
            except OUT_OF_MEMORY:
                raise
            except _PER_IMAGE_ERRORS:  # retried one by one below: one bad image costs itself
                outcome = [None] * len(group)
        else:
            outcome = [None]
        for index, path, image, result in zip(group, group_paths, group_images, outcome):
            if result is None:
                result = _guarded(
                    path,
                    image,
                    lambda one=image: _segment_group(model, processor, [one], options)[0],
                )
            results[index] = result
    return [(path, image, results[i]) for i, (path, image) in enumerate(zip(paths, images))]


def _segment_group(
    model: torch.nn.Module, processor: Any, images: Sequence[Image.Image], options: Any
) -> list[dict[str, Any]]:
    return segment_batch(
        model,
        processor,
        images,
        options.task,
        options.threshold,
        options.mask_threshold,
        options.overlap_mask_area_threshold,
        options.label_ids_to_fuse,
    )


def _guarded(path: Path, image: Image.Image, run: Any) -> dict[str, Any] | str:
    """``run()``'s result for one image, or the reason it failed (a str naming the file)."""
    try:
        return run()
    except OUT_OF_MEMORY:
        raise
    except _PER_IMAGE_ERRORS as error:
        reason = f"cannot segment {path} ({image.width}x{image.height} pixels): "
        return reason + first_line(error)


def processed_size(processor: Any, image: Image.Image) -> tuple[int, int]:
    """``(height, width)`` the processor turns ``image`` into (before batch padding); the
    image's own size when that cannot be worked out (another processor class)."""
    own = (image.height, image.width)
    if not getattr(processor, "do_resize", False):
        return own
    from maskformer.processing.image_processor import get_output_size, get_size_dict

    try:
        size = get_size_dict(processor.size)
        return get_output_size(image.height, image.width, size, processor.size_divisor)
    except (AttributeError, TypeError, ValueError, KeyError):
        return own


def _size_groups(processor: Any, images: Sequence[Image.Image]) -> list[list[int]]:
    """Indices of ``images`` grouped by processed size, groups in order of first appearance.
    Images whose size the processor cannot work out get a group each, by their own size."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(processed_size(processor, image), []).append(index)
    return list(groups.values())


def forward_images(
    model: torch.nn.Module, processor: Any, images: Sequence[Image.Image]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, tuple[int, int]]:
    """Prepare ``images`` and run the model once: the step another backend replaces.

    Returns class logits ``(batch, queries, classes + 1)`` and mask logits ``(batch, queries,
    height / 4, width / 4)`` as float32, the pixel mask ``(batch, height, width)`` (1 = real
    pixel; None when the processor gives none) and the ``(height, width)`` of the pixel values.
    Inputs are prepared by :func:`prepare_inputs`.
    """
    pixel_values, pixel_mask = prepare_inputs(model, processor, images)
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    return (
        outputs.class_queries_logits.float(),
        outputs.masks_queries_logits.float(),
        pixel_mask,
        (int(pixel_values.shape[-2]), int(pixel_values.shape[-1])),
    )


def segment_batch(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[Image.Image],
    task: str,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: set[int] | None = None,
) -> list[dict[str, Any]]:
    """Segment RGB ``images`` in one forward pass; one post-processed result per image, at the
    image's own ``(height, width)``.

    Results are the processor's: ``{"semantic": (H, W) class ids}`` for ``"semantic"``, and the
    ``{"segmentation", "segments_info"}`` dicts of the panoptic / instance post-processors
    (instance: ``segmentation`` holds ``(N, H, W)`` binary maps). Images of different processed
    sizes are padded here (the padding is cropped before resizing); :func:`segment_each`
    avoids that by grouping.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    class_logits, mask_logits, pixel_mask, (height, width) = forward_images(
        model, processor, images
    )
    results = []
    for index, image in enumerate(images):
        # Drop the batch padding before resizing to the original size, so padded images keep
        # their geometry: the valid region is the pixel mask's extent at mask resolution.
        if pixel_mask is not None:
            valid_rows = int(pixel_mask[index].any(dim=1).sum())
            valid_columns = int(pixel_mask[index].any(dim=0).sum())
        else:
            valid_rows, valid_columns = height, width
        mask_height = math.ceil(valid_rows * mask_logits.shape[-2] / height)
        mask_width = math.ceil(valid_columns * mask_logits.shape[-1] / width)
        single = SimpleNamespace(
            class_queries_logits=class_logits[index : index + 1],
            masks_queries_logits=mask_logits[index : index + 1, :, :mask_height, :mask_width],
        )
        results.append(
            post_process(
                processor,
                single,
                task,
                (image.height, image.width),
                threshold,
                mask_threshold,
                overlap_mask_area_threshold,
                label_ids_to_fuse,
            )
        )
    return results


def post_process(
    processor: Any,
    outputs: Any,
    task: str,
    size: tuple[int, int],
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: set[int] | None = None,
) -> dict[str, Any]:
    """One image's result from its logits (``outputs`` holds a batch of one), at ``size``."""
    target_sizes = [size]
    if task == "semantic":
        semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)
        return {"semantic": semantic[0]}
    if task == "panoptic":
        return processor.post_process_panoptic_segmentation(
            outputs,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            label_ids_to_fuse=set(label_ids_to_fuse or ()),
            target_sizes=target_sizes,
        )[0]
    return processor.post_process_instance_segmentation(
        outputs,
        threshold=threshold,
        mask_threshold=mask_threshold,
        overlap_mask_area_threshold=overlap_mask_area_threshold,
        target_sizes=target_sizes,
        return_binary_maps=True,
    )[0]


def segment_large(
    model: torch.nn.Module, processor: Any, image: Image.Image, options: Any
) -> dict[str, Any]:
    """One image by sliding window (``options.sliding_window``: ``(window, overlap)``) or by
    test-time augmentation (``options.tta``: a
    :class:`~maskformer.engine.tta.TestTimeAugmentation`); results as :func:`segment_batch`'s,
    except that instance results by sliding window are an ``(H, W)`` id map (0 = none) with
    non-overlapping segments, as panoptic results are."""
    from maskformer.engine.sliding_window import sliding_window_segments, sliding_window_semantic
    from maskformer.engine.tta import tta_outputs, tta_semantic

    thresholds = (
        options.threshold,
        options.mask_threshold,
        options.overlap_mask_area_threshold,
        options.label_ids_to_fuse,
    )
    if options.sliding_window is not None:
        window, overlap = options.sliding_window
        if options.task == "semantic":
            return {
                "semantic": sliding_window_semantic(
                    model, processor, image, window, overlap, options.batch_size
                )
            }
        return sliding_window_segments(
            model, processor, image, options.task, window, overlap, options.batch_size, *thresholds
        )
    if options.task == "semantic":
        return {"semantic": tta_semantic(model, processor, image, options.tta)}
    outputs = tta_outputs(model, processor, image, options.tta)
    return post_process(processor, outputs, options.task, (image.height, image.width), *thresholds)


def prepare_inputs(
    model: Any, processor: Any, images: Sequence[Image.Image]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``pixel_values (batch, 3, height, width)`` on the model's device and in its dtype, and
    ``pixel_mask (batch, height, width)`` (1 = image, 0 = padding).

    A model with an ``input_size`` attribute ``(height, width)`` (an exported model, such as
    :class:`~maskformer.onnx_backend.OnnxRuntimeModel`) takes images fitted into that size and
    padded (:func:`maskformer.export.fixed_size_inputs`); any other gets the processor's batch.
    A model without parameters gets float32 CPU tensors."""
    size = getattr(model, "input_size", None)
    if size is not None:
        from maskformer.export import fixed_size_inputs

        pixel_values, pixel_mask = fixed_size_inputs(processor, images, tuple(size))
    else:
        inputs = processor(images=list(images), return_tensors="pt")
        pixel_values, pixel_mask = inputs["pixel_values"], inputs.get("pixel_mask")
    parameters = model.parameters() if isinstance(model, torch.nn.Module) else iter(())
    parameter = next(parameters, None)
    if parameter is not None:
        pixel_values = pixel_values.to(parameter.device, parameter.dtype)
        if pixel_mask is not None:
            pixel_mask = pixel_mask.to(parameter.device)
    return pixel_values, pixel_mask


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
