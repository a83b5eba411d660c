"""Exact resume: N steps straight equal N/2 steps, a stop, a resume and N/2 more, bit for bit."""

from __future__ import annotations

import pytest
import torch
from _train_support import assert_state_dicts_identical, quick_args, synthetic_dataset

from maskformer.engine import checkpointing
from maskformer.engine import train as train_module
from maskformer.engine.train import train


class _StopAfter(train_module._StopFlag):
    """Acts as if SIGTERM arrived once ``steps`` optimisation steps have run."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.polls_left = steps

    @property
    def requested(self) -> bool:  # polled once before each step
        self.polls_left -= 1
        return self.polls_left < 0

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


@pytest.mark.parametrize("num_workers", [0, 1])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, monkeypatch, num_workers):
    # 8 images, batch 2: 4 batches an epoch, so the 7 steps cross two epoch boundaries and the
    # stop falls in the middle of an epoch. Augmentations (random scale, crop, flip, colour
    # jitter) and dropout (0.1 in the tiny decoder) are on; the ResNet's BatchNorm running
    # statistics are part of the compared state.
    dataset = synthetic_dataset(8, 32, augment=True)
    settings = {"max_steps": 7, "num_workers": num_workers, "warmup_steps": 2}

    straight = train(quick_args(tmp_path / "straight", **settings), train_dataset=dataset)
    assert straight.step == 7 and not straight.interrupted

    monkeypatch.setattr(train_module, "_StopFlag", lambda: _StopAfter(3))
    first_half = train(quick_args(tmp_path / "resumed", **settings), train_dataset=dataset)
    assert first_half.interrupted and first_half.step == 3
    assert first_half.checkpoint.name == "step-00000003.pt"
    assert first_half.final_model_dir is None
    monkeypatch.undo()

    second_half = train(
        quick_args(tmp_path / "resumed", resume="auto", **settings), train_dataset=dataset
    )
    assert second_half.step == 7 and not second_half.interrupted

    a = checkpointing.load_checkpoint(straight.checkpoint)
    b = checkpointing.load_checkpoint(second_half.checkpoint)
    assert_state_dicts_identical(a["model"], b["model"])
    assert_state_dicts_identical(a["optimizer"], b["optimizer"])
    assert_state_dicts_identical(a["scheduler"], b["scheduler"])
    assert (a["epoch"], a["batch_in_epoch"]) == (b["epoch"], b["batch_in_epoch"]) == (1, 3)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # The logged losses of steps 4..7 match too.
    assert straight.losses == second_half.losses


def test_resume_from_an_explicit_file_and_a_longer_schedule(tmp_path):
    dataset = synthetic_dataset(8, 32)
    first = train(quick_args(tmp_path / "run", max_steps=2, save_every=1), train_dataset=dataset)
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path / "run")] == [1, 2]
    resumed = train(
        quick_args(tmp_path / "run", max_steps=4, resume=str(first.checkpoint)),
        train_dataset=dataset,
    )
    assert resumed.step == 4
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        train(
            quick_args(tmp_path / "run", resume=str(tmp_path / "missing.pt")), train_dataset=dataset
        )


def test_a_fresh_run_refuses_an_output_dir_with_checkpoints(tmp_path):
    dataset = synthetic_dataset(8, 32)
    train(quick_args(tmp_path, max_steps=1), train_dataset=dataset)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(ValueError, match="already holds checkpoints.*resume"):
        train(quick_args(tmp_path, max_steps=2), train_dataset=dataset)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    # resume="auto" in an empty folder starts fresh.
    result = train(
        quick_args(tmp_path / "empty", max_steps=1, resume="auto"), train_dataset=dataset
    )
    assert result.step == 1
