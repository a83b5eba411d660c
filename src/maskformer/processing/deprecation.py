"""One helper for every deprecated name of the image processor (keywords, a method, a class)."""

from __future__ import annotations

import warnings
from typing import Any

MISSING: Any = object()
"""Returned by :func:`deprecated` when the deprecated keyword was not passed."""


def deprecated(
    name: str, instead: str, kwargs: dict[str, Any] | None = None, stacklevel: int = 3
) -> Any:
    """Warn (``FutureWarning``) that ``name`` is deprecated and what to use ``instead``.

    With ``kwargs`` (a keyword-argument dict) this only happens when ``name`` is one of its keys:
    the key is removed and its value returned; :data:`MISSING` is returned when it is absent.
    ``stacklevel`` 3 points the warning at the caller of the function that calls this helper.
    """
    if kwargs is not None and name not in kwargs:
        return MISSING
    warnings.warn(f"`{name}` is deprecated; {instead}", FutureWarning, stacklevel=stacklevel)
    return None if kwargs is None else kwargs.pop(name)
