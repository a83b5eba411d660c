"""Hub resolution, one rule for the whole package: is this a local path or a hub id, and where
is the file on disk?

A name is local when it exists on disk or cannot be a hub id (``name`` or ``owner/name``).
Hub downloads go through ``huggingface_hub`` (imported lazily) with the keywords of
transformers' ``from_pretrained`` (``revision``, ``cache_dir``, ``token`` / ``use_auth_token``,
``subfolder``, ``local_files_only``, ``force_download``, ``proxies``). Offline mode
(``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``) is honoured whatever the installed
``huggingface_hub`` version by passing ``local_files_only=True`` explicitly; metadata requests
time out after :data:`HUB_TIMEOUT_S` seconds. Every failure is one ``OSError`` /
``FileNotFoundError`` naming the id or path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HUB_KEYWORDS = (
    "revision",
    "cache_dir",
    "token",
    "use_auth_token",
    "subfolder",
    "local_files_only",
    "force_download",
    "proxies",
    "resume_download",
)
"""Keywords of ``from_pretrained`` that only concern fetching files."""

HUB_TIMEOUT_S = 10.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when the environment asks for no network (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def is_local_reference(name: str | os.PathLike) -> bool:
    """True when ``name`` is a local path: it exists, or it cannot be a hub id."""
    text = os.fspath(name)
    return Path(text).expanduser().exists() or not _HUB_ID.match(text)


def pop_hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove and return the hub keywords of ``kwargs`` (``use_auth_token`` becomes ``token``)."""
    hub = {key: kwargs.pop(key) for key in HUB_KEYWORDS if key in kwargs}
    if "use_auth_token" in hub:
        token = hub.pop("use_auth_token")
        hub.setdefault("token", token)
    return {key: value for key, value in hub.items() if value is not None}


def _download_kwargs(hub_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(hub_kwargs) - set(HUB_KEYWORDS)
    if unknown:
        raise TypeError(
            f"unknown hub keyword(s) {sorted(unknown)}; expected some of {HUB_KEYWORDS}"
        )
    options = {key: value for key, value in hub_kwargs.items() if value is not None}
    if "use_auth_token" in options:
        options.setdefault("token", options.pop("use_auth_token"))
    if hub_offline():
        options["local_files_only"] = True
    options.setdefault("etag_timeout", HUB_TIMEOUT_S)
    return options


def _hub_error(name: str, what: str, error: BaseException) -> OSError:
    kind = type(error).__name__
    lines = str(error).strip().splitlines()
    detail = lines[0] if lines else kind
    if hub_offline():
        hint = "offline mode is on (HF_HUB_OFFLINE) and it is not in the local cache"
    elif "connect" in f"{kind} {detail}".lower() or "offline" in detail.lower():
        hint = "the hub cannot be reached from this machine"
    else:
        hint = f"{kind}: {detail}"
    return OSError(
        f"{name!r} is not a local path and {what} could not be fetched from the Hugging Face hub "
        f"({hint}); pass a local checkpoint folder or check the id"
    )


def _check_hub_id(name: str) -> None:
    if is_local_reference(name):
        raise FileNotFoundError(f"{name!r} does not exist (neither a local path nor a hub id)")


def resolve_file(path_or_hub_id: str | os.PathLike, filename: str, **hub_kwargs: Any) -> Path:
    """The local path of ``filename`` in a folder (or ``path_or_hub_id`` itself when it is a
    file), else of that file in a hub repository (downloaded into the hub cache)."""
    name = os.fspath(path_or_hub_id)
    path = Path(name).expanduser()
    subfolder = hub_kwargs.get("subfolder") or ""
    if path.is_dir():
        candidate = path / subfolder / filename
        if not candidate.is_file():
            raise FileNotFoundError(f"{path / subfolder} has no {filename}")
        return candidate
    if path.is_file():
        return path
    _check_hub_id(name)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError(f"{name!r} is a hub id; fetching it needs huggingface_hub") from None
    try:
        return Path(hf_hub_download(name, filename, **_download_kwargs(hub_kwargs)))
    except Exception as error:  # network, auth, missing repo or file, offline
        raise _hub_error(name, filename, error) from None


def resolve_optional_file(
    path_or_hub_id: str | os.PathLike, filename: str, **hub_kwargs: Any
) -> Path | None:
    """Like :func:`resolve_file` for a folder or hub id, but None when the folder or repository
    has no ``filename`` (offline: when the cache has none); other failures still raise."""
    name = os.fspath(path_or_hub_id)
    path = Path(name).expanduser()
    if path.is_dir():
        candidate = path / (hub_kwargs.get("subfolder") or "") / filename
        return candidate if candidate.is_file() else None
    if path.is_file():
        raise ValueError(f"{name!r} is a file; pass the folder that holds config.json and weights")
    _check_hub_id(name)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError(f"{name!r} is a hub id; fetching it needs huggingface_hub") from None
    options = _download_kwargs(hub_kwargs)
    try:
        return Path(hf_hub_download(name, filename, **options))
    except LocalEntryNotFoundError as error:  # not cached: absent offline, unreachable online
        if options.get("local_files_only"):
            return None
        raise _hub_error(name, filename, error) from None
    except EntryNotFoundError:  # the repository has no such file
        return None
    except Exception as error:  # network, auth, missing repo or revision
        raise _hub_error(name, filename, error) from None


def resolve_folder(
    path_or_hub_id: str | os.PathLike,
    allow_patterns: Sequence[str] = ("*.json", "*.safetensors", "*.bin"),
    **hub_kwargs: Any,
) -> Path:
    """A local folder for ``path_or_hub_id`` (joined with ``subfolder``): the folder itself, or a
    snapshot of the hub repository's files that match ``allow_patterns``."""
    name = os.fspath(path_or_hub_id)
    path = Path(name).expanduser()
    subfolder = hub_kwargs.pop("subfolder", None) or ""
    if path.is_dir():
        folder = path / subfolder
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist")
        return folder
    if path.is_file():
        raise ValueError(f"{name!r} is a file; pass the folder that holds config.json and weights")
    _check_hub_id(name)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError(f"{name!r} is a hub id; fetching it needs huggingface_hub") from None
    patterns = [f"{subfolder}/{p}" if subfolder else p for p in allow_patterns]
    try:
        local = snapshot_download(name, allow_patterns=patterns, **_download_kwargs(hub_kwargs))
    except Exception as error:  # network, auth, missing repo, offline
        raise _hub_error(name, "the checkpoint", error) from None
    return Path(local) / subfolder


class PushToHubMixin:
    """``push_to_hub`` for anything with ``save_pretrained(folder, **kwargs)`` (model, config,
    processor): saved into a temporary folder, then uploaded with ``huggingface_hub``."""

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        use_auth_token: str | bool | None = None,
        **save_kwargs: Any,
    ) -> Any:
        """Create ``repo_id`` if needed and upload what ``save_pretrained`` writes, in one commit.

        Returns what ``HfApi.upload_folder`` returns (the commit's URL or info).
        """
        import tempfile

        if not isinstance(repo_id, str) or not repo_id.strip():
            raise ValueError(f"repo_id must be a non-empty 'owner/name' string, got {repo_id!r}")
        if hub_offline():
            raise OSError(f"cannot push to {repo_id!r}: offline mode is on (HF_HUB_OFFLINE)")
        from huggingface_hub import HfApi

        token = token if token is not None else use_auth_token
        api = HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="maskformer-push-") as folder:
            self.save_pretrained(folder, **save_kwargs)
            try:
                repo = api.create_repo(repo_id, private=private, exist_ok=True)
                target = getattr(repo, "repo_id", repo_id)
                return api.upload_folder(
                    repo_id=target,
                    folder_path=folder,
                    commit_message=commit_message or f"Upload {type(self).__name__}",
                    revision=revision,
                    create_pr=create_pr,
                )
            except Exception as error:  # network, auth, permissions
                raise _hub_error(repo_id, "the upload", error) from None
