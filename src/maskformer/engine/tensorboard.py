"""``--report-to tensorboard``: training scalars, evaluation figures and validation overlays.

Written by rank 0 under ``OUTPUT/tensorboard/`` with ``torch.utils.tensorboard.SummaryWriter``
(needs the ``tensorboard`` package: ``pip install 'maskformer[tensorboard]'``). Scalars:
``train/<term>`` for every logged loss term, ``train/lr``, ``train/lr_backbone``,
``train/grad_norm``; ``eval/<figure>`` for every evaluation; images: ``eval/overlay_<k>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maskformer.engine.hooks import Hook

if TYPE_CHECKING:
    from maskformer.engine.train import Trainer

TENSORBOARD_DIRNAME = "tensorboard"
_SKIPPED = {"step", "epoch", "time", "images_per_s", "steps_per_s"}


def require_tensorboard() -> Any:
    """``SummaryWriter``; an ImportError naming the extra when tensorboard is missing."""
    try:
        import tensorboard  # noqa: F401  (SummaryWriter needs it)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            "--report-to tensorboard needs the tensorboard package: "
            "pip install 'maskformer[tensorboard]'"
        ) from None
    return SummaryWriter


class TensorBoardHook(Hook):
    """Writes what the log and evaluation hooks produced at each step (rank 0 only)."""

    name = "tensorboard"

    def __init__(self, output_dir: str | Path, is_main: bool) -> None:
        self.folder = Path(output_dir) / TENSORBOARD_DIRNAME
        # Checked on every rank at set-up, so a missing package stops all of them before
        # anything is written; the writer (which creates its file) starts with the loop.
        self.writer_class = require_tensorboard()
        self.is_main = is_main
        self.writer: Any = None

    def before_train(self, trainer: Trainer) -> None:
        if self.is_main:
            self.writer = self.writer_class(log_dir=str(self.folder))

    def after_step(self, trainer: Trainer) -> None:
        if self.writer is None:
            return
        step = trainer.step
        record = trainer.storage.get("log")
        if record:
            for key, value in record.items():
                if key not in _SKIPPED and isinstance(value, int | float):
                    self.writer.add_scalar(f"train/{key}", value, step)
        figures = trainer.storage.get("eval")
        if figures:
            for key, value in figures.items():
                if value is not None:
                    self.writer.add_scalar(f"eval/{key}", value, step)
            for index, picture in enumerate(trainer.storage.get("eval_overlays") or []):
                image = np.asarray(picture.convert("RGB"))
                self.writer.add_image(f"eval/overlay_{index}", image, step, dataformats="HWC")
        if record or figures:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
