"""`maskformer serve` as a command: a real process on a free port, stopped by a signal; its
one-line errors (missing extra, address in use, missing model)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests._serve_support import save_tiny_checkpoint, wait_until_healthy
from tests.conftest import REPO_ROOT, requires_shared_data

httpx = pytest.importorskip("httpx")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "maskformer.cli", "serve", *args]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


@requires_shared_data
def test_serve_runs_answers_and_stops_on_a_signal(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "model")
    process = subprocess.Popen(
        _command(
            "--model",
            str(checkpoint),
            "--port",
            "0",
            "--task",
            "semantic",
            "--device",
            "cpu",
            "--max-batch",
            "2",
            "--log-level",
            "warning",
        ),
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    try:
        line = process.stderr.readline()  # printed once the model is loaded
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        url = match.group(1)
        wait_until_healthy(url, timeout=30)
        info = httpx.get(f"{url}/v1/model").json()
        assert info["default_task"] == "semantic" and info["max_batch"] == 2
        assert info["model"] == str(checkpoint)
        process.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop, exit status 0
        assert process.wait(timeout=30) == 0
        assert process.stderr.read().strip().endswith("maskformer serve: stopped")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stderr.close()


def test_address_in_use_is_one_line_and_exit_2(tmp_path, capsys):
    from maskformer.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        start = time.monotonic()
        code = main(["serve", "--model", str(tmp_path / "nowhere"), "--port", str(port)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error
    assert error.startswith(f"maskformer: error: cannot listen on 127.0.0.1:{port}:")
    assert time.monotonic() - start < 10  # refused before any model load


def test_missing_model_is_one_line_and_exit_2(tmp_path, capsys):
    from maskformer.cli import main

    code = main(["serve", "--model", str(tmp_path / "nowhere"), "--port", "0"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"maskformer: error: model folder {tmp_path / 'nowhere'} does not exist"
    )


def test_missing_extra_names_it(monkeypatch, capsys):
    import maskformer.serve
    from maskformer.cli import main

    monkeypatch.setattr(maskformer.serve, "missing_serve_modules", lambda: ["fastapi"])
    assert main(["serve", "--model", "anything"]) == 2
    assert capsys.readouterr().err.strip() == (
        "maskformer: error: maskformer serve needs the 'serve' extra: "
        "pip install 'maskformer[serve]'"
    )
