"""A switch to build models without their random weight init (when a checkpoint overwrites it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_init_enabled: ContextVar[bool] = ContextVar("maskformer_init_enabled", default=True)


def init_enabled() -> bool:
    """False inside `no_init_weights()`."""
    return _init_enabled.get()


@contextmanager
def no_init_weights() -> Iterator[None]:
    """Models built inside this block skip their custom random initialisation."""
    token = _init_enabled.set(False)
    try:
        yield
    finally:
        _init_enabled.reset(token)
