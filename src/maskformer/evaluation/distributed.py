"""Reductions across processes for the metrics: sums of state tensors and gathers of records.

Every helper is a no-op when ``torch.distributed`` is unavailable or not initialised, so metrics
work unchanged in a single process. When it is initialised, every rank must call the metric's
``compute()`` (the helpers are collective operations).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group is up (and so states must be combined across ranks)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _communication_device(tensor: torch.Tensor) -> torch.device:
    """NCCL only reduces CUDA tensors: CPU state travels through the current CUDA device."""
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks, as a new tensor on ``tensor``'s device.

    The input is left untouched, so a metric can go on accumulating after ``compute()``.
    Every rank must pass a tensor of the same shape and dtype.
    """
    if not is_distributed():
        return tensor.clone()
    device = _communication_device(tensor)
    reduced = tensor.detach().to(device, copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(tensor.device)


def all_gather_objects(obj: Any) -> list[Any]:
    """The list of ``obj`` from every rank, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
