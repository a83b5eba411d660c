"""Process-group plumbing for training on one process or many (``torchrun``).

* :func:`init_distributed` reads the variables ``torchrun`` sets (``RANK``, ``LOCAL_RANK``,
  ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and starts a process group: NCCL when the
  training device is CUDA, Gloo on CPU. Without those variables it returns a one-process context
  and starts nothing.
* :func:`wrap_model` puts the model in ``DistributedDataParallel`` when there are several processes.
* :class:`ShardedBatchSampler` deals out a per-epoch permutation of the data set, seeded by
  ``(seed, epoch)``, in global batches of ``batch_size * world_size`` samples; rank ``r`` takes the
  ``r``-th slice of each global batch, so the union of the ranks' batches is the batch a single
  process with ``batch_size * world_size`` would see. It can start at any batch of an epoch, which
  is what makes resuming exact.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

# Parameters the reference module layout holds but the forward pass never uses: the Swin
# backbone's final layer norm (MaskFormer reads each stage through ``hidden_states_norms``
# instead; hub checkpoints do not even store it). They never receive a gradient.
UNUSED_PARAMETER_PREFIXES: tuple[str, ...] = ("model.pixel_level_module.encoder.model.layernorm.",)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job and which device it trains on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None = None
    owns_process_group: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _resolve_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is None or str(device) == "auto":
        return (
            torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        )
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} was requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(
    device: str | torch.device | None = "auto", timeout_minutes: float = 30.0
) -> DistributedContext:
    """Join the ``torchrun`` process group if there is one, and pick this process's device.

    Args:
        device: ``"auto"`` (CUDA ``LOCAL_RANK`` when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``. Under ``torchrun`` a bare ``"cuda"`` becomes ``cuda:LOCAL_RANK``.
        timeout_minutes: collective timeout.

    Returns:
        A :class:`DistributedContext`. ``owns_process_group`` is True when this call started the
        group (and :func:`cleanup` should end it); a group the caller started is reused as is.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
        resolved = _resolve_device(device, local_rank)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        return DistributedContext(rank, local_rank, world_size, resolved, dist.get_backend())
    resolved = _resolve_device(device, local_rank)
    if world_size <= 1:
        return DistributedContext(0, 0, 1, resolved)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    return DistributedContext(rank, local_rank, world_size, resolved, backend, True)


def cleanup(context: DistributedContext) -> None:
    """End the process group if :func:`init_distributed` started it."""
    if context.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """The number of processes in the job (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks (a new tensor; the input is left alone)."""
    if get_world_size() == 1:
        return tensor.clone()
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / get_world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on at least one (e.g. "SIGTERM received")."""
    if get_world_size() == 1:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def freeze_unused_parameters(model: nn.Module) -> list[str]:
    """Turn off gradients for parameters the forward pass never reaches; return their names.

    DDP's reducer waits for a gradient from every parameter that requires one. The reference
    module layout keeps the Swin backbone's final ``layernorm`` although MaskFormer never applies
    it, so without this DDP would either stall the gradient buckets (and raise at the next step)
    or need ``find_unused_parameters=True``, which walks the autograd graph after every forward.
    Freezing the known-unused parameters keeps the cheap path and changes nothing else: they get
    no gradient in a one-process run either, and they stay in the state dict.
    """
    frozen = []
    for name, parameter in model.named_parameters():
        if name.startswith(UNUSED_PARAMETER_PREFIXES) and parameter.requires_grad:
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def needs_unused_parameter_search(model: nn.Module) -> bool:
    """Whether some parameters may go unused in a given step (so DDP must search the graph).

    That is the case with decoder LayerDrop (``decoder_layerdrop > 0`` skips whole decoder layers
    at random).
    """
    config = getattr(model, "config", None)
    decoder_config = getattr(config, "decoder_config", None)
    return float(getattr(decoder_config, "decoder_layerdrop", 0.0) or 0.0) > 0.0


def wrap_model(
    model: nn.Module, context: DistributedContext, find_unused_parameters: bool | None = None
) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when there are several processes.

    ``find_unused_parameters=None`` decides from the model (see
    :func:`needs_unused_parameter_search`); known-unused parameters must already be frozen with
    :func:`freeze_unused_parameters`.
    """
    if not context.is_distributed:
        return model
    if find_unused_parameters is None:
        find_unused_parameters = needs_unused_parameter_search(model)
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def epoch_permutation(dataset_size: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the data set in ``epoch``: a permutation seeded by ``(seed, epoch)`` only."""
    return np.random.default_rng([seed, epoch]).permutation(dataset_size)


class ShardedBatchSampler:
    """Yields this rank's batches (lists of data-set indices) for one epoch.

    Every rank computes the same permutation of ``range(dataset_size)`` from ``(seed, epoch)``.
    Global batch ``b`` is ``perm[b * G : (b + 1) * G]`` with ``G = batch_size * world_size``; rank
    ``r`` takes ``[r * batch_size : (r + 1) * batch_size]`` of it. The tail that does not fill a
    global batch is dropped, so every rank runs the same number of steps.

    Args:
        dataset_size: number of samples.
        batch_size: samples per rank and batch.
        rank, world_size: this process's place in the job.
        seed: data-order seed.
        shuffle: False keeps the data-set order (still sharded the same way).
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        global_batch = batch_size * world_size
        if dataset_size < global_batch:
            raise ValueError(
                f"the training set has {dataset_size} samples, fewer than one global batch "
                f"(batch_size {batch_size} x {world_size} processes = {global_batch})"
            )
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset_size // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to deal and the batch (of this epoch) to start at."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(
                f"start_batch {start_batch} is outside 0..{self.batches_per_epoch} for this epoch"
            )
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = epoch_permutation(self.dataset_size, self.seed, self.epoch)
        else:
            order = np.arange(self.dataset_size)
        global_batch = self.batch_size * self.world_size
        for batch in range(self.start_batch, self.batches_per_epoch):
            first = batch * global_batch + self.rank * self.batch_size
            yield [int(i) for i in order[first : first + self.batch_size]]
