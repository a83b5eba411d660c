"""The deterministic sharded batch sampler behind exact resumes and DDP/one-process equality."""

from __future__ import annotations

import pytest

from maskformer.engine.distributed import ShardedBatchSampler


def _batches(size, batch, rank=0, world=1, seed=3, epoch=0, start=0):
    sampler = ShardedBatchSampler(size, batch, rank, world, seed=seed)
    sampler.set_epoch(epoch, start)
    return list(sampler)


def test_ranks_split_the_one_process_batches():
    joined = _batches(22, 4, world=1)
    rank0 = _batches(22, 2, rank=0, world=2)
    rank1 = _batches(22, 2, rank=1, world=2)
    assert len(joined) == len(rank0) == len(rank1) == 5  # 22 // 4, the tail is dropped
    for whole, first, second in zip(joined, rank0, rank1):
        assert whole == first + second


def test_an_epoch_is_a_permutation_seeded_by_seed_and_epoch():
    epoch0 = [i for b in _batches(12, 3) for i in b]
    assert sorted(epoch0) == list(range(12))
    assert epoch0 == [i for b in _batches(12, 3) for i in b]  # deterministic
    assert epoch0 != [i for b in _batches(12, 3, epoch=1) for i in b]
    assert epoch0 != [i for b in _batches(12, 3, seed=4) for i in b]


def test_start_batch_continues_the_same_epoch():
    full = _batches(16, 2, rank=1, world=2, epoch=5)
    assert _batches(16, 2, rank=1, world=2, epoch=5, start=3) == full[3:]
    sampler = ShardedBatchSampler(16, 2, 1, 2)
    sampler.set_epoch(0, 4)
    assert len(sampler) == 0 and list(sampler) == []


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedBatchSampler(3, 2, 0, 2)
    with pytest.raises(ValueError, match="rank 2 is outside world_size 2"):
        ShardedBatchSampler(8, 2, 2, 2)
    with pytest.raises(ValueError, match="start_batch 9"):
        ShardedBatchSampler(8, 2).set_epoch(0, 9)
