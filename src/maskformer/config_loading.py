"""Loading configs: from dicts, JSON files, folders and hub ids, with the file checked.

`ConfigLoadingMixin` gives `maskformer.config_compat.BaseConfig` the reference's class methods
(``from_dict``, ``from_json_file``, ``get_config_dict``, ``from_pretrained`` with
``return_unused_kwargs``). A file that is not JSON, a field of the wrong type, or an ``id2label``
whose ids are not exactly ``0 .. num_labels - 1`` is one ``ValueError`` / ``TypeError`` that
names the file and the field. Hub ids go through :mod:`maskformer.utils.hub` (``revision``,
``cache_dir``, ``token`` / ``use_auth_token``, ``subfolder``, ``local_files_only``,
``force_download``; offline mode honoured).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any

from maskformer.utils.hub import pop_hub_kwargs, resolve_file

logger = logging.getLogger("maskformer")

CONFIG_NAME = "config.json"

# Keywords of the reference's loaders that carry telemetry or remote-code switches, not settings.
_LOADER_ONLY_KEYWORDS = ("_from_auto", "_from_pipeline", "_commit_hash", "trust_remote_code")


def checked_id2label(id2label: Any) -> dict[int, str]:
    """``id2label`` with int keys, checked to be exactly ``0 .. len - 1`` (class index order)."""
    if not isinstance(id2label, dict):
        raise TypeError(f"id2label must be a dict of id -> name, got {type(id2label).__name__}")
    converted: dict[int, Any] = {}
    for key, name in id2label.items():
        try:
            converted[int(key)] = name
        except (TypeError, ValueError):
            raise ValueError(f"id2label keys must be integer class ids, got {key!r}") from None
    expected = set(range(len(converted)))
    if set(converted) != expected:
        extra = sorted(set(converted) - expected)
        missing = sorted(expected - set(converted))
        raise ValueError(
            f"id2label ids must be exactly 0..{len(converted) - 1} (one per class index); "
            f"unexpected ids {extra[:10]}, missing ids {missing[:10]}"
        )
    return {i: converted[i] for i in sorted(converted)}


# ---------------------------------------------------------------------- field type checks


def _accepted_types(annotation: Any) -> tuple[type, ...] | None:
    """The Python types a JSON value may have for ``annotation``; None when anything goes."""
    if annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        accepted: list[type] = []
        for part in typing.get_args(annotation):
            types_ = _accepted_types(part)
            if types_ is None:
                return None
            accepted.extend(types_)
        return tuple(accepted)
    if annotation is type(None):
        return (type(None),)
    if annotation in (list, tuple) or origin in (list, tuple):
        return (list, tuple)
    if annotation is dict or origin is dict:
        return (dict,)
    if annotation is float:
        return (int, float)
    if annotation in (int, bool, str):
        return (annotation,)
    return None  # a config object or another class: checked where it is used


def check_field_types(config_class: type, values: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the field when a value in ``values`` (a loaded dict) has a type
    its constructor argument of ``config_class`` cannot take (``"ten"`` for an int, ...)."""
    hints: dict[str, Any] = {}
    for klass in reversed(config_class.__mro__):
        if "__init__" in vars(klass) and klass is not object:
            try:
                hints.update(typing.get_type_hints(klass.__init__))
            except (NameError, TypeError):  # an annotation that cannot be evaluated: no check
                continue
    hints.pop("return", None)
    for field, value in values.items():
        accepted = _accepted_types(hints.get(field, Any))
        if accepted is None:
            continue
        wrong_bool = isinstance(value, bool) and bool not in accepted
        if wrong_bool or not isinstance(value, accepted):
            names = " or ".join(sorted({t.__name__ for t in accepted}))
            raise TypeError(
                f"field {field!r} of {config_class.__name__} must be {names}, "
                f"got {type(value).__name__} ({value!r})"
            )


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path``; ``ValueError`` naming the file and line when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------- the class methods


class ConfigLoadingMixin:
    """``from_dict`` / ``from_json_file`` / ``get_config_dict`` / ``from_pretrained``."""

    model_type: str = ""

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Build a config from a dict (the dict is not modified); ``kwargs`` override its values.

        Values of a wrong type for the class's constructor arguments raise ``TypeError``.
        """
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        for key in _LOADER_ONLY_KEYWORDS:
            kwargs.pop(key, None)
        if not isinstance(config_dict, dict):
            raise TypeError(f"config_dict must be a dict, got {type(config_dict).__name__}")
        check_field_types(cls, config_dict)
        config = cls(**copy.deepcopy(config_dict))
        unused = config._apply_overrides(kwargs)
        if return_unused_kwargs:
            return config, unused
        for key, value in unused.items():
            setattr(config, key, value)
        return config

    def _apply_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Set the overrides that name existing fields; return the others."""
        if "num_labels" in overrides and "id2label" in overrides:
            id2label = overrides["id2label"] or {}
            if len(id2label) != overrides["num_labels"]:
                raise ValueError(
                    f"num_labels={overrides['num_labels']} disagrees with id2label "
                    f"({len(id2label)} entries); pass only one of them"
                )
        unused = {}
        for key, value in overrides.items():
            if not (hasattr(self, key) or key in ("num_labels", "id2label", "label2id")):
                unused[key] = value
                continue
            current = getattr(self, key, None)
            if isinstance(current, ConfigLoadingMixin) and isinstance(value, dict):
                value = type(current)(**value)
            if key == "id2label" and value is not None:
                value = checked_id2label(value)
            setattr(self, key, value)
            if key == "id2label" and "label2id" not in overrides and value is not None:
                self.label2id = {name: index for index, name in value.items()}
        return unused

    @classmethod
    def _from_file(cls, path: Path, config_dict: dict[str, Any]) -> Any:
        """``cls.from_dict(config_dict)`` with any error prefixed by the file it came from."""
        try:
            return cls.from_dict(config_dict)
        except TypeError as error:
            raise TypeError(f"{path}: {error}") from None
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike) -> dict[str, Any]:
        """The JSON object in ``json_file`` (the reference's helper of the same name)."""
        return read_config_file(json_file)

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> Any:
        """A config from a JSON file; errors name the file (and the field)."""
        return cls._from_file(Path(json_file), read_config_file(json_file))

    @classmethod
    def _resolve_config_file(
        cls, pretrained_model_name_or_path: str | os.PathLike, kwargs: dict[str, Any]
    ) -> tuple[Path, dict[str, Any]]:
        """Pop the hub keywords off ``kwargs``; return the config file's path and its dict."""
        hub_kwargs = pop_hub_kwargs(kwargs)
        for key in _LOADER_ONLY_KEYWORDS:
            kwargs.pop(key, None)
        path = resolve_file(pretrained_model_name_or_path, CONFIG_NAME, **hub_kwargs)
        return path, read_config_file(path)

    @classmethod
    def get_config_dict(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(config_dict, remaining_kwargs)`` for a folder, a JSON file or a hub id."""
        _, config_dict = cls._resolve_config_file(pretrained_model_name_or_path, kwargs)
        return config_dict, kwargs

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load from a folder holding ``config.json``, a JSON file, or a hub model id.

        Hub keywords (``revision``, ``cache_dir``, ``token`` / ``use_auth_token``, ``subfolder``,
        ``local_files_only``, ``force_download``, ``proxies``) are honoured; other keywords
        override config fields, and with ``return_unused_kwargs=True`` the ones that are not
        fields come back as ``(config, unused)``.
        """
        given = {"cache_dir": cache_dir, "revision": revision, "token": token}
        kwargs.update({key: value for key, value in given.items() if value is not None})
        if force_download:
            kwargs["force_download"] = True
        if local_files_only:
            kwargs["local_files_only"] = True
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        path, config_dict = cls._resolve_config_file(pretrained_model_name_or_path, kwargs)
        found_type = config_dict.get("model_type")
        if found_type and cls.model_type and found_type != cls.model_type:
            logger.warning(
                "%s holds a %r config; loading it as %s (%r) may not work",
                path,
                found_type,
                cls.__name__,
                cls.model_type,
            )
        config = cls._from_file(path, config_dict)
        unused = config._apply_overrides(kwargs)
        if return_unused_kwargs:
            return config, unused
        for key, value in unused.items():
            setattr(config, key, value)
        return config
