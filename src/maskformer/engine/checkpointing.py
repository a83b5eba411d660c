"""Training checkpoints: atomic writes, discovery of the latest one, pruning, RNG state.

A checkpoint is one file, ``<output_dir>/checkpoints/step-<step:08d>.pt``, holding everything an
exact resume needs: model, optimizer, LR scheduler and GradScaler state, the random-number states
(Python, NumPy, torch CPU, every CUDA device), the step, the epoch and the batch position inside
it, and the training arguments. Everything in it is a tensor or a plain Python value, so it loads
with ``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code.

Writes are atomic (:mod:`maskformer.utils.atomic`): the file is written under a temporary name in
the same folder, flushed and fsynced, then renamed over the final name with :func:`os.replace`,
with the permissions the umask gives. A crash, a full disk or an error in the middle of a save
leaves the previous checkpoints as they were and no half-written file under a checkpoint name.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from maskformer.engine.distributed import get_world_size
from maskformer.utils.atomic import _fsync_directory, _umask, atomic_write, atomic_write_json

CHECKPOINT_DIRNAME = "checkpoints"
FINAL_DIRNAME = "final"
BEST_DIRNAME = "best"
CHECKPOINT_FORMAT_VERSION = 1
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINT_DIRNAME


def checkpoint_path(output_dir: str | os.PathLike, step: int) -> Path:
    """``<output_dir>/checkpoints/step-<step:08d>.pt``."""
    return checkpoint_dir(output_dir) / f"step-{step:08d}.pt"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``output_dir``, oldest first.

    Temporary files of an interrupted save are not checkpoints and are skipped.
    """
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """Path of the checkpoint with the highest step in ``output_dir``, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


class _WriteErrorRecorder:
    """A binary file wrapper that remembers the ``OSError`` of a failing ``write``.

    ``torch.save`` turns an error of the file it writes into a ``RuntimeError`` ("unexpected
    pos ..."); with the original error at hand a full disk is reported as what it is.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:  # tell, seek, flush, ...: the file's own
        return getattr(self.handle, name)


def _torch_save(obj: Any, handle: IO[bytes]) -> None:
    recorder = _WriteErrorRecorder(handle)
    try:
        torch.save(obj, recorder)
    except RuntimeError:
        if recorder.error is not None:
            raise recorder.error from None
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; a failing write (a full disk) is an
    ``OSError`` naming ``path``, and the file that was there stays as it was."""
    return atomic_write(path, lambda handle: _torch_save(obj, handle))


# --------------------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch CPU and CUDA random states, as tensors and plain values."""
    version, python_state, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global state)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(python_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's :func:`capture_rng_state`, in rank order (a collective under torchrun)."""
    state = capture_rng_state()
    world_size = get_world_size()
    if world_size == 1:
        return [state]
    states: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(states, state)
    return states


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (the global state)
        {
            "bit_generator": numpy["bit_generator"],
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) != torch.cuda.device_count():
            warnings.warn(
                f"the checkpoint holds {len(cuda_states)} CUDA RNG states but this machine has "
                f"{torch.cuda.device_count()} devices; CUDA random numbers will not resume exactly",
                stacklevel=2,
            )
        for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


# ------------------------------------------------------------------------------ checkpoints


def build_checkpoint(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    step: int,
    epoch: int,
    batch_in_epoch: int,
    world_size: int,
    training_args: dict[str, Any],
) -> dict[str, Any]:
    """Everything an exact resume needs, as a ``weights_only``-loadable dict.

    ``batch_in_epoch`` counts the (per-rank) batches of ``epoch`` already consumed, gradient
    accumulation micro-batches included.
    """
    config = getattr(model, "config", None)
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        # The architecture, so that resuming with another one can say what differs.
        "model_config": _plain(config.to_dict()) if hasattr(config, "to_dict") else None,
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "world_size": world_size,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": capture_rng_state(),
        "training_args": training_args,
    }


def _plain(value: Any) -> Any:
    """``value`` with only the types ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def save_checkpoint(checkpoint: dict[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write ``checkpoint`` atomically as ``checkpoints/step-<step>.pt`` and return its path."""
    return atomic_torch_save(checkpoint, checkpoint_path(output_dir, checkpoint["step"]))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"checkpoint {str(path)!r} could not be read: {error}") from error
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise ValueError(f"{str(path)!r} is not a maskformer training checkpoint")
    if checkpoint["format_version"] > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format version {checkpoint['format_version']}, newer "
            f"than this maskformer understands ({CHECKPOINT_FORMAT_VERSION})"
        )
    return checkpoint


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints (``keep_last <= 0`` keeps all)."""
    if keep_last <= 0:
        return []
    removed = []
    for _, path in list_checkpoints(output_dir)[:-keep_last]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def save_model_folder(
    model: torch.nn.Module,
    output_dir: str | os.PathLike,
    name: str = FINAL_DIRNAME,
    extra_json: dict[str, Any] | None = None,
) -> Path:
    """``model.save_pretrained(<output_dir>/<name>)``, replacing an older folder atomically.

    ``extra_json`` maps file names to JSON payloads written into the folder with the model.

    The model is written into a temporary sibling folder first (given the permissions the
    umask gives, not ``mkdtemp``'s owner-only ones); only a complete folder is renamed into
    place, so an error leaves the previous folder untouched.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=output_dir))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        model.save_pretrained(staging)
        for filename, payload in (extra_json or {}).items():
            atomic_write_json(staging / filename, payload)
        for written in staging.rglob("*"):  # whatever save_pretrained's own writer chose
            os.chmod(written, (0o777 if written.is_dir() else 0o666) & ~_umask())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = output_dir / f".{name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, previous)
    try:
        os.replace(staging, target)
    except BaseException:
        if previous.exists():
            os.replace(previous, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    _fsync_directory(output_dir)
    return target


def save_final_model(model: torch.nn.Module, output_dir: str | os.PathLike) -> Path:
    """``model.save_pretrained(<output_dir>/final)`` (see :func:`save_model_folder`)."""
    return save_model_folder(model, output_dir, FINAL_DIRNAME)
