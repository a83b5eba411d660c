"""The transformers-compatible configuration object shared by every config class.

`BaseConfig` holds what ``PretrainedConfig`` of transformers 4.34.1 holds and writes the same
``config.json``: a flat JSON object whose nested configs carry their own ``model_type``, in the
reference's "diff" style (only values that differ from the defaults), with the generic
attributes kept so that full files load and serialise back unchanged. Reading files and hub ids
is `maskformer.config_loading.ConfigLoadingMixin`; the model-specific schema (fields, defaults,
nested configs) is :mod:`maskformer.configuration`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from maskformer.config_loading import CONFIG_NAME, ConfigLoadingMixin, checked_id2label
from maskformer.utils.atomic import atomic_write_text
from maskformer.utils.hub import PushToHubMixin

logger = logging.getLogger("maskformer")

__all__ = ["COMPATIBLE_TRANSFORMERS_VERSION", "CONFIG_NAME", "BaseConfig"]

# The value written under "transformers_version": the reference writes its own version there, and
# writing the same string keeps our files byte-for-byte comparable with the reference's.
COMPATIBLE_TRANSFORMERS_VERSION = "4.34.1"

# Generic attributes every reference config carries (generation settings and other fields the
# MaskFormer model never reads) with their default values. They are kept so that full
# (non-diff) config files load and serialise back unchanged.
_COMMON_DEFAULTS: dict[str, Any] = {
    "_name_or_path": "",
    "add_cross_attention": False,
    "architectures": None,
    "bad_words_ids": None,
    "begin_suppress_tokens": None,
    "bos_token_id": None,
    "chunk_size_feed_forward": 0,
    "cross_attention_hidden_size": None,
    "decoder_start_token_id": None,
    "diversity_penalty": 0.0,
    "do_sample": False,
    "early_stopping": False,
    "encoder_no_repeat_ngram_size": 0,
    "eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "finetuning_task": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "is_decoder": False,
    "is_encoder_decoder": False,
    "length_penalty": 1.0,
    "max_length": 20,
    "min_length": 0,
    "no_repeat_ngram_size": 0,
    "num_beam_groups": 1,
    "num_beams": 1,
    "num_return_sequences": 1,
    "output_attentions": False,
    "output_hidden_states": False,
    "output_scores": False,
    "pad_token_id": None,
    "prefix": None,
    "problem_type": None,
    "pruned_heads": {},
    "remove_invalid_values": False,
    "repetition_penalty": 1.0,
    "return_dict": True,
    "return_dict_in_generate": False,
    "sep_token_id": None,
    "suppress_tokens": None,
    "task_specific_params": None,
    "temperature": 1.0,
    "tf_legacy_loss": False,
    "tie_encoder_decoder": False,
    "tie_word_embeddings": True,
    "tokenizer_class": None,
    "top_k": 50,
    "top_p": 1.0,
    "torch_dtype": None,
    "torchscript": False,
    "typical_p": 1.0,
    "use_bfloat16": False,
}

# Attributes that are bookkeeping, never serialised.
_PRIVATE_KEYS = {"_commit_hash", "_auto_class", "_attn_implementation_internal"}
# What ``save_pretrained(push_to_hub=True, ...)`` passes on to ``push_to_hub``.
_PUSH_KEYWORDS = ("commit_message", "private", "token", "use_auth_token", "create_pr", "revision")


def _default_id2label(num_labels: int) -> dict[int, str]:
    return {i: f"LABEL_{i}" for i in range(num_labels)}


# ---------------------------------------------------------------------- the base class


class BaseConfig(ConfigLoadingMixin, PushToHubMixin):
    """Shared behaviour of every config: attribute aliases, label maps, (de)serialisation, hub.

    Loading (``from_dict``, ``from_json_file``, ``from_pretrained``) comes from
    `ConfigLoadingMixin`; ``push_to_hub`` from `maskformer.utils.hub.PushToHubMixin`.

    Unknown keyword arguments are kept as attributes and written back by ``to_dict``.
    """

    model_type: ClassVar[str] = ""
    attribute_map: ClassVar[dict[str, str]] = {}
    is_composition: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("transformers_version", None)
        kwargs.pop("model_type", None)
        for key in _PRIVATE_KEYS:
            kwargs.pop(key, None)
        for key, default in _COMMON_DEFAULTS.items():
            setattr(self, key, kwargs.pop(key, copy.deepcopy(default)))
        if isinstance(self.torch_dtype, str) and self.torch_dtype != "auto":
            import torch  # only needed when a file names a dtype

            dtype = getattr(torch, self.torch_dtype, None)
            if isinstance(dtype, torch.dtype):
                self.torch_dtype = dtype
        if "name_or_path" in kwargs:
            self._name_or_path = str(kwargs.pop("name_or_path"))

        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        num_labels = kwargs.pop("num_labels", None)
        if label2id is not None and not isinstance(label2id, dict):
            raise TypeError(f"label2id must be a dict, got {type(label2id).__name__}")
        if id2label is not None:
            self.id2label = checked_id2label(id2label)
            if num_labels is not None and num_labels != len(self.id2label):
                logger.warning(
                    "num_labels=%s disagrees with id2label (%d entries); id2label wins",
                    num_labels,
                    len(self.id2label),
                )
            # label2id is kept exactly as given (like the reference); derived when absent
            self.label2id = (
                {v: k for k, v in self.id2label.items()} if label2id is None else label2id
            )
        else:
            self.id2label = _default_id2label(2 if num_labels is None else int(num_labels))
            use_given = label2id is not None and num_labels is None
            self.label2id = label2id if use_given else {v: k for k, v in self.id2label.items()}

        for key, value in kwargs.items():
            try:
                setattr(self, key, value)
            except AttributeError as error:  # a read-only property of the subclass
                raise AttributeError(
                    f"cannot set {key!r}={value!r} on {type(self).__name__}"
                ) from error

    # ------------------------------------------------------------------ attribute aliases
    def __setattr__(self, name: str, value: Any) -> None:
        name = type(self).attribute_map.get(name, name)
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: resolve an alias, otherwise a clean AttributeError.
        alias = type(self).attribute_map.get(name)
        if alias is not None:
            return getattr(self, alias)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ labels and flags
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, num_labels: int) -> None:
        if getattr(self, "id2label", None) is None or len(self.id2label) != num_labels:
            self.id2label = _default_id2label(int(num_labels))
            self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        return bool(self.return_dict) and not self.torchscript

    @property
    def name_or_path(self) -> str:
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: str) -> None:
        self._name_or_path = str(value)

    # ------------------------------------------------------------------ serialisation
    def _stored_items(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _PRIVATE_KEYS}

    def to_dict(self) -> dict[str, Any]:
        """Every attribute, nested configs as dicts, plus ``model_type`` and ``transformers_version``."""
        output: dict[str, Any] = {}
        for key, value in self._stored_items().items():
            if isinstance(value, BaseConfig):
                nested = value.to_dict()
                nested.pop("transformers_version", None)
                output[key] = nested
            else:
                output[key] = copy.deepcopy(value)
        output["model_type"] = type(self).model_type
        output["transformers_version"] = COMPATIBLE_TRANSFORMERS_VERSION
        self.dict_torch_dtype_to_str(output)
        return output

    def to_diff_dict(self) -> dict[str, Any]:
        """The values that differ from the defaults, as the reference writes them to disk.

        A top-level key is kept when it is not a generic attribute, differs from the generic
        default, or differs from this class's default. A nested config is compared with both the
        class default's nested dict and its own class's defaults, and always keeps its model_type.
        """
        config_dict = self.to_dict()
        generic_defaults = _generic_default_dict()
        class_defaults = type(self)().to_dict()
        diff: dict[str, Any] = {}
        for key, value in config_dict.items():
            stored = self.__dict__.get(key)
            if isinstance(stored, BaseConfig) and isinstance(class_defaults.get(key), dict):
                nested_diff = _nested_diff(value, class_defaults[key], stored)
                if "model_type" in value:
                    nested_diff["model_type"] = value["model_type"]
                if nested_diff:
                    diff[key] = nested_diff
            elif (
                key not in generic_defaults
                or key == "transformers_version"
                or value != generic_defaults[key]
                or (key in class_defaults and value != class_defaults[key])
            ):
                diff[key] = value
        return diff

    @staticmethod
    def dict_torch_dtype_to_str(d: dict[str, Any]) -> None:
        """Replace a ``torch.dtype`` under ``torch_dtype`` (here and in nested dicts) by its name."""
        dtype = d.get("torch_dtype")
        if dtype is not None and not isinstance(dtype, str):
            d["torch_dtype"] = str(dtype).split(".")[-1]
        for value in d.values():
            if isinstance(value, dict):
                BaseConfig.dict_torch_dtype_to_str(value)

    def to_json_string(self, use_diff: bool = True) -> str:
        config_dict = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(config_dict, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        """Write the JSON text to ``json_file_path`` atomically."""
        atomic_write_text(json_file_path, self.to_json_string(use_diff=use_diff))

    def update(self, config_dict: dict[str, Any]) -> None:
        """Set every ``key: value`` of ``config_dict`` as an attribute."""
        for key, value in config_dict.items():
            setattr(self, key, value)

    def update_from_string(self, update_str: str) -> None:
        """Update existing attributes from ``"a=1,b=true,c=text"`` (values take the old types)."""
        for item in update_str.split(","):
            key, sep, text = item.partition("=")
            if not sep or not hasattr(self, key):
                raise ValueError(f"update_from_string: {item!r} does not set an existing field")
            old = getattr(self, key)
            if isinstance(old, bool):
                if text.lower() not in ("true", "1", "y", "yes", "false", "0", "n", "no"):
                    raise ValueError(f"update_from_string: {key}={text!r} is not a boolean")
                value: Any = text.lower() in ("true", "1", "y", "yes")
            elif isinstance(old, (int, float)):
                try:
                    value = type(old)(text)
                except ValueError:
                    raise ValueError(
                        f"update_from_string: {key}={text!r} is not a {type(old).__name__}"
                    ) from None
            elif isinstance(old, str):
                value = text
            else:
                raise ValueError(
                    f"update_from_string: {key} holds a {type(old).__name__}; only int, float, "
                    "bool and str fields can be set from a string"
                )
            setattr(self, key, value)

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """Write ``config.json`` (diff style, like the reference) into ``save_directory``.

        ``push_to_hub=True`` then uploads it to ``repo_id`` (default: the folder's name) with the
        keywords of :meth:`push_to_hub` (``commit_message``, ``private``, ``token``, ...).
        """
        repo_id = kwargs.pop("repo_id", None)
        push_kwargs = {key: kwargs.pop(key) for key in _PUSH_KEYWORDS if key in kwargs}
        if kwargs:
            raise TypeError(f"save_pretrained() got unexpected keyword(s) {sorted(kwargs)}")
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_directory {save_directory} is a file, not a directory")
        self.to_json_file(save_directory / CONFIG_NAME, use_diff=True)
        if push_to_hub:
            PushToHubMixin.push_to_hub(
                self, repo_id or save_directory.resolve().name, **push_kwargs
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string(use_diff=False)}"


def _generic_default_dict() -> dict[str, Any]:
    defaults = copy.deepcopy(_COMMON_DEFAULTS)
    defaults["id2label"] = _default_id2label(2)
    defaults["label2id"] = {v: k for k, v in defaults["id2label"].items()}
    defaults["model_type"] = ""
    defaults["transformers_version"] = COMPATIBLE_TRANSFORMERS_VERSION
    return defaults


def _nested_diff(
    values: dict[str, Any], container_default: dict[str, Any], config: BaseConfig
) -> dict[str, Any]:
    own_defaults = type(config)().to_dict()
    diff: dict[str, Any] = {}
    for key, value in values.items():
        stored = config.__dict__.get(key)
        if isinstance(stored, BaseConfig) and isinstance(container_default.get(key), dict):
            inner = _nested_diff(value, container_default[key], stored)
            if inner:
                diff[key] = inner
        elif (
            key not in container_default
            or value != container_default[key]
            or key not in own_defaults
            or value != own_defaults[key]
        ):
            diff[key] = value
    return diff
