"""Running a model on images: reading them, one forward pass per batch, the post-processing
of each task at every image's own size, and one bad image costing only itself."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from PIL import Image

TASKS = ("semantic", "instance", "panoptic")
OUT_OF_MEMORY = (MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))
# What segmenting one bad image can raise (a size the processor cannot resize, a shape the
# model cannot take); out-of-memory is a run-wide fault and is re-raised.
_PER_IMAGE_ERRORS = (ValueError, TypeError, RuntimeError, IndexError, ZeroDivisionError)


def load_rgb_image(path: Path) -> Image.Image:
    """The image at ``path`` as RGB; ``ValueError`` naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except OUT_OF_MEMORY:
        raise
    except Exception as error:  # a corrupt file can fail in many ways inside PIL's decoders
        raise ValueError(f"cannot read image {path}: {first_line(error)}") from None
    if rgb.width < 1 or rgb.height < 1:
        raise ValueError(f"image {path} is empty ({rgb.width}x{rgb.height} pixels)")
    return rgb


def segment_each(
    model: torch.nn.Module,
    processor: Any,
    paths: Sequence[Path],
    images: Sequence[Image.Image],
    options: Any,
) -> list[tuple[Path, Image.Image, dict[str, Any] | str]]:
    """``(path, image, result)`` per image, in input order; ``result`` is the reason (a str)
    when that image could not be segmented. A failing batch is retried one image at a time, so
    one bad image costs only itself. ``options`` carries ``task`` and the post-processing thresholds
    (:class:`~maskformer.engine.predict.PredictOptions`)."""
    if not images:
        return []
    try:
        results: list[Any] = segment_batch(
            model,
            processor,
            images,
            options.task,
            options.threshold,
            options.mask_threshold,
            options.overlap_mask_area_threshold,
            options.label_ids_to_fuse,
        )
    except OUT_OF_MEMORY:
        raise
    except _PER_IMAGE_ERRORS as error:
        if len(images) > 1:
            return [
                item
                for path, image in zip(paths, images)
                for item in segment_each(model, processor, [path], [image], options)
            ]
        image = images[0]
        reason = f"cannot segment {paths[0]} ({image.width}x{image.height} pixels): "
        results = [reason + first_line(error)]
    return list(zip(paths, images, results))


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
    (instance: ``segmentation`` holds ``(N, H, W)`` binary maps).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    pixel_values, pixel_mask = prepare_inputs(model, processor, images)
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    class_logits = outputs.class_queries_logits.float()
    mask_logits = outputs.masks_queries_logits.float()

    height, width = pixel_values.shape[-2:]
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
        target_sizes = [(image.height, image.width)]
        if task == "semantic":
            semantic = processor.post_process_semantic_segmentation(
                single, target_sizes=target_sizes
            )
            results.append({"semantic": semantic[0]})
        elif task == "panoptic":
            result = processor.post_process_panoptic_segmentation(
                single,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
                label_ids_to_fuse=set(label_ids_to_fuse or ()),
                target_sizes=target_sizes,
            )
            results.append(result[0])
        else:
            result = processor.post_process_instance_segmentation(
                single,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
                target_sizes=target_sizes,
                return_binary_maps=True,
            )
            results.append(result[0])
    return results


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
