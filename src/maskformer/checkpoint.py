"""Reading and writing checkpoints in the Hugging Face layout.

A checkpoint directory holds ``config.json`` and the weights, as ``model.safetensors`` (preferred)
or ``pytorch_model.bin``, or sharded with a ``*.index.json`` file. ``.bin`` files are read only
through ``torch.load(weights_only=True)``: a file carrying arbitrary pickled objects is refused
without running them. Writes go to a temporary file first and are moved into place with
``os.replace``, so an interrupted save never leaves a truncated file behind.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from maskformer.configuration import CONFIG_NAME, MaskFormerConfig, atomic_write_file
from maskformer.modeling.initialization import no_init_weights

if TYPE_CHECKING:
    from maskformer.modeling.maskformer import MaskFormerPreTrainedModel

logger = logging.getLogger("maskformer")

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)

# Keys whose absence is expected and harmless: the unused final Swin layernorm (absent from every
# converted hub checkpoint), buffers the model rebuilds from its config.
_HARMLESS_MISSING_SUFFIXES = (
    "pixel_level_module.encoder.model.layernorm.weight",
    "pixel_level_module.encoder.model.layernorm.bias",
    "relative_position_index",
    "criterion.empty_weight",
)
_HUB_KWARGS = ("cache_dir", "force_download", "revision", "token", "local_files_only", "proxies")


# ---------------------------------------------------------------------- locating files


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike, **hub_kwargs: Any) -> Path:
    """A local directory for ``path_or_hub_id``: the directory itself, or a hub snapshot."""
    path = Path(path_or_hub_id)
    if path.is_dir():
        return path
    if path.is_file():
        raise ValueError(
            f"{str(path)!r} is a file; pass the directory that holds config.json and the weights"
        )
    name = str(path_or_hub_id)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not name.strip():
        raise FileNotFoundError(f"checkpoint directory {name!r} does not exist")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - declared dependency
        raise ImportError(
            f"{name!r} is not a local directory; downloading it needs huggingface_hub"
        ) from None
    try:
        local = snapshot_download(
            name,
            allow_patterns=["*.json", "*.safetensors", "*.bin"],
            **{k: v for k, v in hub_kwargs.items() if v is not None},
        )
    except Exception as error:  # offline, unknown repo, auth...
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise OSError(
            f"{name!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(error).__name__}: {first_line})"
        ) from None
    return Path(local)


def find_weights_file(directory: Path) -> Path:
    """The weights file to read in ``directory``, preferring safetensors."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"no weights in {str(directory)!r}: expected one of {', '.join(WEIGHT_FILES)}"
    )


# ---------------------------------------------------------------------- reading weights


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
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state_dict.items()
    ):
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
        index = json.loads(path.read_text(encoding="utf-8"))
        shard_names = sorted(set(index.get("weight_map", {}).values()))
        if not shard_names:
            raise ValueError(f"index file {str(path)!r} lists no shards")
        state_dict: dict[str, Tensor] = {}
        for shard in shard_names:
            shard_path = path.parent / shard
            if not shard_path.is_file():
                raise FileNotFoundError(f"shard {shard!r} listed in {str(path)!r} is missing")
            state_dict.update(load_state_dict(shard_path))
        return state_dict
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return _load_bin(path)


# ---------------------------------------------------------------------- matching names


def _align_prefix(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Add or strip the ``model.`` prefix between MaskFormerModel and the head model layouts."""
    prefix = "model."
    model_keys = model.state_dict().keys()
    model_has_prefix = any(k.startswith(prefix) for k in model_keys)
    ckpt_has_prefix = any(k.startswith(prefix) for k in state_dict)
    if model_has_prefix and not ckpt_has_prefix:
        return {prefix + k: v for k, v in state_dict.items()}
    if ckpt_has_prefix and not model_has_prefix:
        return {
            k[len(prefix) :]: v
            for k, v in state_dict.items()
            if k.startswith(prefix)  # the head's own weights have no place in the base model
        }
    return state_dict


def _is_harmless_missing(key: str) -> bool:
    return key.endswith(_HARMLESS_MISSING_SUFFIXES)


def _owner_module(model: nn.Module, key: str) -> nn.Module:
    module_name = key.rsplit(".", 1)[0] if "." in key else ""
    return model.get_submodule(module_name)


@torch.no_grad()
def _reinitialise(model: MaskFormerPreTrainedModel, keys: list[str]) -> None:
    """Fresh random values for the modules owning ``keys`` (missing or mismatched weights)."""
    seen: set[int] = set()
    for key in keys:
        if key.endswith("criterion.empty_weight"):
            criterion = _owner_module(model, key)
            weight = torch.ones_like(criterion.empty_weight)
            weight[-1] = model.config.no_object_weight
            criterion.empty_weight.copy_(weight)
            continue
        if key.endswith("relative_position_index"):
            continue  # rebuilt by the constructor
        module = _owner_module(model, key)
        if id(module) not in seen:
            seen.add(id(module))
            model._init_weights(module)


# ---------------------------------------------------------------------- public entry points


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


def load_pretrained(
    model_class: type[MaskFormerPreTrainedModel],
    pretrained_model_name_or_path: str | os.PathLike,
    config: MaskFormerConfig | None = None,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    label2id: dict[str, int] | None = None,
    ignore_mismatched_sizes: bool = False,
    torch_dtype: torch.dtype | str | None = None,
    **config_overrides: Any,
) -> MaskFormerPreTrainedModel:
    """Build ``model_class`` from a checkpoint directory (or hub id) and load its weights.

    Missing weights (other than the known harmless ones) and unused checkpoint entries are
    reported with a warning; shape mismatches raise ``ValueError`` unless
    ``ignore_mismatched_sizes=True``, in which case those layers are re-initialised (warning).
    """
    hub_kwargs = {k: config_overrides.pop(k) for k in _HUB_KWARGS if k in config_overrides}
    for ignored in ("low_cpu_mem_usage", "device_map", "use_safetensors", "trust_remote_code"):
        config_overrides.pop(ignored, None)
    directory = resolve_checkpoint_dir(pretrained_model_name_or_path, **hub_kwargs)

    if config is None:
        config = MaskFormerConfig.from_json_file(directory / CONFIG_NAME)
        config._name_or_path = str(pretrained_model_name_or_path)
    elif not isinstance(config, MaskFormerConfig):
        raise TypeError(f"config must be a MaskFormerConfig, got {type(config).__name__}")
    else:
        config = MaskFormerConfig.from_dict(config.to_dict())  # never modify the caller's object
    if id2label is not None:
        config.id2label = {int(k): v for k, v in id2label.items()}
        config.label2id = {v: k for k, v in config.id2label.items()}
    if label2id is not None:
        config.label2id = {k: int(v) for k, v in label2id.items()}
    if num_labels is not None and (id2label is None or len(id2label) != num_labels):
        config.num_labels = num_labels
    for key, value in config_overrides.items():
        if not hasattr(config, key):
            raise TypeError(
                f"from_pretrained() got an unexpected keyword argument {key!r} (not a config field)"
            )
        setattr(config, key, value)

    state_dict = load_state_dict(find_weights_file(directory))
    dtype = _resolve_dtype(torch_dtype, config, state_dict)

    with no_init_weights():
        model = model_class(config)
    if dtype is not None:
        model.to(dtype)
    state_dict = _align_prefix(state_dict, model)

    expected = model.state_dict()
    mismatched = [
        (key, tuple(state_dict[key].shape), tuple(tensor.shape))
        for key, tensor in expected.items()
        if key in state_dict and state_dict[key].shape != tensor.shape
    ]
    mismatch_listing = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in mismatched)
    if mismatched and not ignore_mismatched_sizes:
        raise ValueError(
            f"weights in {str(pretrained_model_name_or_path)!r} do not fit the model: "
            f"{mismatch_listing}. "
            "Pass ignore_mismatched_sizes=True to re-initialise these layers instead."
        )
    mismatched_keys = {key for key, _, _ in mismatched}
    for key in mismatched_keys:
        del state_dict[key]

    missing = [k for k in expected if k not in state_dict and k not in mismatched_keys]
    unexpected = [k for k in state_dict if k not in expected]
    for key in unexpected:
        del state_dict[key]
    model.load_state_dict(state_dict, strict=False)

    reported_missing = [k for k in missing if not _is_harmless_missing(k)]
    rebuilt = [k for k in missing if k.endswith("criterion.empty_weight")]
    _reinitialise(model, reported_missing + [k for k, _, _ in mismatched] + rebuilt)

    if reported_missing:
        logger.warning(
            "Some weights of %s were not in the checkpoint %s and are newly initialised: %s",
            model_class.__name__,
            pretrained_model_name_or_path,
            ", ".join(reported_missing),
        )
    if unexpected:
        logger.warning(
            "Some weights of the checkpoint %s were not used by %s: %s",
            pretrained_model_name_or_path,
            model_class.__name__,
            ", ".join(unexpected),
        )
    if mismatched:
        logger.warning(
            "Some weights of %s were re-initialised because their shapes differ from the "
            "checkpoint %s: %s",
            model_class.__name__,
            pretrained_model_name_or_path,
            mismatch_listing,
        )
    model.eval()
    return model


def save_pretrained(
    model: MaskFormerPreTrainedModel,
    save_directory: str | os.PathLike,
    safe_serialization: bool = True,
    state_dict: dict[str, Tensor] | None = None,
    **kwargs: Any,
) -> None:
    """Write ``config.json`` and the weights into ``save_directory`` (created if needed)."""
    directory = Path(save_directory)
    if directory.is_file():
        raise ValueError(f"save_directory {str(directory)!r} is a file, not a directory")
    directory.mkdir(parents=True, exist_ok=True)

    if state_dict is None:
        state_dict = model.state_dict()
    tensors = {key: value.detach().contiguous() for key, value in state_dict.items()}
    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), None)

    config = model.config
    config.architectures = [type(model).__name__]
    if dtype is not None:
        config.torch_dtype = dtype
    config.save_pretrained(directory)

    if safe_serialization:
        from safetensors.torch import save_file

        target = directory / SAFE_WEIGHTS_NAME
        atomic_write_file(target, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
        stale = (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_INDEX_NAME)
    else:
        target = directory / WEIGHTS_NAME
        atomic_write_file(target, lambda tmp: torch.save(tensors, tmp))
        stale = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME)
    # Weights of the other format would shadow (or be shadowed by) the new file: remove them.
    for name in stale:
        old = directory / name
        if old.is_file():
            old.unlink()
