"""Run an exported ``.onnx`` file with ONNX Runtime, as a stand-in for the PyTorch model.

The file's metadata (written by :mod:`maskformer.export`) gives the input size, the label names
and the processor configuration, so ``maskformer predict --backend onnxruntime --model
model.onnx`` needs nothing else. Images are fitted into the exported size and padded
(:func:`maskformer.export.fixed_size_inputs`); ``predict`` crops the padding from the mask logits
before resizing them to each image's own size, as it does for batch padding.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from maskformer.export import OUTPUT_NAMES, read_metadata


class OnnxRuntimeModel:
    """``model(pixel_values=...)`` with the PyTorch model's outputs, computed by ONNX Runtime.

    Attributes: ``config`` (``id2label``, ``num_labels``), ``input_size`` ``(height, width)``,
    ``fixed_batch`` (1 when the file was exported without a dynamic batch, else None).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ImportError(
                "--backend onnxruntime needs onnxruntime: pip install 'maskformer[onnx]'"
            ) from None
        path = Path(path)
        if path.suffix != ".onnx":
            raise ValueError(f"--backend onnxruntime needs an .onnx file, got {path}")
        metadata = read_metadata(path)
        options = onnxruntime.SessionOptions()
        threads = threads if threads is not None else torch.get_num_threads()
        self.threads = threads
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_size = tuple(int(v) for v in metadata["input_size"])
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        if (
            shape is None
            or inputs[0].name != "pixel_values"
            or len(shape) != 4
            or shape[1] != 3
            or tuple(shape[2:]) != self.input_size
        ):
            described = [(i.name, i.shape) for i in inputs]
            raise ValueError(
                f"{path}: inputs {described} do not match its processor (expected one "
                f"'pixel_values' of shape [batch, 3, {self.input_size[0]}, {self.input_size[1]}])"
            )
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        id2label = {int(k): str(v) for k, v in metadata["id2label"].items()}
        self.config = SimpleNamespace(id2label=id2label, num_labels=len(id2label))
        self.processor_config: dict[str, Any] = metadata["processor"]

    def processor(self) -> Any:
        from maskformer.processing.image_processor import MaskFormerImageProcessor

        return MaskFormerImageProcessor.from_dict(dict(self.processor_config))

    def __call__(self, pixel_values: torch.Tensor, **_: Any) -> SimpleNamespace:
        """Outputs for ``pixel_values (batch, 3, height, width)`` at the exported size."""
        if tuple(pixel_values.shape[-2:]) != self.input_size:
            raise ValueError(
                f"pixel_values of size {tuple(pixel_values.shape[-2:])}; this file was exported "
                f"at {self.input_size}"
            )
        array = pixel_values.detach().float().cpu().numpy()
        if self.fixed_batch is not None and array.shape[0] != self.fixed_batch:
            parts = [
                self.session.run(None, {"pixel_values": array[i : i + 1]})
                for i in range(len(array))
            ]
            outputs = [torch.cat([torch.from_numpy(p[k]) for p in parts]) for k in range(2)]
        else:
            outputs = [torch.from_numpy(o) for o in self.session.run(None, {"pixel_values": array})]
        return SimpleNamespace(**dict(zip(OUTPUT_NAMES, outputs)))
