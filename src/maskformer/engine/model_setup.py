"""Set-up pieces of a training run: the model named by the arguments, label-set checks, seeds."""

from __future__ import annotations

import contextlib
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from maskformer.engine.arguments import TrainingArguments


def build_model(args: TrainingArguments, dataset: Dataset | None = None) -> nn.Module:
    """The model named by ``args.model``: a preset (random weights), a folder or a hub id.

    A preset takes its label set from ``args.num_labels`` / ``args.id2label``, else from the data
    set's ``id2label`` when it has one. Seeded with ``args.seed``, so every process builds the
    same weights.
    """
    from maskformer import presets
    from maskformer.engine.loading import is_local_reference
    from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation

    label_overrides: dict[str, Any] = {}
    if args.id2label is not None:
        label_overrides["id2label"] = args.id2label
    elif args.num_labels is not None:
        label_overrides["num_labels"] = args.num_labels
    torch.manual_seed(args.seed)
    if presets.is_preset(args.model):
        if not label_overrides and getattr(dataset, "id2label", None):
            label_overrides["id2label"] = {int(k): str(v) for k, v in dataset.id2label.items()}
        return MaskFormerForInstanceSegmentation(presets.get_preset(args.model, **label_overrides))
    folder_or_hub_id = args.model
    if is_local_reference(args.model):
        folder_or_hub_id = str(Path(args.model).expanduser())
        if not Path(folder_or_hub_id).is_dir():
            raise FileNotFoundError(
                f"--model {args.model!r} is neither a preset "
                f"({', '.join(presets.list_presets())}) nor an existing checkpoint folder"
            )
    return MaskFormerForInstanceSegmentation.from_pretrained(
        folder_or_hub_id, ignore_mismatched_sizes=args.ignore_mismatched_sizes, **label_overrides
    )


def check_label_sets(model: nn.Module, dataset: Dataset) -> None:
    dataset_labels = getattr(dataset, "num_labels", None)
    model_labels = int(model.config.num_labels)
    if isinstance(dataset_labels, int) and dataset_labels > model_labels:
        raise ValueError(
            f"the training set has {dataset_labels} classes but the model predicts {model_labels}; "
            "pass num_labels / id2label (--num-labels / --id2label) together with "
            "ignore_mismatched_sizes (--ignore-mismatched-sizes) to start a new class head"
        )
    if isinstance(dataset_labels, int) and dataset_labels != model_labels:
        warnings.warn(
            f"the training set has {dataset_labels} classes, the model {model_labels}",
            stacklevel=3,
        )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (code that uses the global NumPy RNG)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
