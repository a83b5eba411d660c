"""``from_pretrained`` / ``save_pretrained`` for the models, with the keywords of transformers 4.34.1.

Loading takes a folder or hub id (``revision``, ``cache_dir``, ``token`` / ``use_auth_token``,
``subfolder``, ``local_files_only``, ``force_download`` honoured through
:mod:`maskformer.utils.hub`), ``variant`` and ``use_safetensors`` to pick the weights file,
``state_dict=`` to take the weights from a dict, ``device_map`` naming one device,
``torch_dtype`` and ``output_loading_info`` (``(model, {"missing_keys", "unexpected_keys",
"mismatched_keys", "error_msgs"})``, keys named as in the checkpoint, like the reference).
Weights holding NaN / inf are named in a :class:`NonFiniteWeightsWarning`. Files are written
atomically (:mod:`maskformer.utils.atomic`).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from maskformer.checkpoint_files import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHT_FILES,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    add_variant,
    describe_names,
    is_state_dict,
    load_state_dict,
    locate_weights,
    non_finite_tensors,
)
from maskformer.checkpoint_state import MismatchedSizesError, load_weights
from maskformer.config_loading import checked_id2label
from maskformer.configuration import MaskFormerConfig
from maskformer.modeling.initialization import no_init_weights
from maskformer.utils.atomic import atomic_torch_save, atomic_write_bytes
from maskformer.utils.hub import PushToHubMixin, pop_hub_kwargs

if TYPE_CHECKING:
    from maskformer.modeling.maskformer import MaskFormerPreTrainedModel

__all__ = [
    "SAFE_WEIGHTS_INDEX_NAME",
    "SAFE_WEIGHTS_NAME",
    "WEIGHTS_INDEX_NAME",
    "WEIGHTS_NAME",
    "WEIGHT_FILES",
    "MismatchedSizesError",
    "NonFiniteWeightsWarning",
    "load_pretrained",
    "load_state_dict",
    "resolve_device_map",
    "save_pretrained",
]

logger = logging.getLogger("maskformer")

# Keywords of the reference that change how it loads (memory, telemetry), never the result.
_NO_EFFECT_KEYWORDS = ("low_cpu_mem_usage", "_fast_init", "_from_auto", "_from_pipeline", "mirror")
_SPLITTING_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_PUSH_KEYWORDS = ("commit_message", "private", "token", "use_auth_token", "create_pr", "revision")


class NonFiniteWeightsWarning(UserWarning):
    """A checkpoint holds NaN or inf values (the message names the tensors)."""


def resolve_device_map(device_map: Any) -> torch.device | None:
    """The one device ``device_map`` names: ``"cpu"``, ``"cuda:1"``, a ``torch.device``, a GPU
    index, or ``{"": device}``. Maps that split a model across devices raise ``ValueError``."""
    if device_map is None:
        return None
    if isinstance(device_map, dict) and set(device_map) == {""}:
        device_map = device_map[""]
    supported = "a device ('cpu', 'cuda', 'cuda:1'), a torch.device, a GPU index or {'': device}"
    if isinstance(device_map, torch.device):
        device = device_map
    elif isinstance(device_map, int) and not isinstance(device_map, bool) and device_map >= 0:
        device = torch.device("cuda", device_map)
    elif isinstance(device_map, str) and device_map not in _SPLITTING_DEVICE_MAPS:
        try:
            device = torch.device(device_map)
        except RuntimeError:
            raise ValueError(
                f"device_map={device_map!r} is not a device; pass {supported}"
            ) from None
    else:
        raise ValueError(
            f"device_map={device_map!r} is not supported: pass {supported}; "
            "splitting one model across devices is not implemented"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device_map={device_map!r}: CUDA is not available on this machine")
    return device


def _as_dtype(value: Any) -> torch.dtype | None:
    """``value`` if it is a ``torch.dtype``, the dtype it names (``"float16"``), else None."""
    if isinstance(value, torch.dtype):
        return value
    named = getattr(torch, value, None) if isinstance(value, str) else None
    return named if isinstance(named, torch.dtype) else None


def _resolve_dtype(
    torch_dtype: Any, config: MaskFormerConfig, state_dict: dict[str, Tensor]
) -> torch.dtype | None:
    if torch_dtype is None:
        return None
    if torch_dtype == "auto":
        configured = _as_dtype(getattr(config, "torch_dtype", None))
        if configured is not None:
            return configured
        for tensor in state_dict.values():
            if tensor.is_floating_point():
                return tensor.dtype
        return None
    dtype = _as_dtype(torch_dtype)
    if dtype is not None:
        return dtype
    raise ValueError(
        f"torch_dtype must be a torch.dtype, a dtype name or 'auto', got {torch_dtype!r}"
    )


def _prepare_config(
    path: str | os.PathLike | None,
    config: MaskFormerConfig | None,
    hub_kwargs: dict[str, Any],
    labels: dict[str, Any],
    overrides: dict[str, Any],
    config_class: type = MaskFormerConfig,
) -> MaskFormerConfig:
    """The config to build the model from: read from ``path`` (or from ``config`` when it is a
    folder or file), or copied from ``config`` (the caller's object is never modified), with label
    and field overrides applied."""
    if config is None or isinstance(config, (str, os.PathLike)):
        if config is None and path is None:
            raise ValueError("from_pretrained(None, ...) needs config= and state_dict=")
        config = config_class.from_pretrained(path if config is None else config, **hub_kwargs)
    elif not isinstance(config, config_class):
        raise TypeError(f"config must be a {config_class.__name__}, got {type(config).__name__}")
    else:
        config = config_class.from_dict(config.to_dict())
    if path is not None:
        config.name_or_path = str(path)
    id2label, label2id, num_labels = labels["id2label"], labels["label2id"], labels["num_labels"]
    if id2label is not None:
        config.id2label = checked_id2label(id2label)
        config.label2id = {v: k for k, v in config.id2label.items()}
    if label2id is not None:
        config.label2id = dict(label2id)
    if num_labels is not None and (id2label is None or len(id2label) != num_labels):
        config.num_labels = num_labels
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise TypeError(
                f"from_pretrained() got an unexpected keyword argument {key!r} (not a config field)"
            )
        setattr(config, key, value)
    return config


def load_pretrained(
    model_class: type[MaskFormerPreTrainedModel],
    pretrained_model_name_or_path: str | os.PathLike | None,
    config: MaskFormerConfig | None = None,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    label2id: dict[str, int] | None = None,
    ignore_mismatched_sizes: bool = False,
    torch_dtype: torch.dtype | str | None = None,
    output_loading_info: bool = False,
    state_dict: dict[str, Tensor] | None = None,
    variant: str | None = None,
    use_safetensors: bool | None = None,
    device_map: Any = None,
    **config_overrides: Any,
) -> Any:
    """Build ``model_class`` from a checkpoint folder (or hub id) and load its weights.

    Missing weights (other than the known harmless ones) and unused checkpoint entries are
    logged; shape mismatches raise :class:`MismatchedSizesError` unless
    ``ignore_mismatched_sizes=True``, in which case those layers are re-initialised (logged).
    Returns the model in eval mode, or ``(model, loading_info)`` with ``output_loading_info``.
    """
    hub_kwargs = pop_hub_kwargs(config_overrides)
    for key in _NO_EFFECT_KEYWORDS:
        config_overrides.pop(key, None)
    if config_overrides.pop("trust_remote_code", None):
        logger.warning("trust_remote_code has no effect: maskformer never runs code from a hub")
    for key in ("from_tf", "from_flax"):
        if config_overrides.pop(key, False):
            raise ValueError(f"{key}=True: only PyTorch and safetensors weights can be loaded")
    device = resolve_device_map(device_map)
    labels = {"id2label": id2label, "label2id": label2id, "num_labels": num_labels}
    path = pretrained_model_name_or_path
    config_class = getattr(model_class, "config_class", MaskFormerConfig)
    config = _prepare_config(path, config, hub_kwargs, labels, config_overrides, config_class)

    if state_dict is None:
        if path is None:
            raise ValueError("from_pretrained(None, ...) needs config= and state_dict=")
        weights_file = locate_weights(path, variant, use_safetensors, **hub_kwargs)
        state_dict = load_state_dict(weights_file)
        source = str(weights_file)
    elif not is_state_dict(state_dict):
        raise TypeError("state_dict must be a dict of parameter name -> tensor")
    else:
        state_dict, source = dict(state_dict), "the state_dict argument"
    non_finite = non_finite_tensors(state_dict)
    if non_finite:
        warnings.warn(
            NonFiniteWeightsWarning(
                f"{source}: NaN or inf values in {describe_names(non_finite)}; "
                "the model's outputs will not be finite"
            ),
            stacklevel=3,
        )
    dtype = _resolve_dtype(torch_dtype, config, state_dict)

    with no_init_weights():
        model = model_class(config)
    if dtype is not None:
        model.to(dtype)
    info = load_weights(model, state_dict, ignore_mismatched_sizes, str(path or source))
    if device is not None:
        model.to(device)
    model.eval()
    return (model, info) if output_loading_info else model


def _size_in_bytes(size: int | str) -> int:
    """``10_000_000``, ``"10GB"``, ``"200MB"``, ``"5GiB"`` -> bytes."""
    if isinstance(size, int):
        return size
    text = str(size).strip().upper()
    units = {"GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3}
    for unit, factor in units.items():
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * factor)
            except ValueError:
                break
    raise ValueError(f"max_shard_size must be bytes or a size such as '10GB', got {size!r}")


def save_pretrained(
    model: MaskFormerPreTrainedModel,
    save_directory: str | os.PathLike,
    safe_serialization: bool = True,
    state_dict: dict[str, Tensor] | None = None,
    variant: str | None = None,
    is_main_process: bool = True,
    push_to_hub: bool = False,
    max_shard_size: int | str = "10GB",
    **kwargs: Any,
) -> None:
    """Write ``config.json`` and the weights into ``save_directory`` (created if needed).

    The weights are one file (``model[.<variant>].safetensors`` or ``pytorch_model[...].bin``);
    ``push_to_hub=True`` then uploads to ``repo_id`` (default: the folder's name).
    """
    repo_id = kwargs.pop("repo_id", None)
    push_kwargs = {key: kwargs.pop(key) for key in _PUSH_KEYWORDS if key in kwargs}
    if kwargs:
        raise TypeError(f"save_pretrained() got unexpected keyword(s) {sorted(kwargs)}")
    directory = Path(save_directory)
    if directory.is_file():
        raise ValueError(f"save_directory {str(directory)!r} is a file, not a directory")
    if not is_main_process:
        return
    if state_dict is None:
        state_dict = model.state_dict()
    tensors = {key: value.detach().contiguous() for key, value in state_dict.items()}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if total > _size_in_bytes(max_shard_size):
        logger.warning(
            "max_shard_size=%s: the %d bytes of weights are written as one file (no sharding)",
            max_shard_size,
            total,
        )
    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), None)

    config = model.config
    config.architectures = [type(model).__name__]
    if dtype is not None:
        config.torch_dtype = dtype
    config.save_pretrained(directory)

    names = [add_variant(name, variant) for name in WEIGHT_FILES]
    if safe_serialization:
        from safetensors.torch import save

        atomic_write_bytes(directory / names[0], save(tensors, metadata={"format": "pt"}))
        stale = names[1:]
    else:
        atomic_torch_save(tensors, directory / names[2])
        stale = [names[0], names[1], names[3]]
    # Weights of the other format would shadow (or be shadowed by) the new file: remove them.
    for name in stale:
        old = directory / name
        if old.is_file():
            old.unlink()
    if push_to_hub:
        save_kwargs = {"safe_serialization": safe_serialization, "variant": variant}
        PushToHubMixin.push_to_hub(
            model, repo_id or directory.resolve().name, **push_kwargs, **save_kwargs
        )
