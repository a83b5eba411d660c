"""Configuration classes: `MaskFormerConfig` and the backbone / decoder configs it nests.

The on-disk format is the ``config.json`` of transformers 4.34.1: a flat JSON object whose nested
``backbone_config`` and ``decoder_config`` carry their own ``model_type``. Files written by
``save_pretrained`` use the same "diff" style as the reference (only values that differ from the
defaults are written), so the reference loads them and the JSON text matches what it writes.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

CONFIG_NAME = "config.json"

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


def _default_id2label(num_labels: int) -> dict[int, str]:
    return {i: f"LABEL_{i}" for i in range(num_labels)}


class BaseConfig:
    """Shared behaviour of every config: attribute aliases, label maps, (de)serialisation.

    Unknown keyword arguments are kept as attributes and written back by ``to_dict``.
    """

    model_type: ClassVar[str] = ""
    attribute_map: ClassVar[dict[str, str]] = {}

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
            if not isinstance(id2label, dict):
                raise TypeError(f"id2label must be a dict, got {type(id2label).__name__}")
            self.id2label = {int(k): v for k, v in id2label.items()}
            if label2id is None:
                label2id = {v: k for k, v in self.id2label.items()}
            self.label2id = {k: int(v) for k, v in label2id.items()}
        else:
            self.id2label = _default_id2label(2 if num_labels is None else int(num_labels))
            self.label2id = (
                {v: k for k, v in self.id2label.items()}
                if label2id is None or num_labels is not None
                else {k: int(v) for k, v in label2id.items()}
            )

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
        dtype = output.get("torch_dtype")
        if dtype is not None and not isinstance(dtype, str):
            output["torch_dtype"] = str(dtype).split(".")[-1]
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

    def to_json_string(self, use_diff: bool = True) -> str:
        config_dict = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(config_dict, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        _atomic_write_text(Path(json_file_path), self.to_json_string(use_diff=use_diff))

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Write ``config.json`` (diff style, like the reference) into ``save_directory``."""
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_directory {str(save_directory)!r} is a file, not a directory")
        save_directory.mkdir(parents=True, exist_ok=True)
        self.to_json_file(save_directory / CONFIG_NAME, use_diff=True)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Build a config from a dict (the dict is not modified); ``kwargs`` override its values."""
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        if not isinstance(config_dict, dict):
            raise TypeError(f"config_dict must be a dict, got {type(config_dict).__name__}")
        config = cls(**copy.deepcopy(config_dict))
        unused = {}
        for key, value in kwargs.items():
            if hasattr(config, key) or key in ("num_labels", "id2label", "label2id"):
                if key == "id2label" and isinstance(value, dict):
                    value = {int(k): v for k, v in value.items()}
                setattr(config, key, value)
                if key == "id2label":
                    config.label2id = {v: k for k, v in config.id2label.items()}
            else:
                unused[key] = value
        if return_unused_kwargs:
            return config, unused
        for key, value in unused.items():
            setattr(config, key, value)
        return config

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> Any:
        path = Path(json_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        try:
            config_dict = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {str(path)!r} is not valid JSON: {error}") from error
        return cls.from_dict(config_dict)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> Any:
        """Load from a directory holding ``config.json``, a JSON file, or a hub model id."""
        for ignored in ("cache_dir", "force_download", "revision", "token", "local_files_only"):
            kwargs.pop(ignored, None)
        config_file = resolve_file(pretrained_model_name_or_path, CONFIG_NAME)
        config_dict = json.loads(Path(config_file).read_text(encoding="utf-8"))
        return cls.from_dict(config_dict, **kwargs)

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


def atomic_write_file(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)`` on a file beside ``path``, then move it onto ``path``, so an
    interrupted write never leaves a truncated file (the temporary file is removed on error)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_file(path, lambda tmp_name: Path(tmp_name).write_text(text, encoding="utf-8"))


def resolve_file(path_or_hub_id: str | os.PathLike, filename: str) -> str:
    """The local path of ``filename`` inside a directory, a file path itself, or a hub download."""
    path = Path(path_or_hub_id)
    if path.is_dir():
        candidate = path / filename
        if not candidate.is_file():
            raise FileNotFoundError(f"{str(path)!r} has no {filename}")
        return str(candidate)
    if path.is_file():
        return str(path)
    return download_from_hub(str(path_or_hub_id), filename)


def download_from_hub(repo_id: str, filename: str) -> str:
    """Fetch one file of a hub repository (lazy ``huggingface_hub`` import, one-line errors)."""
    if str(repo_id).startswith((".", "/", "~")) or str(repo_id).count("/") > 1:
        raise FileNotFoundError(f"{repo_id!r} is neither a local directory nor a hub model id")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:  # pragma: no cover - dependency is declared
        raise ImportError(
            f"{repo_id!r} is not a local path; loading from the hub needs huggingface_hub"
        ) from error
    try:
        return hf_hub_download(repo_id, filename)
    except Exception as error:  # network errors, missing repos, offline mode...
        raise OSError(
            f"could not get {filename} for {repo_id!r}: not a local directory and the hub "
            f"download failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None


# ---------------------------------------------------------------------- backbone configs


def aligned_out_features_and_indices(
    out_features: list[str] | None, out_indices: list[int] | None, stage_names: list[str]
) -> tuple[list[str], list[int]]:
    """Make ``out_features`` and ``out_indices`` agree (§1.2 of the behaviour notes)."""
    if out_features is not None:
        if not isinstance(out_features, (list, tuple)):
            raise ValueError(f"out_features must be a list, got {type(out_features).__name__}")
        unknown = [name for name in out_features if name not in stage_names]
        if unknown:
            raise ValueError(f"out_features {unknown} are not stages; choose from {stage_names}")
    if out_indices is not None:
        if not isinstance(out_indices, (list, tuple)):
            raise ValueError(f"out_indices must be a list, got {type(out_indices).__name__}")
        bad = [i for i in out_indices if not -len(stage_names) <= i < len(stage_names)]
        if bad:
            raise ValueError(f"out_indices {bad} are out of range for {len(stage_names)} stages")
    if out_features is None and out_indices is None:
        return [stage_names[-1]], [len(stage_names) - 1]
    if out_features is None:
        return [stage_names[i] for i in out_indices], list(out_indices)
    if out_indices is None:
        return list(out_features), [stage_names.index(name) for name in out_features]
    if len(out_features) != len(out_indices) or [stage_names[i] for i in out_indices] != list(
        out_features
    ):
        raise ValueError(
            f"out_features {list(out_features)} and out_indices {list(out_indices)} do not match"
        )
    return list(out_features), list(out_indices)


class BackboneConfigMixin:
    """``out_features`` / ``out_indices`` kept aligned with ``stage_names``."""

    stage_names: list[str]

    def _set_outputs(self, out_features: Any, out_indices: Any) -> None:
        features, indices = aligned_out_features_and_indices(
            out_features, out_indices, self.stage_names
        )
        object.__setattr__(self, "_out_features", features)
        object.__setattr__(self, "_out_indices", indices)

    @property
    def out_features(self) -> list[str]:
        return self._out_features

    @out_features.setter
    def out_features(self, value: list[str] | None) -> None:
        self._set_outputs(value, None)

    @property
    def out_indices(self) -> list[int]:
        return self._out_indices

    @out_indices.setter
    def out_indices(self, value: list[int] | None) -> None:
        self._set_outputs(None, value)

    def _stored_items(self) -> dict[str, Any]:
        items = {}
        for key, value in BaseConfig._stored_items(self).items():  # type: ignore[arg-type]
            if key == "_out_features":
                items["out_features"] = value
            elif key == "_out_indices":
                items["out_indices"] = value
            else:
                items[key] = value
        return items


class SwinConfig(BackboneConfigMixin, BaseConfig):
    """The hub's Swin config (model_type ``"swin"``); MaskFormer builds its own Swin from it."""

    model_type = "swin"
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 4,
        num_channels: int = 3,
        embed_dim: int = 96,
        depths: list[int] = (2, 2, 6, 2),
        num_heads: list[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.1,
        hidden_act: str = "gelu",
        use_absolute_embeddings: bool = False,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-5,
        encoder_stride: int = 32,
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        for derived in ("stage_names", "num_layers", "hidden_size"):
            kwargs.pop(derived, None)
        super().__init__(**kwargs)
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.embed_dim = embed_dim
        self.depths = list(depths)
        self.num_layers = len(self.depths)
        self.num_heads = list(num_heads)
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.hidden_act = hidden_act
        self.use_absolute_embeddings = use_absolute_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self._set_encoder_stride(encoder_stride)
        self.hidden_size = int(embed_dim * 2 ** (len(self.depths) - 1))
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]
        self._set_outputs(out_features, out_indices)

    def _set_encoder_stride(self, encoder_stride: int) -> None:
        self.encoder_stride = encoder_stride


class MaskFormerSwinConfig(SwinConfig):
    """The MaskFormer Swin config (model_type ``"maskformer-swin"``): SwinConfig without encoder_stride."""

    model_type = "maskformer-swin"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("encoder_stride", None)
        super().__init__(*args, **kwargs)

    def _set_encoder_stride(self, encoder_stride: int | None) -> None:
        if encoder_stride is not None:  # an extra key from another file: keep it
            self.encoder_stride = encoder_stride


class ResNetConfig(BackboneConfigMixin, BaseConfig):
    """The HF ResNet config (model_type ``"resnet"``), used by the maskformer-resnet checkpoints."""

    model_type = "resnet"
    layer_types: ClassVar[list[str]] = ["basic", "bottleneck"]

    def __init__(
        self,
        num_channels: int = 3,
        embedding_size: int = 64,
        hidden_sizes: list[int] = (256, 512, 1024, 2048),
        depths: list[int] = (3, 4, 6, 3),
        layer_type: str = "bottleneck",
        hidden_act: str = "relu",
        downsample_in_first_stage: bool = False,
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("stage_names", None)
        super().__init__(**kwargs)
        if layer_type not in self.layer_types:
            raise ValueError(f"layer_type={layer_type!r} is not one of {self.layer_types}")
        if len(hidden_sizes) != len(depths):
            raise ValueError(
                f"hidden_sizes ({len(hidden_sizes)} entries) and depths ({len(depths)}) must have "
                "the same length"
            )
        self.num_channels = num_channels
        self.embedding_size = embedding_size
        self.hidden_sizes = list(hidden_sizes)
        self.depths = list(depths)
        self.layer_type = layer_type
        self.hidden_act = hidden_act
        self.downsample_in_first_stage = downsample_in_first_stage
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]
        self._set_outputs(out_features, out_indices)


class DetrConfig(BaseConfig):
    """The DETR config; MaskFormer uses its decoder fields (``d_model``, ``decoder_layers``, ...)."""

    model_type = "detr"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "encoder_attention_heads"}

    def __init__(
        self,
        use_timm_backbone: bool = True,
        backbone_config: Any = None,
        num_channels: int = 3,
        num_queries: int = 100,
        encoder_layers: int = 6,
        encoder_ffn_dim: int = 2048,
        encoder_attention_heads: int = 8,
        decoder_layers: int = 6,
        decoder_ffn_dim: int = 2048,
        decoder_attention_heads: int = 8,
        encoder_layerdrop: float = 0.0,
        decoder_layerdrop: float = 0.0,
        is_encoder_decoder: bool = True,
        activation_function: str = "relu",
        d_model: int = 256,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        init_std: float = 0.02,
        init_xavier_std: float = 1.0,
        auxiliary_loss: bool = False,
        position_embedding_type: str = "sine",
        backbone: str = "resnet50",
        use_pretrained_backbone: bool = True,
        dilation: bool = False,
        class_cost: float = 1,
        bbox_cost: float = 5,
        giou_cost: float = 2,
        mask_loss_coefficient: float = 1,
        dice_loss_coefficient: float = 1,
        bbox_loss_coefficient: float = 5,
        giou_loss_coefficient: float = 2,
        eos_coefficient: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if backbone_config is not None and use_timm_backbone:
            raise ValueError("You can't specify both `backbone_config` and `use_timm_backbone`.")
        num_hidden_layers = kwargs.pop("num_hidden_layers", encoder_layers)
        self.use_timm_backbone = use_timm_backbone
        self.backbone_config = copy.deepcopy(backbone_config)
        self.num_channels = num_channels
        self.num_queries = num_queries
        self.d_model = d_model
        self.encoder_ffn_dim = encoder_ffn_dim
        self.encoder_layers = encoder_layers
        self.encoder_attention_heads = encoder_attention_heads
        self.decoder_ffn_dim = decoder_ffn_dim
        self.decoder_layers = decoder_layers
        self.decoder_attention_heads = decoder_attention_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.activation_function = activation_function
        self.init_std = init_std
        self.init_xavier_std = init_xavier_std
        self.encoder_layerdrop = encoder_layerdrop
        self.decoder_layerdrop = decoder_layerdrop
        self.num_hidden_layers = num_hidden_layers
        self.auxiliary_loss = auxiliary_loss
        self.position_embedding_type = position_embedding_type
        self.backbone = backbone
        self.use_pretrained_backbone = use_pretrained_backbone
        self.dilation = dilation
        self.class_cost = class_cost
        self.bbox_cost = bbox_cost
        self.giou_cost = giou_cost
        self.mask_loss_coefficient = mask_loss_coefficient
        self.dice_loss_coefficient = dice_loss_coefficient
        self.bbox_loss_coefficient = bbox_loss_coefficient
        self.giou_loss_coefficient = giou_loss_coefficient
        self.eos_coefficient = eos_coefficient
        super().__init__(is_encoder_decoder=is_encoder_decoder, **kwargs)


class TimmBackboneConfig(BaseConfig):
    """A ``timm`` image model as the backbone (model_type ``"timm"``; needs ``maskformer[timm]``).

    Args:
        name: the timm model name (``"resnet50"``, ``"convnext_tiny"``, ``"vit_small_patch16_224"``).
        out_indices: the feature levels to take (timm's ``out_indices``); default: timm's, less
            the levels finer than stride 4. A plain ViT (every level at one stride) is turned
            into a 4-level pyramid from its last level.
        pretrained: load timm's own pretrained weights when the model is built from this config
            (needs the network once; never when loading a checkpoint, whose weights win).
        features_only: timm's feature-extraction wrapper; must stay true (the pixel decoder
            needs feature maps, not logits). Written to config.json so the file says how the
            backbone was built.
        num_channels: input channels (timm's ``in_chans``).
        model_kwargs: further keywords for ``timm.create_model`` (e.g. ``{"dynamic_img_size":
            true}`` for a ViT on images of any size, ``{"strict_img_size": false}`` for Swin).
    """

    model_type = "timm"
    _reserved_kwargs: ClassVar[tuple[str, ...]] = (
        "features_only",
        "out_indices",
        "pretrained",
        "in_chans",
    )

    def __init__(
        self,
        name: str = "resnet50",
        out_indices: list[int] | None = None,
        pretrained: bool = False,
        features_only: bool = True,
        num_channels: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(name, str) or not name:
            raise ValueError(f"timm backbone name must be a non-empty string, got {name!r}")
        if out_indices is not None and (
            not isinstance(out_indices, (list, tuple))
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in out_indices)
            or len(out_indices) < 1
        ):
            raise ValueError(f"timm out_indices must be a list of integers, got {out_indices!r}")
        if features_only is not True:
            raise ValueError(
                "timm features_only must be true: MaskFormer's pixel decoder needs feature maps"
            )
        model_kwargs = dict(model_kwargs or {})
        reserved = sorted(set(model_kwargs) & set(self._reserved_kwargs))
        if reserved:
            raise ValueError(
                f"timm model_kwargs must not set {reserved}; use the config fields instead"
            )
        self.name = name
        self.out_indices = None if out_indices is None else list(out_indices)
        self.pretrained = bool(pretrained)
        self.features_only = True
        self.num_channels = int(num_channels)
        self.model_kwargs = model_kwargs


# ---------------------------------------------------------------------- MaskFormer config

BACKBONE_CONFIG_CLASSES: dict[str, type[BaseConfig]] = {
    "swin": SwinConfig,
    "maskformer-swin": MaskFormerSwinConfig,
    "resnet": ResNetConfig,
    "timm": TimmBackboneConfig,
}
DECODER_CONFIG_CLASSES: dict[str, type[BaseConfig]] = {"detr": DetrConfig}


def _sub_config(
    value: Any, classes: dict[str, type[BaseConfig]], argument: str, kind: str
) -> BaseConfig:
    """A nested config object from a dict (not modified) or an object, checking its type."""
    if isinstance(value, BaseConfig):
        model_type = type(value).model_type
    elif isinstance(value, dict):
        if "model_type" not in value:
            raise ValueError(
                f"{argument} dict has no 'model_type' key; it must name one of {sorted(classes)}"
            )
        model_type = value["model_type"]
    else:
        raise TypeError(f"{argument} must be a dict or a config object, got {type(value).__name__}")
    if model_type not in classes:
        raise ValueError(f"{kind} {model_type!r} is not supported; use one of {sorted(classes)}")
    if isinstance(value, BaseConfig):
        return value
    fields = {k: v for k, v in value.items() if k != "model_type"}
    return classes[model_type].from_dict(fields)


def _default_backbone_config() -> SwinConfig:
    """Swin-B, window 12, pretrained at 384 (the ADE20K MaskFormer backbone)."""
    return SwinConfig(
        image_size=384,
        in_channels=3,
        patch_size=4,
        embed_dim=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=12,
        drop_path_rate=0.3,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


class MaskFormerConfig(BaseConfig):
    """Configuration of `MaskFormerModel` / `MaskFormerForInstanceSegmentation`.

    The defaults describe ``facebook/maskformer-swin-base-ade`` (Swin-B backbone, DETR decoder
    with 100 queries, 256-wide FPN and mask features). ``config.hidden_size`` is an alias of
    ``mask_feature_size``; ``num_attention_heads`` / ``num_hidden_layers`` mirror the DETR
    *encoder* settings, like the reference.
    """

    model_type = "maskformer"
    attribute_map = {"hidden_size": "mask_feature_size"}
    backbones_supported: ClassVar[list[str]] = ["resnet", "swin"]
    decoders_supported: ClassVar[list[str]] = ["detr"]

    def __init__(
        self,
        fpn_feature_size: int = 256,
        mask_feature_size: int = 256,
        no_object_weight: float = 0.1,
        use_auxiliary_loss: bool = False,
        backbone_config: dict | BaseConfig | None = None,
        decoder_config: dict | BaseConfig | None = None,
        init_std: float = 0.02,
        init_xavier_std: float = 1.0,
        dice_weight: float = 1.0,
        cross_entropy_weight: float = 1.0,
        mask_weight: float = 20.0,
        output_auxiliary_logits: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if backbone_config is None:
            backbone_config = _default_backbone_config()
        else:
            backbone_config = _sub_config(
                backbone_config, BACKBONE_CONFIG_CLASSES, "backbone_config", "backbone"
            )
        if decoder_config is None:
            decoder_config = DetrConfig()
        else:
            decoder_config = _sub_config(
                decoder_config, DECODER_CONFIG_CLASSES, "decoder_config", "Transformer decoder"
            )
        self.backbone_config = backbone_config
        self.decoder_config = decoder_config
        self.fpn_feature_size = fpn_feature_size
        self.mask_feature_size = mask_feature_size
        self.init_std = init_std
        self.init_xavier_std = init_xavier_std
        self.cross_entropy_weight = cross_entropy_weight
        self.dice_weight = dice_weight
        self.mask_weight = mask_weight
        self.use_auxiliary_loss = use_auxiliary_loss
        self.no_object_weight = no_object_weight
        self.output_auxiliary_logits = output_auxiliary_logits
        self.num_attention_heads = decoder_config.encoder_attention_heads
        self.num_hidden_layers = decoder_config.num_hidden_layers
        super().__init__(**kwargs)

    @classmethod
    def from_backbone_and_decoder_configs(
        cls, backbone_config: BaseConfig, decoder_config: BaseConfig, **kwargs: Any
    ) -> MaskFormerConfig:
        """A config from a backbone config object and a DETR config object."""
        return cls(backbone_config=backbone_config, decoder_config=decoder_config, **kwargs)
