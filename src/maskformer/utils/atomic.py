"""Atomic file writing: every file the package writes appears whole or not at all.

The content goes to a temporary file in the destination folder (so the final rename never
crosses file systems), is flushed and fsynced, gets the permissions a plain ``open()`` would give
under the current umask (``mkstemp`` alone would leave it owner-only), and is renamed over the
final name with :func:`os.replace`. If writing fails for any reason the temporary file is removed
and an existing file under the final name is untouched: ``--overwrite`` never destroys an old
result before the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it to ``path``.

    Returns ``path``. The parent folder is created when missing. Raises ``OSError`` naming
    ``path`` when the folder cannot be written (read-only, a file in the way, disk full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
            raise OSError(f"cannot write {path}: {error.strerror or error}") from None
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: int | None = 2) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (serialised before the file is opened)."""
    return atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")


def atomic_save_image(image: Any, path: str | os.PathLike, format: str = "PNG", **kwargs) -> Path:
    """``PIL.Image.save`` to ``path`` atomically (the format is given, not read off the name)."""
    return atomic_write(path, lambda handle: image.save(handle, format=format, **kwargs))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))
