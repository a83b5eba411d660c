"""``preprocessor_config.json`` in and out: dicts, JSON, folders, hub repositories.

Hub downloads go through :func:`maskformer.utils.hub.resolve_file` (the keywords of the
reference's ``from_pretrained``: ``revision``, ``cache_dir``, ``token`` / ``use_auth_token``,
``subfolder``, ``local_files_only``, ``force_download``, ``proxies``), uploads through
:class:`maskformer.utils.hub.PushToHubMixin`; every file is written atomically.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from maskformer.utils.atomic import atomic_write_text
from maskformer.utils.hub import PushToHubMixin, pop_hub_kwargs, resolve_file

CONFIG_NAME = "preprocessor_config.json"
TYPE_KEYS = (
    "image_processor_type",
    "feature_extractor_type",
    "processor_class",
    "_processor_class",
)
"""Keys of a serialized processor that only describe its class (dropped when loading)."""
_PUSH_KEYWORDS = (
    "repo_id",
    "commit_message",
    "private",
    "token",
    "use_auth_token",
    "revision",
    "create_pr",
)


class ProcessorConfigMixin(PushToHubMixin):
    """Serialisation of a processor whose state is its instance attributes.

    The class using it provides ``from_dict(config, **overrides)`` and sets ``processor_type``
    (the ``image_processor_type`` written to the JSON).
    """

    processor_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` content: every instance attribute (deep-copied)
        and ``image_processor_type``."""
        output = copy.deepcopy(
            {key: value for key, value in self.__dict__.items() if not key.startswith("__")}
        )
        output["image_processor_type"] = self.processor_type or type(self).__name__
        return output

    def to_json_string(self) -> str:
        """``to_dict()`` as indented JSON with sorted keys (and a final newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        """Write ``to_json_string()`` to ``json_file_path`` atomically."""
        atomic_write_text(json_file_path, self.to_json_string())

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
    ) -> list[str]:
        """Write ``preprocessor_config.json`` into ``save_directory`` (created if needed).

        With ``push_to_hub=True`` also upload it to ``repo_id`` (default: the folder's name),
        passing ``commit_message``, ``private``, ``token``, ``revision``, ``create_pr``.
        Returns the written file paths."""
        unknown = set(kwargs) - set(_PUSH_KEYWORDS)
        if unknown:
            raise TypeError(
                f"save_pretrained() got unexpected keyword arguments {sorted(unknown)}; "
                f"expected some of {_PUSH_KEYWORDS}"
            )
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"`save_directory` ({directory}) must be a directory, not a file")
        path = directory / CONFIG_NAME
        self.to_json_file(path)
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", None) or directory.resolve().name
            self.push_to_hub(repo_id, **kwargs)
        return [str(path)]

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> Any:
        """Build from a ``preprocessor_config.json`` file."""
        return cls.from_dict(_read_json(Path(json_file)))

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> Any:
        """Load ``preprocessor_config.json`` from a folder, a JSON file or a hub repository id.

        Hub keywords (``revision``, ``cache_dir``, ``token`` / ``use_auth_token``,
        ``subfolder``, ``local_files_only``, ``force_download``, ``proxies``) choose the file;
        every other keyword overrides a stored value."""
        hub_kwargs = pop_hub_kwargs(kwargs)
        config_file = resolve_file(pretrained_model_name_or_path, CONFIG_NAME, **hub_kwargs)
        return cls.from_dict(_read_json(config_file), **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config
