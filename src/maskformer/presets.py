"""Named starting configurations for training from scratch (random weights).

* ``"swin-base-ade"``: the reference default ``MaskFormerConfig()`` (Swin-B/384 backbone,
  150 ADE20K classes).
* ``"swin-tiny-ade"``: Swin-T (embed 96, depths 2-2-6-2, heads 3-6-12-24, window 7), 150 classes,
  as in ``facebook/maskformer-swin-tiny-ade``.
* ``"tiny-swin"`` and ``"tiny-resnet"``: small models for tests and CPU experiments (a forward
  pass on a 64x64 image takes milliseconds).

``get_preset(name, **overrides)`` builds a fresh :class:`~maskformer.configuration.MaskFormerConfig`.
Overrides are ``MaskFormerConfig`` arguments (``num_labels=5``, ``id2label={...}``,
``mask_weight=10.0``...); ``backbone_config`` and ``decoder_config`` given as dicts are merged
into the preset's backbone and decoder settings (``decoder_config={"num_queries": 50}``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from maskformer.configuration import MaskFormerConfig

_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _swin_base_ade() -> dict[str, Any]:
    # The reference default: MaskFormerConfig() with its Swin-B/384 backbone; 150 ADE20K classes.
    return {"num_labels": 150}


def _swin_tiny_ade() -> dict[str, Any]:
    return {
        "num_labels": 150,
        "backbone_config": {
            "model_type": "swin",
            "image_size": 224,
            "embed_dim": 96,
            "depths": [2, 2, 6, 2],
            "num_heads": [3, 6, 12, 24],
            "window_size": 7,
            "drop_path_rate": 0.3,
            "out_features": list(_STAGES),
        },
    }


def _tiny_decoder() -> dict[str, Any]:
    return {
        "model_type": "detr",
        "d_model": 64,
        "encoder_layers": 2,
        "encoder_attention_heads": 4,
        "encoder_ffn_dim": 128,
        "decoder_layers": 2,
        "decoder_attention_heads": 4,
        "decoder_ffn_dim": 128,
        "num_queries": 16,
    }


def _tiny_swin() -> dict[str, Any]:
    return {
        "num_labels": 10,
        "fpn_feature_size": 64,
        "mask_feature_size": 64,
        "backbone_config": {
            "model_type": "swin",
            "image_size": 64,
            "embed_dim": 16,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 2],
            "window_size": 4,
            "drop_path_rate": 0.0,
            "out_features": list(_STAGES),
        },
        "decoder_config": _tiny_decoder(),
    }


def _tiny_resnet() -> dict[str, Any]:
    return {
        "num_labels": 10,
        "fpn_feature_size": 64,
        "mask_feature_size": 64,
        "backbone_config": {
            "model_type": "resnet",
            "layer_type": "basic",
            "embedding_size": 16,
            "hidden_sizes": [16, 32, 64, 128],
            "depths": [1, 1, 1, 1],
            "out_features": list(_STAGES),
        },
        "decoder_config": _tiny_decoder(),
    }


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {
    "swin-tiny-ade": _swin_tiny_ade,
    "swin-base-ade": _swin_base_ade,
    "tiny-swin": _tiny_swin,
    "tiny-resnet": _tiny_resnet,
}


def list_presets() -> list[str]:
    """The preset names, in the order they are documented."""
    return list(PRESETS)


def is_preset(name: str) -> bool:
    return name in PRESETS


def get_preset(name: str, **overrides: Any) -> MaskFormerConfig:
    """A new ``MaskFormerConfig`` for the preset ``name``, with ``overrides`` applied.

    Raises:
        ValueError: ``name`` is not a preset (the message lists the names).
    """
    from maskformer.configuration import MaskFormerConfig

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}")
    settings = PRESETS[name]()
    if "id2label" in overrides and overrides["id2label"] is not None:
        overrides = dict(overrides)
        overrides["id2label"] = {int(k): str(v) for k, v in overrides["id2label"].items()}
        overrides.setdefault("num_labels", len(overrides["id2label"]))
        overrides.setdefault("label2id", {v: k for k, v in overrides["id2label"].items()})
        if overrides["num_labels"] != len(overrides["id2label"]):
            raise ValueError(
                f"num_labels={overrides['num_labels']} disagrees with id2label, which has "
                f"{len(overrides['id2label'])} entries"
            )
    for key in ("backbone_config", "decoder_config"):
        override = overrides.pop(key, None)
        if isinstance(override, dict) and key in settings:
            settings[key] = {**settings[key], **override}
        elif override is not None:
            settings[key] = override
    settings.update(overrides)
    if settings.get("id2label") is not None:
        settings.pop("num_labels", None)  # id2label defines the label count
    # MaskFormerConfig builds the backbone and decoder configs from dicts naming a model_type.
    return MaskFormerConfig(**settings)
