"""Training and validation data: the data sets named by the arguments, and the batch stream.

:class:`BatchStream` is an endless stream of this rank's collated batches that can start at any
position (epoch and batch), which is what makes resuming exact. Every sample is checked as it is
read (:class:`SampleChecker`): a sample that cannot be read or holds a class the model does not
predict raises :class:`DatasetItemError` naming the sample and its file.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from maskformer.engine.arguments import DATA_FORMATS, TrainingArguments
from maskformer.engine.distributed import ShardedBatchSampler

TASK_OF_FORMAT = {
    "ade20k": "semantic",
    "synthetic": "semantic",
    "coco-panoptic": "panoptic",
    "coco-instances": "instance",
}
_PATHS_OF_FORMAT = {
    "ade20k": ("data_dir",),
    "coco-panoptic": ("coco_json", "image_dir", "panoptic_dir"),
    "coco-instances": ("coco_json", "image_dir"),
}
_VALIDATION_FLAGS = ("val_data_dir", "val_coco_json", "val_image_dir", "val_panoptic_dir")


class DatasetItemError(ValueError):
    """A training sample could not be read or is malformed (the message names it)."""


def build_dataset(args: TrainingArguments, split: str = "train") -> Dataset:
    """The training (``split="train"``) or validation (``"val"``) set of ``args.data_format``.

    The validation set has the same format, read from the ``val_*`` paths, without augmentation.
    """
    if args.data_format is None:
        raise ValueError(
            "no training data: pass train_dataset=... to train(), or set data_format "
            f"(--data-format, one of {', '.join(DATA_FORMATS)}) and its paths"
        )
    from maskformer.data.transforms import EvalTransform, TrainTransform

    validation = split == "val"
    prefix = "val_" if validation else ""
    synthetic = args.data_format == "synthetic"
    crop_size = args.synthetic_size if synthetic else args.crop_size
    if args.augment and not validation:
        transform = TrainTransform(
            crop_size=crop_size, base_size=crop_size, scale_range=(args.min_scale, args.max_scale)
        )
    else:
        transform = None if synthetic else EvalTransform(short_side=crop_size)
    if synthetic:
        from maskformer.data.synthetic import SyntheticShapesDataset

        count = args.val_synthetic_images if validation else args.synthetic_images
        # Another seed: the validation images are not training images.
        seed = args.seed + 1_000_003 if validation else args.seed
        return SyntheticShapesDataset(
            count, image_size=args.synthetic_size, seed=seed, transform=transform
        )
    if args.data_format == "ade20k":
        from maskformer.data.ade20k import ADE20KDataset

        _require_paths(args, prefix, *_PATHS_OF_FORMAT["ade20k"])
        num_labels = args.num_labels or (len(args.id2label) if args.id2label else 150)
        return ADE20KDataset(
            getattr(args, f"{prefix}data_dir"),
            transform=transform,
            reduce_labels=args.reduce_labels,
            num_labels=num_labels,
            id2label=args.id2label,
            seed=args.seed,
        )
    if args.data_format == "coco-instances":
        from maskformer.data.coco_instances import CocoInstanceDataset

        _require_paths(args, prefix, *_PATHS_OF_FORMAT["coco-instances"])
        json_file, image_dir = (getattr(args, f"{prefix}{n}") for n in ("coco_json", "image_dir"))
        return CocoInstanceDataset(json_file, image_dir, transform=transform, seed=args.seed)
    from maskformer.data.coco_panoptic import CocoPanopticDataset

    _require_paths(args, prefix, *_PATHS_OF_FORMAT["coco-panoptic"])
    return CocoPanopticDataset(
        getattr(args, f"{prefix}coco_json"),
        getattr(args, f"{prefix}image_dir"),
        getattr(args, f"{prefix}panoptic_dir"),
        transform=transform,
        seed=args.seed,
    )


def _require_paths(args: TrainingArguments, prefix: str, *names: str) -> None:
    """Each path the format needs is given and exists."""
    for name in names:
        attribute = prefix + name
        flag = "--" + attribute.replace("_", "-")
        value = getattr(args, attribute)
        if value is None:
            raise ValueError(f"data_format={args.data_format!r} needs {attribute} ({flag})")
        if not Path(value).exists():
            raise FileNotFoundError(f"{attribute} ({flag}) {str(value)!r} does not exist")


def check_validation_flags(args: TrainingArguments) -> None:
    """Validation paths must be those of the training data's format, and need ``eval_every``."""
    given = [n for n in _VALIDATION_FLAGS if getattr(args, n) is not None]
    if not given:
        return
    flag = "--" + given[0].replace("_", "-")
    if args.eval_every == 0:
        raise ValueError(f"{flag} is given but --eval-every is 0 (no evaluation)")
    needed = {"val_" + name for name in _PATHS_OF_FORMAT.get(args.data_format or "", ())}
    stray = [n for n in given if n not in needed]
    if stray:
        wanted = ", ".join("--" + n.replace("_", "-") for n in sorted(needed)) or (
            "--val-synthetic-images (generated images)"
        )
        raise ValueError(
            f"{'--' + stray[0].replace('_', '-')} does not belong to data_format="
            f"{args.data_format!r}: the validation set has the training data's format, which "
            f"takes {wanted}"
        )


class SampleChecker(Dataset):
    """Wraps a data set of training-sample dicts; items are addressed as ``(epoch, index)``, so
    the augmentation epoch travels with each request (right in persistent workers too).

    A sample that fails to load, lacks a key, or holds a class label outside ``0..num_labels-1``
    raises :class:`DatasetItemError` naming the sample index, its ``image_id`` (the file) and
    the problem.
    """

    def __init__(self, dataset: Dataset, num_labels: int | None = None, what: str = "training"):
        self.dataset = dataset
        self.num_labels = num_labels
        self.what = what
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, epoch_and_index: tuple[int, int]) -> dict[str, Any]:
        epoch, index = epoch_and_index
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.epoch = epoch
        name = f"{self.what} sample {index} of {type(self.dataset).__name__}"
        try:
            sample = self.dataset[index]
        except Exception as error:
            raise DatasetItemError(
                f"{name} could not be read: {type(error).__name__}: {error}"
            ) from error
        missing = {"pixel_values", "mask_labels", "class_labels"} - set(sample)
        if missing:
            raise DatasetItemError(f"{name} lacks {sorted(missing)}")
        classes = torch.as_tensor(sample["class_labels"])
        if self.num_labels is not None and classes.numel():
            bad = classes[(classes < 0) | (classes >= self.num_labels)]
            if bad.numel():
                raise DatasetItemError(
                    f"{name} ({sample.get('image_id', '?')}) has class label "
                    f"{int(bad[0])}, outside 0..{self.num_labels - 1} (the model has "
                    f"num_labels={self.num_labels})"
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


class BatchStream:
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
        num_labels: int | None = None,
    ) -> None:
        from maskformer.data.collate import collate_batch

        self.batches_per_epoch = sampler.batches_per_epoch
        self.position = epoch * self.batches_per_epoch + batch_in_epoch
        # An explicit generator keeps the loader from drawing its worker seed from the global
        # torch RNG, which would make a resumed run's dropout differ from a straight one's.
        self._loader = DataLoader(
            SampleChecker(dataset, num_labels),
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


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """The model inputs of a collated batch on ``device``."""
    non_blocking = device.type == "cuda"
    return {
        "pixel_values": batch["pixel_values"].to(device, non_blocking=non_blocking),
        "pixel_mask": batch["pixel_mask"].to(device, non_blocking=non_blocking),
        "mask_labels": [m.to(device, non_blocking=non_blocking) for m in batch["mask_labels"]],
        "class_labels": [c.to(device, non_blocking=non_blocking) for c in batch["class_labels"]],
    }
