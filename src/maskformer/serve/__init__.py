"""``maskformer serve``: one model behind a web page and an HTTP API (FastAPI + uvicorn).

The web framework is the optional extra ``maskformer[serve]``; this package imports it lazily, so
``import maskformer`` never needs it. Modules:

- :mod:`maskformer.serve.worker`: the queue in front of the model (one forward at a time,
  waiting requests with the same settings grouped into one batch);
- :mod:`maskformer.serve.results`: upload decoding and limits, and the JSON / PNG payload of one
  segmented image (built from :mod:`maskformer.engine.predict` and :mod:`maskformer.visualize`);
- :mod:`maskformer.serve.app`: the FastAPI application (routes, OpenAPI schema, error handling);
- ``static/``: the page at ``/`` (plain HTML, CSS and JavaScript; nothing from a CDN).
"""

from __future__ import annotations

import importlib.util

SERVE_MODULES = ("fastapi", "uvicorn", "multipart")
MISSING_EXTRA = "maskformer serve needs the 'serve' extra: pip install 'maskformer[serve]'"


def missing_serve_modules() -> list[str]:
    """Names of the web modules of the ``serve`` extra that cannot be imported here."""
    return [name for name in SERVE_MODULES if importlib.util.find_spec(name) is None]


def require_serve_extra() -> None:
    """Raise ``ModuleNotFoundError`` with one line naming the extra when a module is missing."""
    missing = missing_serve_modules()
    if missing:
        raise ModuleNotFoundError(f"{MISSING_EXTRA} (missing: {', '.join(missing)})")
