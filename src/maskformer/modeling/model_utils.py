"""Model methods of the reference's ``PreTrainedModel`` that tools and users call, in one mixin.

Shared by the MaskFormer models and the stand-alone Swin classes: ``device``, ``dtype``,
``num_parameters``, ``get_memory_footprint``, ``can_generate``, ``base_model``, the embedding
getters, ``tie_weights`` and gradient checkpointing. Gradient checkpointing is real here: modules
that carry a ``gradient_checkpointing`` attribute (the Swin encoder, the DETR decoder) run each
block through :func:`checkpointed` while it is on and the model trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def checkpointed(
    function: Callable[..., Any], *args: Any, checkpoint_kwargs: dict[str, Any] | None = None
) -> Any:
    """``function(*args)`` without keeping its activations: they are recomputed in the backward
    pass (``torch.utils.checkpoint``, non-reentrant unless ``checkpoint_kwargs`` says otherwise).
    """
    options = {"use_reentrant": False}
    options.update(checkpoint_kwargs or {})
    return checkpoint(function, *args, **options)


class PreTrainedMethodsMixin:
    """The reference ``PreTrainedModel`` conveniences; mixed into an ``nn.Module`` with a config."""

    base_model_prefix = "model"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _tied_weights_keys: list[str] | None = None  # nothing is tied
    _keys_to_ignore_on_load_missing: list[str] | None = None
    _keys_to_ignore_on_load_unexpected: list[str] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def base_model(self) -> nn.Module:
        """The main body: the ``base_model_prefix`` child when there is one, else the model."""
        return getattr(self, self.base_model_prefix, self)

    @classmethod
    def can_generate(cls) -> bool:
        """False: no ``generate()`` (segmentation models do not generate sequences)."""
        return False

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    def get_memory_footprint(self, return_buffers: bool = True) -> int:
        """Bytes held by the parameters (and, by default, the buffers)."""
        total = sum(p.nelement() * p.element_size() for p in self.parameters())
        if return_buffers:
            total += sum(b.nelement() * b.element_size() for b in self.buffers())
        return total

    def get_input_embeddings(self) -> nn.Module:
        """Delegates to the base model; a model without input embeddings raises
        ``NotImplementedError``, as the reference's MaskFormer models do."""
        base = self.base_model
        if base is not self:
            return base.get_input_embeddings()
        raise NotImplementedError(f"{type(self).__name__} has no input embeddings")

    def get_output_embeddings(self) -> nn.Module | None:
        """None: no output embeddings to tie."""
        return None

    def tie_weights(self) -> None:
        """Tie output to input embeddings where both exist (never for MaskFormer), then let every
        submodule with a ``_tie_weights`` method tie its own."""
        if getattr(self.config, "tie_word_embeddings", True):
            output_embeddings = self.get_output_embeddings()
            if output_embeddings is not None:
                output_embeddings.weight = self.get_input_embeddings().weight
        for module in self.modules():
            if hasattr(module, "_tie_weights"):
                module._tie_weights()

    # -- gradient checkpointing --
    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Recompute the activations of each Swin block and decoder layer in the backward pass
        instead of storing them (training only). ``gradient_checkpointing_kwargs`` go to
        ``torch.utils.checkpoint.checkpoint`` (default ``use_reentrant=False``)."""
        if not self.supports_gradient_checkpointing:
            raise ValueError(f"{type(self).__name__} does not support gradient checkpointing.")
        if gradient_checkpointing_kwargs is not None and not isinstance(
            gradient_checkpointing_kwargs, dict
        ):
            raise TypeError(
                "gradient_checkpointing_kwargs must be a dict of torch.utils.checkpoint options, "
                f"got {type(gradient_checkpointing_kwargs).__name__}"
            )
        self._set_gradient_checkpointing(True, dict(gradient_checkpointing_kwargs or {}))

    def gradient_checkpointing_disable(self) -> None:
        if self.supports_gradient_checkpointing:
            self._set_gradient_checkpointing(False, {})

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def _set_gradient_checkpointing(self, value: bool, kwargs: dict[str, Any]) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = value
                module.checkpoint_kwargs = kwargs


def use_checkpointing(module: nn.Module) -> bool:
    """Whether ``module`` (with a ``gradient_checkpointing`` flag) should checkpoint now."""
    return bool(module.gradient_checkpointing) and module.training and torch.is_grad_enabled()
