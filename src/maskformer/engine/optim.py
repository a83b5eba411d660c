"""AdamW parameter groups and the warm-up + poly learning-rate schedule.

Which parameters are the backbone and which go without weight decay is the model's knowledge:
a model with ``no_weight_decay()`` and ``backbone_parameter_names()`` (full parameter names, as
``MaskFormerPreTrainedModel`` provides) decides; any other module falls back to the rules by
name and type below (the same grouping).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from maskformer.engine.arguments import TrainingArguments

BACKBONE_PREFIX = "model.pixel_level_module.encoder."
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)
_NO_DECAY_PARAMETER_NAMES = ("relative_position_bias_table", "position_embeddings")


def _is_norm_module(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith(("Norm", "Norm2d"))


def _no_weight_decay_by_rule(model: nn.Module) -> set[str]:
    """Parameters of normalisation layers and embeddings, and position tables, by name/type."""
    names = set()
    for module_name, module in model.named_modules():
        no_decay_module = _is_norm_module(module) or isinstance(module, nn.Embedding)
        for parameter_name, _ in module.named_parameters(recurse=False):
            if no_decay_module or parameter_name.endswith(_NO_DECAY_PARAMETER_NAMES):
                names.add(f"{module_name}.{parameter_name}" if module_name else parameter_name)
    return names


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters trained without weight decay (the model's own list)."""
    method = getattr(model, "no_weight_decay", None)
    return set(method()) if callable(method) else _no_weight_decay_by_rule(model)


def backbone_names(model: nn.Module) -> set[str]:
    """Full names of the backbone's parameters (the model's own list)."""
    method = getattr(model, "backbone_parameter_names", None)
    if callable(method):
        return set(method())
    return {name for name, _ in model.named_parameters() if name.startswith(BACKBONE_PREFIX)}


def parameter_groups(
    model: nn.Module, learning_rate: float, weight_decay: float, backbone_lr_multiplier: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``{head, backbone} x {decay, no decay}`` (empty groups dropped).

    Each group carries ``name`` (``head_decay``, ``backbone_no_decay``, ...) and
    ``parameter_names``; frozen parameters are left out.
    """
    no_decay = no_weight_decay_names(model)
    backbone = backbone_names(model)
    groups: dict[tuple[bool, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, parameter in model.named_parameters():  # shared parameters appear once
        if parameter.requires_grad:
            key = (name in backbone, name not in no_decay)
            groups.setdefault(key, []).append((name, parameter))
    result = []
    for is_backbone in (False, True):
        for decay in (True, False):
            members = groups.get((is_backbone, decay))
            if not members:
                continue
            part = "backbone" if is_backbone else "head"
            result.append(
                {
                    "params": [parameter for _, parameter in members],
                    "lr": learning_rate * (backbone_lr_multiplier if is_backbone else 1.0),
                    "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{part}_{'decay' if decay else 'no_decay'}",
                    "parameter_names": [name for name, _ in members],
                }
            )
    return result


def build_optimizer(model: nn.Module, args: TrainingArguments) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups` (the groups carry a ``name``)."""
    groups = parameter_groups(
        model, args.learning_rate, args.weight_decay, args.backbone_lr_multiplier
    )
    for group in groups:
        group.pop("parameter_names")
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=args.adam_betas, eps=args.adam_epsilon
    )


def lr_factor(
    step: int, max_steps: int, warmup_steps: int, warmup_factor: float, power: float
) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up times poly decay.

    ``warmup = warmup_factor + (1 - warmup_factor) * step / warmup_steps`` for ``step <
    warmup_steps`` (else 1), ``poly = (1 - step / max_steps) ** power`` (0 from ``max_steps`` on).
    """
    warmup = 1.0
    if step < warmup_steps:
        warmup = warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
    progress = min(step / max_steps, 1.0)
    return warmup * (1.0 - progress) ** power


def build_scheduler(
    optimizer: torch.optim.Optimizer, args: TrainingArguments
) -> torch.optim.lr_scheduler.LambdaLR:
    """The warm-up + poly schedule of :func:`lr_factor` as a ``LambdaLR`` (stepped once per step)."""

    def factor(step: int) -> float:
        return lr_factor(
            step, args.max_steps, args.warmup_steps, args.warmup_factor, args.poly_power
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
