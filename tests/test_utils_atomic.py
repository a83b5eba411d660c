"""`maskformer.utils.atomic`: whole files or none, umask permissions, old file kept on failure,
errors that name the path."""

from __future__ import annotations

import errno
import json
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.utils import atomic
from maskformer.utils.atomic import (
    atomic_save_image,
    atomic_torch_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


def _leftovers(folder):
    """Temporary files the writer may have left (they start with '.' and end in '.tmp')."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_permissions_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    for name, write in (
        ("a.bin", lambda p: atomic_write_bytes(p, b"x")),
        ("b.json", lambda p: atomic_write_json(p, {"a": 1})),
        ("c.png", lambda p: atomic_save_image(Image.new("RGB", (2, 2)), p)),
        ("d.pt", lambda p: atomic_torch_save({"w": torch.zeros(1)}, p)),
    ):
        path = write(tmp_path / name)
        # What a plain open() would give: 0666 less the umask (mkstemp alone gives 0600).
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, name


def test_contents_round_trip_and_replace(tmp_path):
    target = tmp_path / "sub" / "deeper" / "f.json"  # missing parents are created
    atomic_write_json(target, {"b": [1, 2]})
    assert json.loads(target.read_text()) == {"b": [1, 2]}
    atomic_write_text(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    picture = tmp_path / "p.png"
    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    atomic_save_image(Image.fromarray(pixels), picture)
    assert np.array_equal(np.asarray(Image.open(picture)), pixels)
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "w.pt")
    assert torch.equal(torch.load(tmp_path / "w.pt", weights_only=True)["w"], torch.arange(3))
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub" / "deeper") == []


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("encoder crashed"),
        KeyboardInterrupt(),
    ],
    ids=["disk-full", "error", "interrupt"],
)
def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, failure):
    target = tmp_path / "result.png"
    target.write_bytes(b"old result")

    def half_then_fail(handle):
        handle.write(b"half of the new")
        raise failure

    with pytest.raises(type(failure)) as raised:
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old result"
    assert _leftovers(tmp_path) == []
    if isinstance(failure, OSError):  # re-raised naming the file and the cause
        assert str(target) in str(raised.value) and "No space left" in str(raised.value)


def test_a_failing_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "figures.json"
    target.write_text("{}")

    def refuse(source, destination):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="figures.json.*Permission denied"):
        atomic_write_json(target, {"new": 1})
    assert target.read_text() == "{}" and _leftovers(tmp_path) == []


def test_unwritable_folder_is_an_oserror_naming_the_path(tmp_path, monkeypatch):
    # Runs as any user: the temporary file cannot be created, as in a read-only folder.
    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    target = tmp_path / "out" / "label.png"
    with pytest.raises(OSError, match="label.png.*Permission denied"):
        atomic_write_bytes(target, b"x")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_read_only_folder_is_an_oserror_naming_the_path(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "old.json").write_text("{}")
    folder.chmod(0o555)
    try:
        with pytest.raises(OSError, match="old.json"):
            atomic_write_json(folder / "old.json", {"new": 1})
        assert (folder / "old.json").read_text() == "{}"
    finally:
        folder.chmod(0o755)


def test_a_file_in_place_of_the_folder_is_an_oserror_naming_the_path(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("I am a file")
    with pytest.raises(OSError, match=r"out[/\\]x\.json"):
        atomic_write_json(blocker / "x.json", {})
    assert blocker.read_text() == "I am a file"
