"""The ``maskformer serve`` subcommand: its flags and its handler (the shared pieces — model
loading, one-line messages — stay in :mod:`maskformer.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from maskformer.cli_types import (
    EXIT_OK,
    EXIT_USAGE,
    non_negative_int,
    positive_float,
    positive_int,
)


def port_number(text: str) -> int:
    """A TCP port for ``--port``: an integer in [0, 65535] (0 = any free port)."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}")
    return value


def add_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve a model: a web page at / and an HTTP API (needs maskformer[serve])",
        description="Load a model once and serve it: a page to try it on pictures, and an HTTP "
        "API (POST /v1/segment, GET /v1/model, GET /healthz; OpenAPI at /openapi.json). Requests "
        "queue for the model: one forward pass at a time.",
    )
    serve.add_argument("--model", required=True, help="local checkpoint folder or hub id")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost)")
    serve.add_argument(
        "--port", type=port_number, default=8000, help="0 picks a free port (0-65535)"
    )
    serve.add_argument("--task", choices=("semantic", "instance", "panoptic"), default="panoptic")
    serve.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    serve.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    serve.add_argument(
        "--max-batch",
        type=positive_int,
        default=1,
        help="most waiting requests run in one forward pass",
    )
    serve.add_argument(
        "--max-queue", type=positive_int, default=32, help="most requests waiting; more get 503"
    )
    serve.add_argument(
        "--max-upload-mb", type=positive_float, default=20.0, help="larger uploads: 413"
    )
    serve.add_argument(
        "--max-megapixels", type=positive_float, default=40.0, help="larger images: 422"
    )
    serve.add_argument(
        "--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info"
    )
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from maskformer import cli
    from maskformer.serve import MISSING_EXTRA, missing_serve_modules

    if missing_serve_modules():
        print(f"maskformer: error: {MISSING_EXTRA}", file=sys.stderr)
        return EXIT_USAGE
    from maskformer.serve.app import ServeLimits, create_app
    from maskformer.serve.server import LOCAL_HOSTS, bind_socket, make_server, server_url

    limits = ServeLimits(
        default_task=args.task,
        max_batch=args.max_batch,
        max_pending=args.max_queue,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
    )
    with bind_socket(args.host, args.port) as sock:  # before the (slow) model load
        model, processor = cli._load(args)
        server = make_server(create_app(model, processor, args.model, limits), args.log_level)
        if args.host not in LOCAL_HOSTS:
            print(
                f"maskformer: warning: listening on {args.host}, not only localhost",
                file=sys.stderr,
            )
        print(f"maskformer serve: {args.model} on {server_url(sock)}", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after stopping
            server.run(sockets=[sock])
    print("maskformer serve: stopped", file=sys.stderr)
    return EXIT_OK
