"""num_masks is averaged over processes: two gloo processes with different target counts."""

from __future__ import annotations

import datetime
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.distributed

TARGET_COUNTS = (5, 0)  # rank 1 has an image without targets: it must still train finitely


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    from maskformer.modeling.criterion import MaskFormerLoss
    from maskformer.modeling.matcher import MaskFormerHungarianMatcher

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        count = TARGET_COUNTS[rank]
        generator = torch.Generator().manual_seed(rank)
        loss = MaskFormerLoss(4, MaskFormerHungarianMatcher(1.0, 20.0, 1.0), {}, 0.1)
        class_labels = [torch.randint(0, 4, (count,), generator=generator)]
        mask_labels = [(torch.rand(count, 8, 8, generator=generator) > 0.5).float()]
        num_masks = loss.get_num_masks(class_labels, torch.device("cpu"))
        masks_logits = torch.randn(1, 6, 8, 8, generator=generator, requires_grad=True)
        class_logits = torch.randn(1, 6, 5, generator=generator, requires_grad=True)
        terms = loss(masks_logits, class_logits, mask_labels, class_labels)
        total = sum(terms.values())
        total.backward()
        torch.save(
            {
                "num_masks": num_masks,
                "finite": bool(torch.isfinite(total)),
                "mask_grad": masks_logits.grad is not None,
                "loss_mask": terms["loss_mask"].detach(),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_num_masks_is_the_mean_over_processes(tmp_path):
    mp.start_processes(
        _worker,
        args=(2, _free_port(), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    expected = sum(TARGET_COUNTS) / len(TARGET_COUNTS)
    for result in results:
        assert result["num_masks"].shape == ()
        assert result["num_masks"].item() == pytest.approx(expected)
        assert result["finite"] and result["mask_grad"]
    assert results[1]["loss_mask"].item() == 0.0
