"""Reading many images while the model runs: a ``torch.utils.data.DataLoader`` over the sorted
path list whose workers open and decode the files.

A file that cannot be read comes back as a reason (a str naming it) in place of its pixels, never
as an exception in a worker, so one corrupt image costs only itself. Pixels travel from a worker
as a ``(height, width, 3)`` uint8 tensor (shared memory, not a pickled copy).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from maskformer.engine.prediction_files import check_output_name
from maskformer.engine.segment import load_rgb_image

MAX_DEFAULT_WORKERS = 2


def default_num_workers(processes_per_machine: int = 1, model_threads: int = 1) -> int:
    """Background readers: up to 2, on the cores left once every process on this machine has
    its model's threads (``model_threads``: ``torch.get_num_threads()`` for a model on the CPU,
    1 for one that runs on a GPU). A reader on a core the model's threads use stalls each of
    their parallel regions: 8 photos through the tiny benchmark model on 2 cores and 2 threads
    took 1.55 s read in the main process and 2.5 s with one reader (0 = read in the main
    process)."""
    cores = os.cpu_count() or 1
    spare = cores // max(1, processes_per_machine) - max(1, model_threads)
    return max(0, min(MAX_DEFAULT_WORKERS, spare))


class ImageFiles(Dataset):
    """``(path, pixels or reason)`` of each path: pixels ``(height, width, 3)`` uint8."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Path, torch.Tensor | str]:
        path = self.paths[index]
        try:
            check_output_name(path)
            image = load_rgb_image(path)
        except (ValueError, OSError) as error:
            return path, str(error)
        except MemoryError:
            return path, f"cannot read image {path}: out of memory while decoding it"
        return path, torch.from_numpy(np.array(image, dtype=np.uint8))


def _as_list(items: list[Any]) -> list[Any]:
    return items


def read_images(
    paths: Sequence[Path], batch_size: int, num_workers: int
) -> Iterator[list[tuple[Path, Image.Image | str]]]:
    """Batches of ``(path, RGB image or reason)`` in the order of ``paths``, decoded by
    ``num_workers`` background processes (0: in this process)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if len(paths) <= batch_size:
        num_workers = 0  # one batch: nothing to overlap with the model
    loader = DataLoader(
        ImageFiles(paths),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_as_list,
        prefetch_factor=2 if num_workers else None,
        multiprocessing_context=worker_start_method() if num_workers else None,
    )
    for batch in loader:
        yield [
            (path, Image.fromarray(item.numpy()) if isinstance(item, torch.Tensor) else item)
            for path, item in batch
        ]


def worker_start_method() -> str | None:
    """``"fork"`` on Linux, else the interpreter's default. The workers only open and decode
    files (no model, no CUDA), so forking is safe, and it starts a worker in ~20 ms where
    ``spawn`` / ``forkserver`` (the default under a spawned parent, and Python 3.14's default)
    re-import torch in it: ~1.4 s per call, measured, more than decoding a few images costs."""
    if sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return None


def shard(paths: Sequence[Path], rank: int, world_size: int) -> list[Path]:
    """Process ``rank``'s disjoint share of ``paths``: items ``rank, rank + world, ...``."""
    return list(paths[rank::world_size])
