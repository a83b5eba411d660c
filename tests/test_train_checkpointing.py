"""Atomic checkpoint files, discovery of the newest, pruning, RNG capture, the final model."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from maskformer import MaskFormerForInstanceSegmentation
from maskformer.engine import checkpointing
from maskformer.presets import get_preset


def _checkpoint(step: int, value: float) -> dict:
    return {"format_version": 1, "step": step, "weights": torch.full((3,), value)}


def test_save_and_discover_latest(tmp_path):
    assert checkpointing.find_latest_checkpoint(tmp_path) is None
    for step in (2, 10, 7):
        checkpointing.save_checkpoint(_checkpoint(step, step), tmp_path)
    # A leftover temporary file of an interrupted save is not a checkpoint.
    (tmp_path / "checkpoints" / ".step-00000011.pt.abc.tmp").write_bytes(b"partial")
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path)] == [2, 7, 10]
    latest = checkpointing.find_latest_checkpoint(tmp_path)
    assert latest.name == "step-00000010.pt"
    assert torch.equal(checkpointing.load_checkpoint(latest)["weights"], torch.full((3,), 10.0))


def test_failure_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpointing.save_checkpoint(_checkpoint(1, 1.0), tmp_path)
    checkpointing.save_checkpoint(_checkpoint(2, 2.0), tmp_path)
    real_save = torch.save

    def save_half_then_fail(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(handle.tell() // 2)  # half a file on disk ...
        raise OSError("No space left on device")  # ... and then the disk is full

    monkeypatch.setattr(checkpointing.torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        checkpointing.save_checkpoint(_checkpoint(3, 3.0), tmp_path)  # a new name
    with pytest.raises(OSError, match="No space left"):
        checkpointing.save_checkpoint(_checkpoint(2, 99.0), tmp_path)  # over an existing one
    monkeypatch.setattr(checkpointing.torch, "save", real_save)

    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["step-00000001.pt", "step-00000002.pt"]  # no temporary files left
    latest = checkpointing.find_latest_checkpoint(tmp_path)
    assert latest.name == "step-00000002.pt"
    assert torch.equal(checkpointing.load_checkpoint(latest)["weights"], torch.full((3,), 2.0))


def test_prune_keeps_the_newest(tmp_path):
    for step in range(1, 6):
        checkpointing.save_checkpoint(_checkpoint(step, step), tmp_path)
    removed = checkpointing.prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in removed] == [f"step-0000000{i}.pt" for i in (1, 2, 3)]
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path)] == [4, 5]
    assert checkpointing.prune_checkpoints(tmp_path, keep_last=0) == []


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpointing.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        checkpointing.load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a maskformer training checkpoint"):
        checkpointing.load_checkpoint(tmp_path / "other.pt")


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002
    torch.manual_seed(3)
    state = checkpointing.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(2))  # noqa: NPY002
    checkpointing.atomic_torch_save({"rng": state}, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]
    random.seed(9)
    np.random.seed(9)  # noqa: NPY002
    torch.manual_seed(9)
    checkpointing.restore_rng_state(loaded)
    again = (random.random(), np.random.rand(), torch.rand(2))  # noqa: NPY002
    assert again[0] == expected[0] and again[1] == expected[1]
    assert torch.equal(again[2], expected[2])


def test_final_model_replaces_the_previous_one_only_when_complete(tmp_path, monkeypatch):
    model = MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", num_labels=2))
    final = checkpointing.save_final_model(model, tmp_path)
    assert (final / "config.json").is_file()
    before = sorted(p.name for p in final.iterdir())

    def broken_save(directory, *args, **kwargs):
        (directory / "config.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpointing.save_final_model(model, tmp_path)
    assert sorted(p.name for p in final.iterdir()) == before
    assert (final / "config.json").read_text() != "{"
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    reloaded = MaskFormerForInstanceSegmentation.from_pretrained(final)
    assert torch.equal(reloaded.class_predictor.weight, model.class_predictor.weight)
