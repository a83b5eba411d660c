"""Running the app: bind the listening socket ourselves (a clear error when the address is taken,
``--port 0`` picks a free port), then hand it to one uvicorn server in this process."""

from __future__ import annotations

import socket
from typing import Any

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` has a colon).

    Raises:
        ValueError: the port is out of range, or the address cannot be used (taken, not this
            machine's), with the address and the reason.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except (OSError, OverflowError) as error:
        sock.close()
        reason = getattr(error, "strerror", None) or str(error)
        raise ValueError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def server_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app: Any, log_level: str = "info") -> Any:
    """A ``uvicorn.Server`` for ``app`` (one process; run it with ``.run(sockets=[sock])``, stop
    it with ``.should_exit = True``)."""
    import uvicorn

    config = uvicorn.Config(
        app, log_level=log_level, timeout_graceful_shutdown=10, server_header=False
    )
    return uvicorn.Server(config)
