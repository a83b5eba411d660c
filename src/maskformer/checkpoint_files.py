"""Weights files in the Hugging Face layout: which file to read, and reading it safely.

A checkpoint folder (or hub repository, optionally under ``subfolder``) holds
``model.safetensors`` (preferred) or ``pytorch_model.bin``, or shards listed by a
``*.index.json``; ``variant="fp16"`` selects ``model.fp16.safetensors`` /
``pytorch_model.fp16.bin`` as transformers 4.34.1 names them. ``.bin`` files are read only
through ``torch.load(weights_only=True)``: a file carrying arbitrary pickled objects is refused
without running them. NaN / inf values are found by :func:`non_finite_tensors`.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from maskformer.utils.hub import hub_offline, resolve_file, resolve_optional_file

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)


def add_variant(filename: str, variant: str | None) -> str:
    """``model.safetensors`` -> ``model.<variant>.safetensors`` (the reference's naming)."""
    if not variant:
        return filename
    stem, _, extension = filename.rpartition(".")
    return f"{stem}.{variant}.{extension}"


def weight_file_names(variant: str | None = None, use_safetensors: bool | None = None) -> list[str]:
    """The file names to look for, in order: safetensors first unless ``use_safetensors=False``;
    only safetensors when ``use_safetensors=True``."""
    if use_safetensors is not None and not isinstance(use_safetensors, bool):
        raise TypeError(f"use_safetensors must be True, False or None, got {use_safetensors!r}")
    if variant is not None and (not isinstance(variant, str) or not variant.strip(". ")):
        raise ValueError(f"variant must be a non-empty name such as 'fp16', got {variant!r}")
    names = []
    if use_safetensors is not False:
        names += [SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME]
    if use_safetensors is not True:
        names += [WEIGHTS_NAME, WEIGHTS_INDEX_NAME]
    return [add_variant(name, variant) for name in names]


def _shard_names(index_file: Path) -> list[str]:
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{index_file}: not a valid index file ({error})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_file}: lists no shards (expected a non-empty 'weight_map')")
    return sorted(set(weight_map.values()))


def locate_weights(
    path_or_hub_id: str | os.PathLike,
    variant: str | None = None,
    use_safetensors: bool | None = None,
    **hub_kwargs: Any,
) -> Path:
    """The weights file (or shard index, its shards fetched beside it) of a folder or hub id.

    Raises ``FileNotFoundError`` naming the folder or id and the names looked for.
    """
    names = weight_file_names(variant, use_safetensors)
    for name in names:
        found = resolve_optional_file(path_or_hub_id, name, **hub_kwargs)
        if found is None:
            continue
        if name.endswith(".index.json"):
            for shard in _shard_names(found):
                resolve_file(path_or_hub_id, shard, **hub_kwargs)
        return found
    where = os.fspath(path_or_hub_id)
    if hub_kwargs.get("subfolder"):
        where = f"{where} (subfolder {hub_kwargs['subfolder']!r})"
    hint = ""
    if variant and any(
        resolve_optional_file(path_or_hub_id, name, **hub_kwargs)
        for name in weight_file_names(None, use_safetensors)
    ):
        hint = "; it has weights without the variant: pass variant=None to load those"
    elif hub_offline() or hub_kwargs.get("local_files_only"):
        hint = " (offline: only files already in the local hub cache can be used)"
    raise FileNotFoundError(f"no weights in {where}: expected one of {', '.join(names)}{hint}")


def _load_bin(path: Path) -> dict[str, Tensor]:
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"refusing to load {str(path)!r}: it contains pickled objects other than tensors, which "
            "could run arbitrary code (only torch.load(weights_only=True) payloads are accepted). "
            f"Details: {str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    except (RuntimeError, EOFError) as error:
        raise ValueError(f"cannot read {str(path)!r} as a PyTorch weights file: {error}") from None
    if not is_state_dict(state_dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict (a dict of name -> tensor)")
    return state_dict


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read {str(path)!r} as a safetensors file: {error}") from None


def load_state_dict(weights_file: str | os.PathLike) -> dict[str, Tensor]:
    """Read a ``.safetensors`` / ``.bin`` file, or every shard listed by an ``*.index.json``."""
    path = Path(weights_file)
    if path.name.endswith(".index.json"):
        state_dict: dict[str, Tensor] = {}
        for shard in _shard_names(path):
            shard_path = path.parent / shard
            if not shard_path.is_file():
                raise FileNotFoundError(f"shard {shard!r} listed in {str(path)!r} is missing")
            state_dict.update(load_state_dict(shard_path))
        return state_dict
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return _load_bin(path)


def is_state_dict(value: Any) -> bool:
    """True when ``value`` is a dict of name -> tensor."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()
    )


def non_finite_tensors(state_dict: dict[str, Tensor]) -> list[str]:
    """The names of the floating-point tensors holding NaN or inf, in state-dict order."""
    return [
        name
        for name, tensor in state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def describe_names(names: list[str], limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, ... (12 in all)`` for a message."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"
