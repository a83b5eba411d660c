"""Fine-tuning and training MaskFormer: one process or many (``torchrun``), resumable exactly.

Python::

    from maskformer.engine.train import TrainingArguments, train

    args = TrainingArguments(output_dir="runs/ade", model="facebook/maskformer-swin-tiny-ade",
                             data_format="ade20k", data_dir="ADEChallengeData2016/training",
                             max_steps=20_000, batch_size=4)
    result = train(args)                         # or train(args, train_dataset=my_dataset)

Command line: ``maskformer train --output-dir runs/ade --model ... --data-format ade20k
--data-dir ...`` (flags in :func:`add_train_arguments`); several processes:
``torchrun --nproc_per_node 4 -m maskformer.cli train ...``.

What one optimisation step does:

1. Read ``gradient_accumulation_steps`` batches of ``batch_size`` samples per process. The data
   order is a permutation seeded by ``(seed, epoch)``, sharded over processes
   (:class:`~maskformer.engine.distributed.ShardedBatchSampler`); augmentations are seeded by
   ``(seed, epoch, index)`` inside the data set.
2. Forward the model without labels (under autocast if ``amp`` is set), then compute the loss
   once with ``model.get_loss_dict`` / ``model.get_loss`` in float32; each term is logged.
   ``num_masks`` is averaged over processes inside the loss, and DDP averages gradients, so the
   mask terms equal those of one process on the joined batch.
3. Clip the gradient norm of the whole model (``max_grad_norm``), take an AdamW step, advance the
   poly schedule (linear warm-up, then ``(1 - step / max_steps) ** poly_power``).

Every ``save_every`` steps (and at the end, and on SIGTERM) rank 0 writes an atomic checkpoint
(:mod:`maskformer.engine.checkpointing`); ``resume`` continues bit-for-bit where it stopped.
At the end the model is also written in Hugging Face format to ``<output_dir>/final``.

SIGTERM (what batch schedulers send before they kill a job) makes the loop finish the current
step, write a checkpoint, print ``saved checkpoint at step N`` and return normally: the process
exits with code 0, and ``resume="auto"`` picks the run up again.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from maskformer.engine import checkpointing
from maskformer.engine.distributed import (
    DistributedContext,
    ShardedBatchSampler,
    all_reduce_mean,
    any_rank,
    barrier,
    cleanup,
    freeze_unused_parameters,
    init_distributed,
    wrap_model,
)

DATA_FORMATS = ("ade20k", "coco-panoptic", "synthetic")
AMP_MODES = ("no", "bf16", "fp16")
BACKBONE_PREFIX = "model.pixel_level_module.encoder."
LOG_FILENAME = "log.jsonl"
ARGS_FILENAME = "training_args.json"


class DatasetItemError(RuntimeError):
    """A training sample could not be read or is malformed (the message names it)."""


# ---------------------------------------------------------------------------------- arguments


@dataclass
class TrainingArguments:
    """Everything a training run needs. ``batch_size`` is per process.

    Model: ``model`` is a preset name (:mod:`maskformer.presets`), a local checkpoint folder or a
    hub id. ``num_labels`` / ``id2label`` set a new label set; with a pretrained checkpoint add
    ``ignore_mismatched_sizes=True`` so the class head (and loss weights) start fresh.

    Data (when no data set object is passed to :func:`train`): ``data_format`` is ``"ade20k"``
    (``data_dir`` holds ``images/`` and ``annotations/``), ``"coco-panoptic"`` (``coco_json``,
    ``image_dir``, ``panoptic_dir``) or ``"synthetic"`` (``synthetic_images`` generated shapes of
    ``synthetic_size`` pixels). ``augment`` applies the recipe's random resize (short side
    ``crop_size * [min_scale, max_scale]``), crop to ``crop_size``, flip and colour jitter.

    Optimisation: AdamW, ``learning_rate`` for the heads and the pixel/transformer decoders,
    ``learning_rate * backbone_lr_multiplier`` for the backbone; no weight decay on normalisation
    layers, embeddings (the queries) and Swin relative-position tables. Linear warm-up from
    ``warmup_factor`` over ``warmup_steps``, times the poly decay ``(1 - step/max_steps) **
    poly_power``. ``max_grad_norm`` clips the norm of all gradients together (``0`` disables;
    0.01 is the MaskFormer recipe's full-model clip value: with AdamW it mostly caps outliers).
    ``amp``: ``"no"``, ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA only, with a GradScaler).

    Checkpoints: every ``save_every`` steps into ``output_dir/checkpoints`` (the newest
    ``keep_last`` are kept; ``0`` keeps all). ``resume``: a checkpoint file, or ``"auto"`` /
    ``True`` for the newest in ``output_dir`` (starting fresh when there is none). A fresh run
    refuses an ``output_dir`` that already holds checkpoints unless ``overwrite_output_dir``.
    """

    output_dir: str = "runs/maskformer"
    model: str = "tiny-resnet"
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    ignore_mismatched_sizes: bool = False
    # data (command line)
    data_format: str | None = None
    data_dir: str | None = None
    coco_json: str | None = None
    image_dir: str | None = None
    panoptic_dir: str | None = None
    reduce_labels: bool = True
    synthetic_images: int = 64
    synthetic_size: int = 64
    augment: bool = True
    crop_size: int = 512
    min_scale: float = 0.5
    max_scale: float = 2.0
    # optimisation
    batch_size: int = 2
    max_steps: int = 1000
    learning_rate: float = 1e-4
    backbone_lr_multiplier: float = 0.1
    weight_decay: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    warmup_steps: int = 0
    warmup_factor: float = 1e-3
    poly_power: float = 0.9
    max_grad_norm: float = 0.01
    gradient_accumulation_steps: int = 1
    amp: str = "no"
    # bookkeeping
    save_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    seed: int = 42
    num_workers: int = 2
    resume: str | bool | None = None
    overwrite_output_dir: bool = False
    device: str = "auto"
    find_unused_parameters: bool | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        positive = (
            "batch_size",
            "max_steps",
            "gradient_accumulation_steps",
            "save_every",
            "log_every",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.data_format is not None and self.data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {self.data_format!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.backbone_lr_multiplier < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError(
                "backbone_lr_multiplier, weight_decay and max_grad_norm must be >= 0, got "
                f"{self.backbone_lr_multiplier}, {self.weight_decay}, {self.max_grad_norm}"
            )
        if self.warmup_steps < 0 or not 0 < self.warmup_factor <= 1:
            raise ValueError(
                f"warmup_steps must be >= 0 and warmup_factor in (0, 1], got "
                f"{self.warmup_steps} and {self.warmup_factor}"
            )
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}"
            )
        if self.id2label is not None:
            self.id2label = {int(key): str(value) for key, value in self.id2label.items()}
            if self.num_labels is not None and self.num_labels != len(self.id2label):
                raise ValueError(
                    f"num_labels={self.num_labels} disagrees with id2label ({len(self.id2label)} entries)"
                )
        self.adam_betas = tuple(float(beta) for beta in self.adam_betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (also what checkpoints store)."""
        values = dataclasses.asdict(self)
        values["adam_betas"] = list(self.adam_betas)
        if self.id2label is not None:
            values["id2label"] = {str(key): value for key, value in self.id2label.items()}
        return values


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        step: the last completed optimisation step.
        losses: the last step's loss and weighted loss terms (mean over processes).
        checkpoint: the last checkpoint written (None if none was).
        final_model_dir: ``<output_dir>/final`` once training reached ``max_steps``.
        interrupted: True when SIGTERM stopped the run before ``max_steps``.
        log_file: the JSONL log.
    """

    step: int
    losses: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    final_model_dir: Path | None = None
    interrupted: bool = False
    log_file: Path | None = None


# ----------------------------------------------------------------------------- optimisation


_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)
_NO_DECAY_PARAMETER_NAMES = ("relative_position_bias_table", "position_embeddings")


def _is_norm_module(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith(("Norm", "Norm2d"))


def parameter_groups(
    model: nn.Module, learning_rate: float, weight_decay: float, backbone_lr_multiplier: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``{backbone, rest} x {decay, no decay}`` (empty groups dropped).

    Backbone parameters are those under ``model.pixel_level_module.encoder``. No weight decay for
    parameters of normalisation layers (LayerNorm, GroupNorm, BatchNorm: weights and biases),
    embeddings (``queries_embedder``) and Swin's ``relative_position_bias_table``; other biases
    keep weight decay, as in the MaskFormer recipe. Frozen parameters are left out.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    names: dict[tuple[bool, bool], list[str]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        no_decay_module = _is_norm_module(module) or isinstance(module, nn.Embedding)
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            full_name = f"{module_name}.{parameter_name}" if module_name else parameter_name
            is_backbone = full_name.startswith(BACKBONE_PREFIX)
            decay = not (no_decay_module or parameter_name.endswith(_NO_DECAY_PARAMETER_NAMES))
            groups.setdefault((is_backbone, decay), []).append(parameter)
            names.setdefault((is_backbone, decay), []).append(full_name)
    result = []
    for is_backbone in (False, True):
        for decay in (True, False):
            parameters = groups.get((is_backbone, decay))
            if not parameters:
                continue
            result.append(
                {
                    "params": parameters,
                    "lr": learning_rate * (backbone_lr_multiplier if is_backbone else 1.0),
                    "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{'backbone' if is_backbone else 'head'}_{'decay' if decay else 'no_decay'}",
                    "parameter_names": names[(is_backbone, decay)],
                }
            )
    return result


def build_optimizer(model: nn.Module, args: TrainingArguments) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups` (the groups carry a ``name``)."""
    groups = parameter_groups(
        model, args.learning_rate, args.weight_decay, args.backbone_lr_multiplier
    )
    for group in groups:
        group.pop("parameter_names")
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=args.adam_betas, eps=args.adam_epsilon
    )


def lr_factor(
    step: int, max_steps: int, warmup_steps: int, warmup_factor: float, power: float
) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up times poly decay.

    ``warmup = warmup_factor + (1 - warmup_factor) * step / warmup_steps`` for ``step <
    warmup_steps`` (else 1), ``poly = (1 - step / max_steps) ** power`` (0 from ``max_steps`` on).
    """
    warmup = 1.0
    if step < warmup_steps:
        warmup = warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
    progress = min(step / max_steps, 1.0)
    return warmup * (1.0 - progress) ** power


def build_scheduler(
    optimizer: torch.optim.Optimizer, args: TrainingArguments
) -> torch.optim.lr_scheduler.LambdaLR:
    """The warm-up + poly schedule of :func:`lr_factor` as a ``LambdaLR`` (stepped once per step)."""

    def factor(step: int) -> float:
        return lr_factor(
            step, args.max_steps, args.warmup_steps, args.warmup_factor, args.poly_power
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ------------------------------------------------------------------------------------ model


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


def _check_label_sets(model: nn.Module, dataset: Dataset) -> None:
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


# ------------------------------------------------------------------------------------- data


def build_dataset(args: TrainingArguments) -> Dataset:
    """The training set described by ``args.data_format`` and its paths."""
    if args.data_format is None:
        raise ValueError(
            "no training data: pass train_dataset=... to train(), or set data_format "
            f"(--data-format, one of {', '.join(DATA_FORMATS)}) and its paths"
        )
    from maskformer.data.transforms import EvalTransform, TrainTransform

    crop_size = args.synthetic_size if args.data_format == "synthetic" else args.crop_size
    if args.augment:
        transform = TrainTransform(
            crop_size=crop_size, base_size=crop_size, scale_range=(args.min_scale, args.max_scale)
        )
    else:
        transform = None if args.data_format == "synthetic" else EvalTransform(short_side=crop_size)
    if args.data_format == "synthetic":
        from maskformer.data.synthetic import SyntheticShapesDataset

        return SyntheticShapesDataset(
            args.synthetic_images,
            image_size=args.synthetic_size,
            seed=args.seed,
            transform=transform,
        )
    if args.data_format == "ade20k":
        from maskformer.data.ade20k import ADE20KDataset

        _require_paths(args, data_dir="--data-dir")
        num_labels = args.num_labels or (len(args.id2label) if args.id2label else 150)
        return ADE20KDataset(
            args.data_dir,
            transform=transform,
            reduce_labels=args.reduce_labels,
            num_labels=num_labels,
            id2label=args.id2label,
            seed=args.seed,
        )
    from maskformer.data.coco_panoptic import CocoPanopticDataset

    _require_paths(
        args, coco_json="--coco-json", image_dir="--image-dir", panoptic_dir="--panoptic-dir"
    )
    return CocoPanopticDataset(
        args.coco_json, args.image_dir, args.panoptic_dir, transform=transform, seed=args.seed
    )


def _require_paths(args: TrainingArguments, **flags: str) -> None:
    for attribute, flag in flags.items():
        value = getattr(args, attribute)
        if value is None:
            raise ValueError(f"data_format={args.data_format!r} needs {attribute} ({flag})")
        if not Path(value).exists():
            raise FileNotFoundError(f"{attribute} ({flag}) {str(value)!r} does not exist")


class _ReportingDataset(Dataset):
    """Wraps the training set: items are addressed as ``(epoch, index)``, so the augmentation
    epoch travels with each request (right in persistent workers too), and a failing sample
    raises :class:`DatasetItemError` naming it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, epoch_and_index: tuple[int, int]) -> dict[str, Any]:
        epoch, index = epoch_and_index
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.epoch = epoch
        try:
            sample = self.dataset[index]
        except Exception as error:
            raise DatasetItemError(
                f"training sample {index} of {type(self.dataset).__name__} could not be read: "
                f"{type(error).__name__}: {error}"
            ) from error
        missing = {"pixel_values", "mask_labels", "class_labels"} - set(sample)
        if missing:
            raise DatasetItemError(
                f"training sample {index} of {type(self.dataset).__name__} lacks {sorted(missing)}"
            )
        return sample


class _EndlessBatches:
    """This rank's batches of ``(epoch, index)`` pairs, epoch after epoch, from a position."""

    def __init__(self, sampler: ShardedBatchSampler, position: int) -> None:
        self.sampler = sampler
        self.position = position

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = divmod(self.position, self.sampler.batches_per_epoch)
        while True:
            self.sampler.set_epoch(epoch, start)
            for batch in self.sampler:
                yield [(epoch, index) for index in batch]
            epoch, start = epoch + 1, 0


def _ignore_sigterm_in_worker(_: int) -> None:
    # The main process decides when to stop; a SIGTERM sent to the whole process group must not
    # kill data workers in the middle of the step that is being finished.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _BatchStream:
    """Endless stream of this rank's collated batches, starting at any position.

    The position counts the batches consumed since the start of epoch 0; every epoch has
    ``sampler.batches_per_epoch`` of them, so ``(epoch, batch_in_epoch)`` follow from it. One
    ``DataLoader`` (and one set of workers) serves the whole run.
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: ShardedBatchSampler,
        num_workers: int,
        pin_memory: bool,
        seed: int,
        epoch: int,
        batch_in_epoch: int,
    ) -> None:
        from maskformer.data.collate import collate_batch

        self.batches_per_epoch = sampler.batches_per_epoch
        self.position = epoch * self.batches_per_epoch + batch_in_epoch
        # An explicit generator keeps the loader from drawing its worker seed from the global
        # torch RNG, which would make a resumed run's dropout differ from a straight one's.
        self._loader = DataLoader(
            _ReportingDataset(dataset),
            batch_sampler=_EndlessBatches(sampler, self.position),
            collate_fn=collate_batch,
            num_workers=num_workers,
            pin_memory=pin_memory,
            worker_init_fn=_ignore_sigterm_in_worker if num_workers else None,
            generator=torch.Generator().manual_seed(seed),
        )
        self._iterator: Iterator | None = None

    @property
    def epoch(self) -> int:
        return self.position // self.batches_per_epoch

    @property
    def batch_in_epoch(self) -> int:
        return self.position % self.batches_per_epoch

    def next(self) -> dict[str, Any]:
        if self._iterator is None:
            self._iterator = iter(self._loader)
        try:
            batch = next(self._iterator)
        except DatasetItemError as error:
            # From a worker the message carries the worker's traceback; keep the reason only.
            message, marker = str(error), f"{DatasetItemError.__name__}: "
            if "Original Traceback" not in message or marker not in message:
                raise
            raise DatasetItemError(message.rsplit(marker, 1)[1].strip()) from error
        self.position += 1
        return batch

    def close(self) -> None:
        """Stop the workers (if any)."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _check_batch(batch: Mapping[str, Any], num_labels: int) -> None:
    for image_id, classes in zip(batch["image_ids"], batch["class_labels"]):
        if classes.numel() and (int(classes.max()) >= num_labels or int(classes.min()) < 0):
            raise DatasetItemError(
                f"training sample {image_id!r} has class labels {sorted(set(classes.tolist()))}, "
                f"outside 0..{num_labels - 1} (the model has num_labels={num_labels})"
            )


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {
        "pixel_values": batch["pixel_values"].to(device, non_blocking=non_blocking),
        "pixel_mask": batch["pixel_mask"].to(device, non_blocking=non_blocking),
        "mask_labels": [m.to(device, non_blocking=non_blocking) for m in batch["mask_labels"]],
        "class_labels": [c.to(device, non_blocking=non_blocking) for c in batch["class_labels"]],
    }


# -------------------------------------------------------------------------------- utilities


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (code that uses the global NumPy RNG)
    torch.manual_seed(seed)


class _StopFlag:
    """Set by SIGTERM; the training loop polls it between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def _say(context: DistributedContext, message: str) -> None:
    if context.is_main:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


def _append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def _resolve_resume(args: TrainingArguments) -> Path | None:
    resume = args.resume
    if resume is None or resume is False or resume == "":
        return None
    if resume is True or (isinstance(resume, str) and resume.lower() in ("auto", "latest", "true")):
        return checkpointing.find_latest_checkpoint(args.output_dir)
    path = Path(resume)
    if path.is_dir():
        latest = checkpointing.find_latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"resume={str(resume)!r}: no checkpoints in that folder")
        return latest
    if not path.is_file():
        raise FileNotFoundError(f"resume={str(resume)!r}: no such checkpoint file")
    return path


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# ------------------------------------------------------------------------------------ train


def train(
    args: TrainingArguments,
    model: nn.Module | None = None,
    train_dataset: Dataset | None = None,
) -> TrainResult:
    """Train (or fine-tune) a MaskFormer; see the module docstring for what a step does.

    Args:
        args: the run's settings.
        model: a ``MaskFormerForInstanceSegmentation`` to train; default :func:`build_model`.
        train_dataset: a map-style data set of training-sample dicts; default
            :func:`build_dataset` from ``args``.

    Returns:
        A :class:`TrainResult`.

    Raises:
        FileNotFoundError: a data path, the model folder or the checkpoint to resume is missing.
        ValueError: inconsistent settings, or ``output_dir`` already holds checkpoints of another
            run (pass ``resume`` or ``overwrite_output_dir``).
        DatasetItemError: a sample could not be read (the message names it). Checkpoints already
            written are left as they are.
        FloatingPointError: the loss became NaN or infinite (without fp16 loss scaling).
    """
    context = init_distributed(args.device)
    stop_flag = _StopFlag()
    try:
        stop_flag.install()
        return _TrainingRun(args, model, train_dataset, context, stop_flag).run()
    finally:
        stop_flag.uninstall()
        cleanup(context)


class _TrainingRun:
    """One call of :func:`train`: set-up, optional resume, the step loop, checkpoints, logs."""

    def __init__(
        self,
        args: TrainingArguments,
        model: nn.Module | None,
        train_dataset: Dataset | None,
        context: DistributedContext,
        stop_flag: _StopFlag,
    ) -> None:
        self.args = args
        self.context = context
        self.device = context.device
        self.stop_flag = stop_flag
        self.output_dir = Path(args.output_dir)
        if args.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device (GradScaler); use amp='bf16' on CPU")
        self.resume_path = _resolve_resume(args)
        self._refuse_foreign_checkpoints()

        # Everything that can fail on bad input happens before anything is written.
        seed_everything(args.seed)
        dataset = train_dataset if train_dataset is not None else build_dataset(args)
        if len(dataset) == 0:
            raise ValueError("the training set is empty")
        model = model if model is not None else build_model(args, dataset)
        _check_label_sets(model, dataset)
        self.num_labels = int(model.config.num_labels)
        model.to(self.device)
        self.frozen = freeze_unused_parameters(model)
        self.trainable_parameters = [p for p in model.parameters() if p.requires_grad]
        model.train()
        self.module = model
        self.optimizer = build_optimizer(model, args)
        self.scheduler = build_scheduler(self.optimizer, args)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.amp == "fp16")
        self.sampler = ShardedBatchSampler(
            len(dataset), args.batch_size, context.rank, context.world_size, seed=args.seed
        )
        self.step, epoch, batch_in_epoch = 0, 0, 0
        if self.resume_path is not None:
            epoch, batch_in_epoch = self._load(self.resume_path)
        elif context.world_size > 1:
            torch.manual_seed(args.seed + 1_000 * context.rank)  # own dropout noise per rank
        self.stream = _BatchStream(
            dataset,
            self.sampler,
            args.num_workers,
            pin_memory=self.device.type == "cuda",
            seed=args.seed,
            epoch=epoch,
            batch_in_epoch=batch_in_epoch,
        )
        self.use_auxiliary = bool(getattr(model.config, "use_auxiliary_loss", False))
        self.log_file = self.output_dir / LOG_FILENAME
        self.last_saved_step = self.step if self.resume_path is not None else -1
        self.last_checkpoint: Path | None = self.resume_path

    # -- set-up --------------------------------------------------------------------------------
    def _refuse_foreign_checkpoints(self) -> None:
        if self.resume_path is not None or self.args.overwrite_output_dir:
            return
        existing = checkpointing.find_latest_checkpoint(self.output_dir)
        if existing is not None:
            raise ValueError(
                f"output_dir {str(self.output_dir)!r} already holds checkpoints (newest: "
                f"{existing.name}); pass resume='auto' (--resume) to continue that run, or "
                "overwrite_output_dir=True (--overwrite-output-dir) to start over in it"
            )

    def _load(self, path: Path) -> tuple[int, int]:
        """Restore model, optimiser, schedule, scaler and RNG; return (epoch, batch_in_epoch)."""
        checkpoint = checkpointing.load_checkpoint(path, map_location="cpu")
        self.module.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.step, epoch = int(checkpoint["step"]), int(checkpoint["epoch"])
        batch_in_epoch = self._resume_position(checkpoint)
        per_rank = checkpoint.get("rng_per_rank") or []
        if len(per_rank) == self.context.world_size:
            checkpointing.restore_rng_state(per_rank[self.context.rank])
        else:
            checkpointing.restore_rng_state(checkpoint["rng"])
            torch.manual_seed(self.args.seed + 1_000 * self.context.rank + self.step)
        _say(
            self.context,
            f"resumed from {path} at step {self.step} (epoch {epoch}, batch {batch_in_epoch})",
        )
        return epoch, batch_in_epoch

    def _resume_position(self, checkpoint: Mapping[str, Any]) -> int:
        """The batch of the saved epoch to continue at (exact when the layout is unchanged)."""
        saved_batch = int(checkpoint["training_args"]["batch_size"])
        saved_world = int(checkpoint["world_size"])
        batch_in_epoch = int(checkpoint["batch_in_epoch"])
        batches = self.sampler.batches_per_epoch
        if (saved_world, saved_batch) == (self.context.world_size, self.args.batch_size):
            return min(batch_in_epoch, batches)
        seen = batch_in_epoch * saved_batch * saved_world
        warnings.warn(
            f"resuming with {self.context.world_size} process(es) x batch {self.args.batch_size} "
            f"instead of {saved_world} x {saved_batch}: the data order continues at the nearest "
            "batch, so the run is not an exact continuation",
            stacklevel=4,
        )
        return min(seen // (self.args.batch_size * self.context.world_size), batches)

    def _prepare_output_dir(self) -> None:
        if self.context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.resume_path is None and self.args.overwrite_output_dir:
                for _, stale in checkpointing.list_checkpoints(self.output_dir):
                    stale.unlink()
                self.log_file.unlink(missing_ok=True)
            arguments = json.dumps(self.args.to_dict(), indent=2).encode()
            checkpointing.atomic_write(
                self.output_dir / ARGS_FILENAME, lambda f: f.write(arguments)
            )
            if self.frozen:
                _say(self.context, f"not trained (unused in the forward pass): {self.frozen}")
        barrier()

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        args = self.args
        self._prepare_output_dir()
        self.train_model = wrap_model(self.module, self.context, args.find_unused_parameters)
        self.progress = tqdm(
            total=args.max_steps,
            initial=self.step,
            disable=not (self.context.is_main and args.progress),
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        self._reset_interval()
        self.nonfinite = torch.zeros((), device=self.device)
        last_terms: dict[str, torch.Tensor] = {}
        try:
            while self.step < args.max_steps and not any_rank(
                self.stop_flag.requested, self.device
            ):
                last_terms = self._train_step()
                self.step += 1
                self.progress.update(1)
                self._after_step(last_terms)
            return self._finish(last_terms)
        finally:
            self.progress.close()
            self.stream.close()

    def _train_step(self) -> dict[str, torch.Tensor]:
        """One optimisation step over ``gradient_accumulation_steps`` batches; returns the
        step's loss terms (detached, averaged over the micro-batches, this rank only)."""
        args = self.args
        accumulation = args.gradient_accumulation_steps
        step_terms: dict[str, torch.Tensor] = {}
        for micro_step in range(accumulation):
            batch = self.stream.next()
            _check_batch(batch, self.num_labels)
            inputs = _to_device(batch, self.device)
            # Gradients are all-reduced on the last micro-batch only.
            accumulate_locally = self.context.is_distributed and micro_step < accumulation - 1
            sync = self.train_model.no_sync() if accumulate_locally else contextlib.nullcontext()
            with sync:
                loss, terms = self._forward_loss(inputs)
                self.scaler.scale(loss / accumulation).backward()
            # Local target count; its mean over ranks (taken when logging) is the loss's
            # num_masks before the clamp to >= 1.
            terms["num_masks"] = torch.tensor(
                float(sum(len(c) for c in batch["class_labels"])), device=self.device
            )
            for key, value in terms.items():
                step_terms[key] = step_terms.get(key, 0.0) + value / accumulation
        if args.amp != "fp16":  # fp16: the GradScaler skips steps with inf/NaN gradients
            self.nonfinite += (~torch.isfinite(step_terms["loss"])).to(self.nonfinite.dtype)

        self.scaler.unscale_(self.optimizer)
        if args.max_grad_norm > 0:
            step_terms["grad_norm"] = nn.utils.clip_grad_norm_(
                self.trainable_parameters, args.max_grad_norm
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_terms

    def _forward_loss(
        self, inputs: Mapping[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward without labels (autocast if asked), then the loss once, in float32."""
        with _autocast(self.device, self.args.amp):
            outputs = self.train_model(
                pixel_values=inputs["pixel_values"],
                pixel_mask=inputs["pixel_mask"],
                output_auxiliary_logits=self.use_auxiliary,
            )
        auxiliary = None
        if self.use_auxiliary and outputs.auxiliary_logits is not None:
            auxiliary = [
                {key: value.float() for key, value in entry.items()}
                for entry in outputs.auxiliary_logits
            ]
        loss_dict = self.module.get_loss_dict(
            outputs.masks_queries_logits.float(),
            outputs.class_queries_logits.float(),
            inputs["mask_labels"],
            inputs["class_labels"],
            auxiliary,
        )
        loss = self.module.get_loss(loss_dict).reshape(())
        terms = {"loss": loss.detach(), **{k: v.detach().reshape(()) for k, v in loss_dict.items()}}
        return loss, terms

    def _after_step(self, terms: Mapping[str, torch.Tensor]) -> None:
        args, step = self.args, self.step
        for key, value in terms.items():
            self.interval_sums[key] = self.interval_sums.get(key, 0.0) + value.detach()
        self.interval_steps += 1
        is_log_step = step % args.log_every == 0 or step == args.max_steps
        is_save_step = step % args.save_every == 0 or step == args.max_steps
        if not (is_log_step or is_save_step):
            return
        if any_rank(bool(self.nonfinite.item()), self.device):
            raise FloatingPointError(
                f"the training loss became NaN or infinite before step {step}; last checkpoint: "
                f"{checkpointing.find_latest_checkpoint(self.output_dir)}"
            )
        if is_log_step:
            self._log()
        if is_save_step:
            path = self._save()
            _say(self.context, f"saved checkpoint at step {step}: {path}")

    def _finish(self, last_terms: Mapping[str, torch.Tensor]) -> TrainResult:
        interrupted = self.step < self.args.max_steps
        if self.last_saved_step != self.step:
            self._save()
        result = TrainResult(
            step=self.step,
            checkpoint=self.last_checkpoint,
            interrupted=interrupted,
            log_file=self.log_file,
        )
        if interrupted:
            _say(
                self.context, f"SIGTERM: saved checkpoint at step {self.step}: {result.checkpoint}"
            )
        else:
            final = self.output_dir / checkpointing.FINAL_DIRNAME
            if self.context.is_main:
                checkpointing.save_final_model(self.module, self.output_dir)
                _say(self.context, f"saved the final model to {final}")
            barrier()
            result.final_model_dir = final
        if last_terms:
            keys = sorted(last_terms)
            means = all_reduce_mean(torch.stack([last_terms[k].float() for k in keys]))
            result.losses = dict(zip(keys, means.tolist()))
        return result

    # -- logs and checkpoints ------------------------------------------------------------------
    def _reset_interval(self) -> None:
        self.interval_sums: dict[str, torch.Tensor] = {}
        self.interval_steps = 0
        self.interval_start = time.perf_counter()

    def _log(self) -> None:
        """Append the interval's mean terms (over steps and ranks) and rates to the JSONL log."""
        keys = sorted(self.interval_sums)
        sums = torch.stack([torch.as_tensor(self.interval_sums[k]).float() for k in keys])
        means = all_reduce_mean(sums / self.interval_steps).tolist()
        elapsed = max(time.perf_counter() - self.interval_start, 1e-9)
        images = self.args.batch_size * self.args.gradient_accumulation_steps
        images *= self.context.world_size * self.interval_steps
        record: dict[str, Any] = {"step": self.step, "epoch": self.stream.epoch}
        record.update(zip(keys, means))
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            key = "lr_backbone" if group.get("name", "").startswith("backbone") else "lr"
            record.setdefault(key, lr)
        record["images_per_s"] = round(images / elapsed, 3)
        record["steps_per_s"] = round(self.interval_steps / elapsed, 4)
        record["time"] = time.time()
        if self.context.is_main:
            _append_jsonl(self.log_file, record)
        self.progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        self._reset_interval()

    def _save(self) -> Path:
        """Write a checkpoint of the current step (rank 0), keep the newest ``keep_last``."""
        rng_per_rank = checkpointing.gather_rng_states()  # a collective: every rank calls it
        path = checkpointing.checkpoint_path(self.output_dir, self.step)
        if self.context.is_main:
            state = checkpointing.build_checkpoint(
                model=self.module,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                step=self.step,
                epoch=self.stream.epoch,
                batch_in_epoch=self.stream.batch_in_epoch,
                world_size=self.context.world_size,
                training_args=self.args.to_dict(),
            )
            state["rng_per_rank"] = rng_per_rank
            path = checkpointing.save_checkpoint(state, self.output_dir)
            checkpointing.prune_checkpoints(self.output_dir, self.args.keep_last)
        barrier()
        self.last_saved_step = self.step
        self.last_checkpoint = path
        return path


# ------------------------------------------------------------------------------ command line


def _parse_id2label(value: str) -> dict[int, str]:
    """``--id2label``: a JSON object (``'{"0": "cat", ...}'``) or a path to a JSON file."""
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"--id2label: {value!r} is neither JSON nor a file")
        text = path.read_text()
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--id2label: invalid JSON ({error})") from error
    if isinstance(mapping, dict) and "id2label" in mapping:  # a config.json
        mapping = mapping["id2label"]
    if not isinstance(mapping, dict):
        raise argparse.ArgumentTypeError("--id2label must be a JSON object {index: name}")
    try:
        return {int(key): str(name) for key, name in mapping.items()}
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--id2label keys must be integers ({error})") from error


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``maskformer train`` flags (one per :class:`TrainingArguments` field)."""
    defaults = TrainingArguments()
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=defaults.model,
        help="preset name (swin-tiny-ade, swin-base-ade, tiny-swin, tiny-resnet), "
        "checkpoint folder or hub id (default: %(default)s)",
    )
    model.add_argument(
        "--num-labels", type=int, default=None, help="number of classes of a new label set"
    )
    model.add_argument(
        "--id2label",
        type=_parse_id2label,
        default=None,
        help="class names: JSON object {index: name} or a JSON file (a config.json works)",
    )
    model.add_argument(
        "--ignore-mismatched-sizes",
        action="store_true",
        help="start layers whose shapes differ from the checkpoint (the class head) anew",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-format",
        choices=DATA_FORMATS,
        default=None,
        help="ade20k: --data-dir with images/ + annotations/; coco-panoptic: "
        "--coco-json, --image-dir, --panoptic-dir; synthetic: generated shapes",
    )
    data.add_argument("--data-dir", default=None, help="ADE20K-style folder")
    data.add_argument("--coco-json", default=None, help="COCO panoptic annotation json")
    data.add_argument("--image-dir", default=None, help="COCO panoptic image folder")
    data.add_argument("--panoptic-dir", default=None, help="COCO panoptic PNG folder")
    data.add_argument(
        "--no-reduce-labels",
        dest="reduce_labels",
        action="store_false",
        help="ADE20K: keep label 0 as a class (default: 0 -> ignored, k -> k-1)",
    )
    data.add_argument("--synthetic-images", type=int, default=defaults.synthetic_images)
    data.add_argument("--synthetic-size", type=int, default=defaults.synthetic_size)
    data.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="no random resize/crop/flip/colour jitter",
    )
    data.add_argument("--crop-size", type=int, default=defaults.crop_size)
    data.add_argument("--min-scale", type=float, default=defaults.min_scale)
    data.add_argument("--max-scale", type=float, default=defaults.max_scale)
    data.add_argument("--num-workers", type=int, default=defaults.num_workers)

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=int, default=defaults.batch_size, help="per process")
    optim.add_argument("--max-steps", type=int, default=defaults.max_steps)
    optim.add_argument("--learning-rate", "--lr", type=float, default=defaults.learning_rate)
    optim.add_argument(
        "--backbone-lr-multiplier", type=float, default=defaults.backbone_lr_multiplier
    )
    optim.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    optim.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    optim.add_argument("--warmup-factor", type=float, default=defaults.warmup_factor)
    optim.add_argument("--poly-power", type=float, default=defaults.poly_power)
    optim.add_argument(
        "--max-grad-norm",
        type=float,
        default=defaults.max_grad_norm,
        help="clip the full-model gradient norm (0 = off; default: %(default)s)",
    )
    optim.add_argument(
        "--gradient-accumulation-steps", type=int, default=defaults.gradient_accumulation_steps
    )
    optim.add_argument(
        "--amp",
        choices=AMP_MODES,
        default=defaults.amp,
        help="mixed precision: bf16 (CPU/CUDA) or fp16 (CUDA, loss scaling)",
    )
    optim.add_argument("--seed", type=int, default=defaults.seed)

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", default=defaults.output_dir)
    run.add_argument("--save-every", type=int, default=defaults.save_every)
    run.add_argument(
        "--keep-last", type=int, default=defaults.keep_last, help="checkpoints to keep (0 = all)"
    )
    run.add_argument("--log-every", type=int, default=defaults.log_every)
    run.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from a checkpoint file, or (no value) the newest in --output-dir",
    )
    run.add_argument(
        "--overwrite-output-dir",
        action="store_true",
        help="start a fresh run in an --output-dir that holds checkpoints",
    )
    run.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def training_arguments_from_namespace(namespace: argparse.Namespace) -> TrainingArguments:
    """The :class:`TrainingArguments` of parsed ``maskformer train`` flags."""
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return TrainingArguments(**{k: v for k, v in vars(namespace).items() if k in names})


def run_train_from_args(namespace: argparse.Namespace) -> int:
    """``maskformer train``: run :func:`train`; 0 on success (SIGTERM included), 2 on bad input."""
    try:
        args = training_arguments_from_namespace(namespace)
        result = train(args)
    except (OSError, ValueError, DatasetItemError) as error:  # OSError: also a hub download
        print(f"maskformer train: error: {error}", file=sys.stderr)
        return 2
    losses = ", ".join(f"{k}={v:.4f}" for k, v in result.losses.items() if k.startswith("loss"))
    state = "stopped by SIGTERM" if result.interrupted else "finished"
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{state} at step {result.step}: {losses}", file=sys.stderr)
    return 0
