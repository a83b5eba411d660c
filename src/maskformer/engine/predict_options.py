"""What :func:`maskformer.engine.predict.predict_images` is asked to do
(:class:`PredictOptions`, checked on creation) and what it did (:class:`PredictionReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskformer.engine.segment import TASKS
from maskformer.engine.sliding_window import check_window
from maskformer.engine.tta import TestTimeAugmentation


def check_probability(name: str, value: Any) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a finite number in ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_positive_int(name: str, value: Any) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass
class PredictOptions:
    """What ``predict_images`` does; the thresholds are the post-processors' arguments.

    ``batch_size``: most images of one processed size per forward pass (1, the default, gives
    every image its exact single-image result), or tiles per pass with ``sliding_window``
    (``((height, width), overlap)``). ``tta``: a :class:`TestTimeAugmentation` (None: off).
    ``num_workers``: background image readers (None: :func:`default_num_workers`). ``resume``:
    skip the images an earlier run with the same model and settings finished. ``model_name``:
    how the run manifest names the model (the ``--model`` argument).
    """

    task: str = "panoptic"
    output_dir: Path = Path("predictions")
    batch_size: int = 1
    threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.8
    label_ids_to_fuse: set[int] | None = None
    overlay: bool = True
    overwrite: bool = False
    progress: bool = True
    sliding_window: tuple[tuple[int, int], float] | None = None
    tta: TestTimeAugmentation | None = None
    num_workers: int | None = None
    resume: bool = False
    model_name: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        check_positive_int("batch_size", self.batch_size)
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            check_probability(name, getattr(self, name))
        fuse = self.label_ids_to_fuse or ()
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in fuse):
            raise ValueError(f"label_ids_to_fuse must hold class ids >= 0, got {sorted(fuse)}")
        if self.sliding_window is not None:
            window, overlap = self.sliding_window
            check_window(tuple(window), overlap, (1 << 30, 1 << 30))
            self.sliding_window = ((int(window[0]), int(window[1])), float(overlap))
        if self.sliding_window is not None and self.tta:
            raise ValueError("--sliding-window and --tta cannot be combined; choose one")
        if self.tta is not None and not isinstance(self.tta, TestTimeAugmentation):
            raise TypeError(f"tta must be a TestTimeAugmentation, got {type(self.tta).__name__}")
        if self.num_workers is not None and (
            isinstance(self.num_workers, bool)
            or not isinstance(self.num_workers, int)
            or self.num_workers < 0
        ):
            raise ValueError(f"num_workers must be an integer >= 0, got {self.num_workers!r}")
        self.output_dir = Path(self.output_dir)


@dataclass
class PredictionReport:
    """Files written by this process, inputs that could not be read or segmented (path,
    reason; every process's under torchrun), images segmented (all processes) and the seconds
    the run took."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    num_images: int = 0
    seconds: float = 0.0
    skipped_as_done: int = 0

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else 0.0
