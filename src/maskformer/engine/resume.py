"""Where a run resumes from, and a one-line account of a checkpoint that does not fit the model."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from maskformer.engine import checkpointing
from maskformer.engine.arguments import TrainingArguments

# Config entries that say nothing about the architecture.
_NOT_ARCHITECTURE = {"_name_or_path", "transformers_version", "torch_dtype", "architectures"}
_SHOWN = 4


def resolve_resume(args: TrainingArguments) -> Path | None:
    """The checkpoint file ``args.resume`` names (``"auto"``: the newest in ``output_dir``, or
    None for a fresh start), or None without ``resume``."""
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


def resume_position(
    checkpoint: Mapping[str, Any], batches_per_epoch: int, world_size: int, batch_size: int
) -> int:
    """The batch of the saved epoch to continue at (exact when the layout is unchanged; with
    another number of processes or batch size, the nearest batch, with a warning)."""
    saved_batch = int(checkpoint["training_args"]["batch_size"])
    saved_world = int(checkpoint["world_size"])
    batch_in_epoch = int(checkpoint["batch_in_epoch"])
    if (saved_world, saved_batch) == (world_size, batch_size):
        return min(batch_in_epoch, batches_per_epoch)
    seen = batch_in_epoch * saved_batch * saved_world
    warnings.warn(
        f"resuming with {world_size} process(es) x batch {batch_size} instead of {saved_world} "
        f"x {saved_batch}: the data order continues at the nearest batch, so the run is not an "
        "exact continuation",
        stacklevel=5,
    )
    return min(seen // (batch_size * world_size), batches_per_epoch)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            if str(key) not in _NOT_ARCHITECTURE:
                flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return f"{shown} and {len(names) - _SHOWN} more" if len(names) > _SHOWN else shown


def describe_model_mismatch(model: nn.Module, checkpoint: Mapping[str, Any]) -> str | None:
    """None when the checkpoint's weights fit ``model``; else one line: the config fields that
    differ (when the checkpoint stores its config), or the first keys and counts."""
    saved = checkpoint["model"]
    current = model.state_dict()
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    reshaped = sorted(
        key
        for key in set(saved) & set(current)
        if tuple(saved[key].shape) != tuple(current[key].shape)
    )
    if not (missing or unexpected or reshaped):
        return None
    config = getattr(model, "config", None)
    saved_config = checkpoint.get("model_config")
    if saved_config is not None and hasattr(config, "to_dict"):
        before, now = _flatten(saved_config), _flatten(config.to_dict())
        # Fields both configs have first (e.g. the backbone's model_type), then the others.
        keys = sorted(set(before) | set(now), key=lambda k: (not (k in before and k in now), k))
        differing = [
            f"{key} {before.get(key)!r} -> {now.get(key)!r}"
            for key in keys
            if before.get(key) != now.get(key)
        ]
        if differing:
            return (
                "the checkpoint is of another architecture; config fields that differ "
                f"(checkpoint -> this model): {_listing(differing)}"
            )
    parts = []
    if missing:
        parts.append(f"{len(missing)} weights missing ({_listing(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
    if reshaped:
        parts.append(f"{len(reshaped)} of another shape ({_listing(reshaped)})")
    return "the checkpoint is of another architecture: " + "; ".join(parts)
