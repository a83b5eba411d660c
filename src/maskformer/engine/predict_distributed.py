"""``maskformer predict`` under ``torchrun``: one Gloo process group for coordination only
(models never exchange tensors; every process runs its own copy on its own shard of images).

The group is started only when ``WORLD_SIZE > 1``. Rank 0 holds the output folder's lock for
the whole run, decides what is to be done (resume, overwrite checks) and tells the others; the
others write only after hearing from it, and only their own images and journal.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch.distributed as dist

# A rank waits at the final barrier for the slowest one; torchrun ends the job when one fails.
TIMEOUT = datetime.timedelta(hours=12)
_ERRORS = {e.__name__: e for e in (ValueError, TypeError, OSError, FileExistsError)}
_ERRORS.update({e.__name__: e for e in (FileNotFoundError, NotADirectoryError)})


def start_process_group() -> bool:
    """Join the ``torchrun`` job (Gloo) when ``WORLD_SIZE > 1`` and no group exists yet; True
    when this call started one (end it with :func:`end_process_group`)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return False
    dist.init_process_group(backend="gloo", init_method="env://", timeout=TIMEOUT)
    return True


def end_process_group() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def processes_per_machine() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def share_from_rank0(value: Any, error: BaseException | None = None) -> Any:
    """Rank 0's ``value`` on every rank; when rank 0 passes ``error``, every rank raises it (the
    same type and message)."""
    if not is_distributed():
        if error is not None:
            raise error
        return value
    payload = [None if error is None else (type(error).__name__, str(error)), value]
    dist.broadcast_object_list(payload, src=0)
    if payload[0] is not None:
        if error is not None:
            raise error
        name, message = payload[0]
        copy = _ERRORS.get(name, RuntimeError)(message)
        copy.from_rank0 = True  # type: ignore[attr-defined] - rank 0 reports it
        raise copy
    return payload[1]


def gather_to_all(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (after all ranks got here: a barrier)."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
