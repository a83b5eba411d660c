"""Helpers shared by the trainer tests (tests/test_train_*.py) and their torchrun script."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from maskformer.data.synthetic import SyntheticShapesDataset
from maskformer.data.transforms import TrainTransform
from maskformer.engine.train import TrainingArguments


def synthetic_dataset(num_images: int = 8, size: int = 32, augment: bool = True, seed: int = 0):
    """The synthetic shapes set (4 classes), with the recipe's augmentations when asked."""
    transform = TrainTransform(crop_size=size, base_size=size) if augment else None
    return SyntheticShapesDataset(num_images, image_size=size, seed=seed, transform=transform)


def quick_args(output_dir: Path | str, **overrides: Any) -> TrainingArguments:
    """Small, fast settings: tiny-resnet, batch 2, no workers, no progress bar, log every step."""
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "model": "tiny-resnet",
        "batch_size": 2,
        "max_steps": 6,
        "learning_rate": 1e-3,
        "log_every": 1,
        "save_every": 1000,
        "num_workers": 0,
        "progress": False,
        "seed": 0,
    }
    settings.update(overrides)
    return TrainingArguments(**settings)


def read_log(output_dir: Path | str) -> list[dict[str, Any]]:
    path = Path(output_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_state_dicts_identical(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Bit-identical tensors under the same keys (nested dicts and lists walked)."""
    assert first.keys() == second.keys()
    for key in first:
        a, b = first[key], second[key]
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), f"{key} differs (max abs {float((a - b).abs().max())})"
        elif isinstance(a, dict):
            assert_state_dicts_identical(a, b)
        elif isinstance(a, list | tuple):
            assert len(a) == len(b), key
            for index, (x, y) in enumerate(zip(a, b)):
                assert_state_dicts_identical({f"{key}[{index}]": x}, {f"{key}[{index}]": y})
        else:
            assert a == b, f"{key}: {a!r} != {b!r}"
