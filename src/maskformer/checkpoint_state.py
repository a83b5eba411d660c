"""Matching a state dict to a model: names, shapes, what is missing or unused, re-initialisation.

Checkpoint names may carry the ``model.`` prefix of the head model or not (a MaskFormerModel
checkpoint); both load into both classes, and the loading info names keys as the checkpoint does,
like transformers 4.34.1.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from maskformer.modeling.maskformer import MaskFormerPreTrainedModel

logger = logging.getLogger("maskformer")

# Keys whose absence is expected and harmless: the unused final Swin layernorm (absent from every
# converted hub checkpoint), buffers the model rebuilds from its config.
_HARMLESS_MISSING_SUFFIXES = (
    "pixel_level_module.encoder.model.layernorm.weight",
    "pixel_level_module.encoder.model.layernorm.bias",
    "relative_position_index",
    "criterion.empty_weight",
)
_BASE_PREFIX = "model."


class MismatchedSizesError(ValueError, RuntimeError):
    """Checkpoint tensors do not fit the model's shapes (a ``RuntimeError`` as in the reference)."""


def _checkpoint_names(model_keys: list[str], checkpoint_keys: list[str]) -> dict[str, str]:
    """Checkpoint name -> model key, adding or stripping the ``model.`` prefix between the
    MaskFormerModel and head-model layouts the way the reference does."""
    model_prefixed = any(key.startswith(_BASE_PREFIX) for key in model_keys)
    checkpoint_prefixed = any(key.startswith(_BASE_PREFIX) for key in checkpoint_keys)
    if model_prefixed and not checkpoint_prefixed:  # a base checkpoint into a head model
        return {key.removeprefix(_BASE_PREFIX): key for key in model_keys}
    if checkpoint_prefixed and not model_prefixed:  # a head checkpoint into a base model
        return {_BASE_PREFIX + key: key for key in model_keys}
    return {key: key for key in model_keys}


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


def load_weights(
    model: MaskFormerPreTrainedModel,
    state_dict: dict[str, Tensor],
    ignore_mismatched_sizes: bool,
    origin: str,
) -> dict[str, list]:
    """Copy ``state_dict`` into ``model``; re-initialise what is missing or mismatched; log.

    Returns the reference's loading info, keys named as in the checkpoint.
    """
    expected = model.state_dict()
    names = _checkpoint_names(list(expected), list(state_dict))
    mismatched = [
        (name, state_dict[name].shape, expected[key].shape)
        for name, key in names.items()
        if name in state_dict and state_dict[name].shape != expected[key].shape
    ]
    listing = "; ".join(f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched)
    if mismatched and not ignore_mismatched_sizes:
        raise MismatchedSizesError(
            f"weights in {origin!r} do not fit the model: {listing}. "
            "Pass ignore_mismatched_sizes=True to re-initialise these layers instead."
        )
    mismatched_names = {name for name, _, _ in mismatched}
    missing = [name for name in names if name not in state_dict]
    unexpected = [name for name in state_dict if name not in names]
    loadable = {
        names[name]: tensor
        for name, tensor in state_dict.items()
        if name in names and name not in mismatched_names
    }
    model.load_state_dict(loadable, strict=False)

    missing_keys = [names[name] for name in missing]
    reported = [key for key in missing_keys if not _is_harmless_missing(key)]
    rebuilt = [key for key in missing_keys if key.endswith("criterion.empty_weight")]
    _reinitialise(model, reported + [names[name] for name in mismatched_names] + rebuilt)

    model_name = type(model).__name__
    if reported:
        logger.warning(
            "Some weights of %s were not in the checkpoint %s and are newly initialised: %s",
            model_name,
            origin,
            ", ".join(reported),
        )
    if unexpected:  # a warning when the checkpoint was saved from this very class
        level = (
            logging.WARNING if model_name in (model.config.architectures or []) else logging.INFO
        )
        logger.log(
            level,
            "Some weights of the checkpoint %s were not used by %s: %s",
            origin,
            model_name,
            ", ".join(unexpected),
        )
    if mismatched:
        logger.warning(
            "Some weights of %s were re-initialised because their shapes differ from the "
            "checkpoint %s: %s",
            model_name,
            origin,
            listing,
        )
    return {
        "missing_keys": missing,
        "unexpected_keys": unexpected,
        "mismatched_keys": mismatched,
        "error_msgs": [],
    }
