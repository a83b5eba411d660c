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
    set's ``id2label`` when it has one; so does a checkpoint given ``ignore_mismatched_sizes``
    (a new class head). Seeded with ``args.seed``, so every process builds the
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
        config = presets.get_preset(args.model, **label_overrides)
        if args.backbone is not None:
            from maskformer.modeling.timm_backbone import backbone_config_from_spec

            config.backbone_config = backbone_config_from_spec(args.backbone)
        return _with_category_ids(MaskFormerForInstanceSegmentation(config), dataset)
    if args.backbone is not None:
        raise ValueError(
            f"--backbone {args.backbone} replaces a preset's backbone; --model {args.model} is a "
            "checkpoint, whose backbone is fixed"
        )
    folder_or_hub_id = args.model
    if is_local_reference(args.model):
        folder_or_hub_id = str(Path(args.model).expanduser())
        if not Path(folder_or_hub_id).is_dir():
            raise FileNotFoundError(
                f"--model {args.model!r} is neither a preset "
                f"({', '.join(presets.list_presets())}) nor an existing checkpoint folder"
            )
    dataset_labels = getattr(dataset, "id2label", None)
    if not label_overrides and args.ignore_mismatched_sizes and dataset_labels:
        # a new class head was asked for: it takes the training data's label set
        label_overrides["id2label"] = {int(k): str(v) for k, v in dataset_labels.items()}
    model = MaskFormerForInstanceSegmentation.from_pretrained(
        folder_or_hub_id, ignore_mismatched_sizes=args.ignore_mismatched_sizes, **label_overrides
    )
    return _with_category_ids(model, dataset)


def _with_category_ids(model: nn.Module, dataset: Dataset | None) -> nn.Module:
    """Record the data set's own category id of each label (COCO data: ids need not be
    0..N-1) in ``config.label_category_ids``, so ``predict`` writes them; a stale list from an
    earlier label set is dropped."""
    from maskformer.data.coco_instances import CATEGORY_IDS_KEY

    category_ids = getattr(dataset, "category_ids", None)
    if category_ids is not None and len(category_ids) == int(model.config.num_labels):
        setattr(model.config, CATEGORY_IDS_KEY, [int(i) for i in category_ids])
    elif hasattr(model.config, CATEGORY_IDS_KEY):
        ids = getattr(model.config, CATEGORY_IDS_KEY)
        if ids is not None and len(ids) != int(model.config.num_labels):
            delattr(model.config, CATEGORY_IDS_KEY)
    return model


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
