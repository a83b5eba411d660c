"""Helpers of the `maskformer serve` tests: a tiny checkpoint and a live uvicorn server."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

COCO = SHARED_DATA / "coco_panoptic_sample"
PHOTO = COCO / "images" / "000000439180.jpg"

for _module in ("fastapi", "uvicorn", "multipart", "httpx"):
    pytest.importorskip(_module, reason="the serve extra (fastapi, uvicorn, ...) is not installed")


def save_tiny_checkpoint(folder: Path) -> Path:
    """A tiny random MaskFormer with the COCO panoptic classes that commits to a few of them
    (person, car: things; wall-other-merged: stuff), saved with a small-input processor."""
    import torch

    from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation
    from maskformer.presets import get_preset
    from maskformer.processing.image_processor import MaskFormerImageProcessor

    categories = json.loads((COCO / "panoptic_coco_categories.json").read_text())
    id2label = {index: c["name"] for index, c in enumerate(categories)}
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", id2label=id2label))
    with torch.no_grad():
        # Random weights that still commit: a few favoured classes, "no object" unlikely.
        model.class_predictor.bias[-1] = -4.0
        model.class_predictor.bias[[0, 2, 131]] += 6.0
    model.save_pretrained(folder)
    MaskFormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 160}).save_pretrained(
        folder
    )
    return folder


def load(folder: Path):
    from maskformer.engine.loading import load_model, load_processor

    return load_model(folder, "cpu"), load_processor(folder)


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yield its URL."""
    from maskformer.serve.server import bind_socket, make_server, server_url

    sock = bind_socket("127.0.0.1", 0)
    server = make_server(app, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = server_url(sock)
    try:
        wait_until_healthy(url, timeout=30)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


def wait_until_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:  # bounded by the deadline
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if json.load(response)["status"] == "ok":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer /healthz within {timeout} s")
        time.sleep(0.1)
