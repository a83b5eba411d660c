"""Export a model to ONNX or ``torch.export``, with a parity check before the file appears.

The exported graph takes ``pixel_values`` ``(batch, 3, height, width)`` at one fixed spatial size
and returns ``class_queries_logits`` ``(batch, queries, classes + 1)`` and
``masks_queries_logits`` ``(batch, queries, height / 4, width / 4)``. The batch is 1, or any size
with ``dynamic_batch=True``. The default size is a square of the processor's shortest edge,
rounded up to the size divisor (800 × 800 for the defaults): :func:`fixed_size_inputs` resizes
each image to fit inside it (aspect kept, never larger than the processor would make it) and pads
the rest, so any image can be run.

Both formats carry their metadata: the input size, the label names and the processor's
configuration (ONNX ``metadata_props``; ``torch.export.save`` extra file ``maskformer.json``), so
the file alone is enough to predict (``maskformer predict --backend onnxruntime``).

The check runs the exported program (ONNX Runtime for ONNX) and the PyTorch model on the same
images and refuses to write the file when any logit differs by more than ``tolerance`` × the
logits' scale (the largest absolute PyTorch logit of that output, at least 1).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from maskformer.utils.atomic import atomic_write

EXPORT_FORMATS = ("onnx", "torch-export")
OUTPUT_NAMES = ("class_queries_logits", "masks_queries_logits")
METADATA_KEY = "maskformer.json"
DEFAULT_TOLERANCE = 1e-4
_SIZE_MULTIPLE = 32  # Swin: patch 4 × window merging over three downsamplings; ResNet: stride 32


class ExportParityError(ValueError):
    """The exported program's logits differ from PyTorch's by more than the tolerance."""


@dataclass
class ExportReport:
    path: Path
    format: str
    size: tuple[int, int]
    max_difference: float  # the largest |exported - PyTorch| relative to the logits' scale
    checked_images: int


class _LogitsOnly(torch.nn.Module):
    """``pixel_values -> (class_queries_logits, masks_queries_logits)``: the graph to export."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(pixel_values=pixel_values)
        return outputs.class_queries_logits, outputs.masks_queries_logits


def size_multiple(model: torch.nn.Module | None = None) -> int:
    """What both sides of the input must be a multiple of: a Swin backbone's patch size times its
    downsampling between the first and the last stage (4 × 8 = 32 for the usual configurations;
    windows are padded inside the model), a ResNet's stride (32)."""
    backbone = getattr(getattr(model, "config", None), "backbone_config", None)
    patch = getattr(backbone, "patch_size", None)
    depths = getattr(backbone, "depths", None)
    if isinstance(patch, int) and depths:
        return math.lcm(_SIZE_MULTIPLE, patch * 2 ** (len(depths) - 1))
    return _SIZE_MULTIPLE


def default_size(processor: Any, multiple: int = _SIZE_MULTIPLE) -> tuple[int, int]:
    """A square of the processor's shortest edge, rounded up to its size divisor and to
    ``multiple`` (:func:`size_multiple`)."""
    size = getattr(processor, "size", {}) or {}
    edge = size.get("shortest_edge") or size.get("height")
    if not edge:
        raise ValueError("the processor has no size to export at; pass --height and --width")
    multiple = math.lcm(multiple, int(getattr(processor, "size_divisor", 0) or 1))
    side = math.ceil(int(edge) / multiple) * multiple
    return side, side


def check_size(height: int, width: int, multiple: int = _SIZE_MULTIPLE) -> None:
    """``ValueError`` naming ``--height`` / ``--width`` unless both are positive multiples of
    ``multiple``."""
    for name, value in (("--height", height), ("--width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % multiple:
            raise ValueError(
                f"{name} {value}: must be a positive multiple of {multiple} (the backbone's "
                "patch size times its downsampling; Swin's windows are padded inside the model)"
            )


def fixed_size_inputs(
    processor: Any, images: Sequence[Image.Image], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixel_values (batch, 3, height, width)`` and ``pixel_mask (batch, height, width)`` of
    RGB ``images`` for a model exported at ``size``: each image resized as the processor would,
    shrunk further (aspect kept) to fit inside ``size``, normalised, and zero-padded."""
    height, width = size
    batch = torch.zeros(len(images), 3, height, width)
    mask = torch.zeros(len(images), height, width, dtype=torch.int64)
    for index, image in enumerate(images):
        target_h, target_w = image.height, image.width
        if getattr(processor, "do_resize", False):
            from maskformer.processing.image_processor import get_output_size

            target_h, target_w = get_output_size(image.height, image.width, processor.size)
        fit = min(1.0, height / target_h, width / target_w)
        target_h = max(1, min(height, int(target_h * fit)))
        target_w = max(1, min(width, int(target_w * fit)))
        pixels = processor(
            images=[image],
            do_resize=True,
            size={"height": target_h, "width": target_w},
            size_divisor=0,
            return_tensors="pt",
        )["pixel_values"][0]
        batch[index, :, :target_h, :target_w] = pixels
        mask[index, :target_h, :target_w] = 1
    return batch, mask


def _metadata(model: torch.nn.Module, processor: Any, size: tuple[int, int]) -> dict[str, Any]:
    return {
        "format_version": 1,
        "input_size": list(size),
        "id2label": {str(k): str(v) for k, v in model.config.id2label.items()},
        "processor": processor.to_dict(),
        "model_type": "maskformer",
    }


def _scaled_difference(ours: Sequence[np.ndarray], reference: Sequence[torch.Tensor]) -> float:
    worst = 0.0
    for exported, expected in zip(ours, reference):
        expected = expected.detach().float().cpu().numpy()
        if exported.shape != expected.shape:
            raise ExportParityError(
                f"exported output shape {exported.shape} differs from PyTorch's {expected.shape}"
            )
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
        difference = float(np.abs(exported.astype(np.float64) - expected).max(initial=0.0))
        if not math.isfinite(difference):
            return math.inf
        worst = max(worst, difference / scale)
    return worst


def _check_images(images: Sequence[Image.Image] | None, size: tuple[int, int]) -> list[Image.Image]:
    """``images``, or when there are none one generated picture: the synthetic shapes data set's
    first image (textured background, shapes with edges), drawn at the export size."""
    if images:
        return list(images)
    from maskformer.data.synthetic import SyntheticShapesDataset

    picture = SyntheticShapesDataset(1, image_size=max(size), seed=0).get_image(0)
    return [picture.resize((size[1], size[0]), Image.BILINEAR)]


def export_model(
    model: torch.nn.Module,
    processor: Any,
    output: str | os.PathLike,
    format: str = "onnx",
    size: tuple[int, int] | None = None,
    dynamic_batch: bool = False,
    check_images: Sequence[Image.Image] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = 18,
) -> ExportReport:
    """Export ``model`` (eval mode, float32) to ``output`` and check it against PyTorch on
    ``check_images`` (real photos; a generated image when None). The file appears only when the
    check passes (:class:`ExportParityError` otherwise, naming the measured difference)."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"--format must be one of {EXPORT_FORMATS}, got {format!r}")
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    multiple = size_multiple(model)
    size = tuple(size) if size is not None else default_size(processor, multiple)
    check_size(*size, multiple=multiple)
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; give a file name")
    if format == "onnx" and output.suffix != ".onnx":
        raise ValueError(f"--output {output}: an ONNX file's name must end in .onnx")
    model = model.float().eval()
    images = _check_images(check_images, size)
    pixel_values, _ = fixed_size_inputs(processor, images, size)
    wrapper = _LogitsOnly(model).eval()
    with torch.inference_mode():
        expected = [wrapper(pixel_values[i : i + 1]) for i in range(len(images))]
    # A dynamic batch is traced at batch 2: an example of batch 1 would let the tracer treat
    # the batch as the constant 1 wherever a size-1 dimension can broadcast.
    example = pixel_values[:1].repeat(2 if dynamic_batch else 1, 1, 1, 1)
    metadata = _metadata(model, processor, size)
    with tempfile.TemporaryDirectory(prefix="maskformer-export-") as folder:
        temporary = str(Path(folder) / f"model{output.suffix}")
        if format == "onnx":
            _export_onnx(wrapper, example, temporary, dynamic_batch, opset, metadata)
            run = _onnx_runner(temporary)
        else:
            _export_torch(wrapper, example, temporary, dynamic_batch, metadata)
            run = _torch_export_runner(temporary)
        worst = 0.0
        for index, reference in enumerate(expected):
            worst = max(worst, _scaled_difference(run(pixel_values[index : index + 1]), reference))
        if dynamic_batch and len(images) > 1:  # the whole batch at once, too
            batched = [torch.cat(column) for column in zip(*expected)]
            worst = max(worst, _scaled_difference(run(pixel_values), batched))
        if not worst <= tolerance:
            raise ExportParityError(
                f"the exported {format} logits differ from PyTorch's by {worst:.3g} (relative to "
                f"the logits' scale), more than the tolerance {tolerance:g}; nothing was written"
            )
        with open(temporary, "rb") as exported:
            atomic_write(output, lambda handle: shutil.copyfileobj(exported, handle))
    return ExportReport(output, format, size, worst, len(images))


def _export_onnx(
    wrapper: torch.nn.Module,
    example: torch.Tensor,
    path: str,
    dynamic_batch: bool,
    opset: int,
    metadata: dict[str, Any],
) -> None:
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs onnx: pip install 'maskformer[onnx]'") from None
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {"pixel_values": {0: torch.export.Dim("batch", min=1, max=1024)}}
    try:
        with _quiet_exporters():
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=["pixel_values"],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verbose=False,  # no progress lines on stdout
            )
    except Exception as error:  # unsupported operators or data-dependent control flow
        raise ValueError(
            f"this model cannot be exported to ONNX: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        ) from None
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save_model(proto, path)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The ONNX exporter's progress notes and warnings (missing torchvision operators, skipped
    constant folding) kept off the terminal; errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _onnx_runner(path: str):
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "checking the ONNX file needs onnxruntime: pip install 'maskformer[onnx]'"
        ) from None
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda pixel_values: session.run(None, {"pixel_values": pixel_values.numpy()})


def _export_torch(
    wrapper: torch.nn.Module,
    example: torch.Tensor,
    path: str,
    dynamic_batch: bool,
    metadata: dict[str, Any],
) -> None:
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {"pixel_values": {0: torch.export.Dim("batch", min=1, max=1024)}}
    try:
        program = torch.export.export(wrapper, (example,), dynamic_shapes=dynamic_shapes)
    except Exception as error:
        raise ValueError(
            f"this model cannot be exported with torch.export: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        ) from None
    torch.export.save(program, path, extra_files={METADATA_KEY: json.dumps(metadata)})


def _torch_export_runner(path: str):
    program = torch.export.load(path).module()

    def run(pixel_values: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.float().numpy() for t in program(pixel_values)]

    return run


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an exported ``.onnx`` or ``.pt2`` file (``input_size``, ``id2label``,
    ``processor``); ``ValueError`` naming the file when it has none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    text = None
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        text = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
    else:
        extra = {METADATA_KEY: ""}
        torch.export.load(str(path), extra_files=extra)
        text = extra[METADATA_KEY] or None
    if text is None:
        raise ValueError(f"{path} was not exported by maskformer (no {METADATA_KEY} metadata)")
    return json.loads(text)
