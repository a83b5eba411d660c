"""The argument checks of the post-processors: finite logits taken from any outputs object,
fractions in [0, 1] and one ``(height, width)`` target size per image, each failure naming the
argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

TargetSizes = Sequence[tuple[int, int]] | torch.Tensor | None


def check_finite(name: str, tensor: torch.Tensor) -> None:
    # One reduction: a NaN or an infinity makes the sum non-finite (finite values can too, by
    # overflow, which the exact checks then clear).
    if bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all()):
        return
    what = "NaN" if bool(torch.isnan(tensor).any()) else "infinite values"
    raise ValueError(
        f"{name} contains {what}: post-processing needs finite logits (check the model's "
        "inputs and weights, or run it in float32)"
    )


def checked_logits(outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Fetch and validate ``(class_queries_logits, masks_queries_logits)`` from ``outputs``,
    as float32 (half-precision logits are upcast) without gradients."""
    try:
        class_logits = outputs.class_queries_logits
        mask_logits = outputs.masks_queries_logits
    except AttributeError as error:
        raise TypeError(
            "`outputs` must have `class_queries_logits` and `masks_queries_logits` attributes "
            f"(got {type(outputs).__name__})"
        ) from error
    if not isinstance(class_logits, torch.Tensor) or class_logits.dim() != 3:
        raise ValueError(
            "`outputs.class_queries_logits` must be a tensor of shape (batch, queries, classes + 1)"
        )
    if not isinstance(mask_logits, torch.Tensor) or mask_logits.dim() != 4:
        raise ValueError(
            "`outputs.masks_queries_logits` must be a tensor of shape (batch, queries, height, width)"
        )
    if class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            "`outputs.class_queries_logits` and `outputs.masks_queries_logits` disagree on "
            f"(batch, queries): {tuple(class_logits.shape[:2])} vs {tuple(mask_logits.shape[:2])}"
        )
    logits = []
    for name, tensor in (
        ("class_queries_logits", class_logits),
        ("masks_queries_logits", mask_logits),
    ):
        if not tensor.is_floating_point():
            raise TypeError(f"`outputs.{name}` must be floating point, got {tensor.dtype}")
        tensor = tensor.detach()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        check_finite(name, tensor)
        logits.append(tensor)
    return logits[0], logits[1]


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1], or a ValueError / TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number in [0, 1], got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {value}")
    return value


def checked_target_sizes(
    target_sizes: TargetSizes, batch_size: int
) -> list[tuple[int, int] | None]:
    """One ``(height, width)`` or None per image."""
    if target_sizes is None:
        return [None] * batch_size
    if isinstance(target_sizes, torch.Tensor):
        target_sizes = target_sizes.tolist()
    if len(target_sizes) != batch_size:
        raise ValueError(
            "Make sure that you pass in as many target sizes as the batch dimension of the logits: "
            f"`target_sizes` has {len(target_sizes)} entries for a batch of {batch_size}"
        )
    sizes = []
    for size in target_sizes:
        if len(size) != 2 or any(int(s) <= 0 for s in size):
            raise ValueError(
                f"each entry of `target_sizes` must be (height, width) > 0, got {size}"
            )
        sizes.append((int(size[0]), int(size[1])))
    return sizes
