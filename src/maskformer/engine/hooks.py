"""Callbacks of the training loop: everything that is not the optimisation step itself.

A hook sees the :class:`~maskformer.engine.train.Trainer` at three points: ``before_train``,
``after_step`` (``trainer.step`` is the step just completed, ``trainer.terms`` its loss terms) and
``after_train`` (a normal end: ``max_steps`` or SIGTERM); ``close`` runs in every case. Hooks
that keep state across a resume return it from ``state_dict`` (stored in the checkpoint).
Hooks run in list order; ``trainer.storage`` carries what one step's hooks hand to the next ones
(the log record, the evaluation figures) and is emptied before every step.

Every hook that calls a collective (``any_rank``, ``all_reduce_mean``, a checkpoint) does so on
every rank at the same steps, so they stay in step under ``torchrun``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from maskformer.engine import checkpointing
from maskformer.engine.distributed import all_reduce_mean, any_rank, barrier

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from maskformer.engine.arguments import TrainingArguments
    from maskformer.engine.distributed import DistributedContext
    from maskformer.engine.train import Trainer


class Hook:
    """Base class: every method does nothing."""

    name = "hook"

    def before_train(self, trainer: Trainer) -> None:
        pass

    def after_step(self, trainer: Trainer) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass

    def close(self) -> None:
        """Release resources (files, signal handlers); runs after errors too."""

    def wants_stop(self) -> bool:
        """Polled once before every step: True ends the run after a checkpoint."""
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def say(trainer: Trainer, message: str) -> None:
    """One line on stderr from rank 0, above the progress bar."""
    if trainer.context.is_main:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line (a whole line per write, flushed); an ``OSError`` names ``path``."""
    try:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}") from None


def is_due(step: int, every: int, max_steps: int) -> bool:
    """Every ``every`` steps and at the last step (``every = 0``: never)."""
    return every > 0 and (step % every == 0 or step == max_steps)


class NonFiniteGuard(Hook):
    """Stops the run with :class:`FloatingPointError` when a loss term became NaN or infinite.

    The check costs a device sync and a collective, so it runs only at steps where something is
    written (a log record, a checkpoint, an evaluation): nothing computed from non-finite
    weights is ever saved. Which step went wrong first and which terms are recorded on the
    device every step without a sync. (With fp16 loss scaling the GradScaler skips such steps.)
    """

    name = "nonfinite"

    def __init__(self, intervals: tuple[int, ...]) -> None:
        self.intervals = intervals
        self.first_step: torch.Tensor | None = None
        self.first_terms: torch.Tensor | None = None
        self.keys: list[str] = []

    def after_step(self, trainer: Trainer) -> None:
        if trainer.args.amp == "fp16":
            return
        if self.first_step is None:
            self.keys = sorted(k for k in trainer.terms if k.startswith("loss"))
            self.first_step = torch.full((), -1, dtype=torch.int64, device=trainer.device)
            self.first_terms = torch.zeros(len(self.keys), dtype=torch.bool, device=trainer.device)
        bad = torch.stack([~torch.isfinite(trainer.terms[k]) for k in self.keys])
        newly = (self.first_step < 0) & bad.any()
        self.first_step = torch.where(newly, trainer.step, self.first_step)
        self.first_terms = torch.where(newly, bad, self.first_terms)
        step, last = trainer.step, trainer.args.max_steps
        if not any(is_due(step, every, last) for every in self.intervals):
            return
        if any_rank(bool(self.first_step >= 0), trainer.device):
            terms = [k for k, b in zip(self.keys, self.first_terms.tolist()) if b]
            where = (
                f"at step {int(self.first_step)} ({', '.join(terms)})"
                if terms
                else f"on another process before step {step}"
            )
            latest = checkpointing.find_latest_checkpoint(trainer.output_dir)
            raise FloatingPointError(
                f"the training loss became NaN or infinite {where}; the last good checkpoint is "
                f"{latest if latest is not None else 'none (none was written)'}"
            )


class LogHook(Hook):
    """Progress bar every step; every ``log_every`` steps a JSONL record of the interval's mean
    loss terms (over steps and processes), learning rates and throughput."""

    name = "log"

    def before_train(self, trainer: Trainer) -> None:
        from tqdm.auto import tqdm

        self.progress = tqdm(
            total=trainer.args.max_steps,
            initial=trainer.step,
            disable=not (trainer.context.is_main and trainer.args.progress),
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def after_step(self, trainer: Trainer) -> None:
        self.progress.update(1)
        for key, value in trainer.terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach()
        self.steps += 1
        args = trainer.args
        if not is_due(trainer.step, args.log_every, args.max_steps):
            return
        keys = sorted(self.sums)
        sums = torch.stack([torch.as_tensor(self.sums[k]).float() for k in keys])
        means = all_reduce_mean(sums / self.steps).tolist()
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        images = args.batch_size * args.gradient_accumulation_steps
        images *= trainer.context.world_size * self.steps
        record: dict[str, Any] = {"step": trainer.step, "epoch": trainer.stream.epoch}
        record.update(zip(keys, means))
        for group, lr in zip(trainer.optimizer.param_groups, trainer.scheduler.get_last_lr()):
            key = "lr_backbone" if group.get("name", "").startswith("backbone") else "lr"
            record.setdefault(key, lr)
        record["images_per_s"] = round(images / elapsed, 3)
        record["steps_per_s"] = round(self.steps / elapsed, 4)
        record["time"] = time.time()
        if trainer.context.is_main:
            append_jsonl(trainer.log_file, record)
        trainer.storage["log"] = record
        self.progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        self._reset()

    def close(self) -> None:
        progress = getattr(self, "progress", None)
        if progress is not None:
            progress.close()


class CheckpointHook(Hook):
    """A checkpoint every ``save_every`` steps and at the end (``max_steps`` or SIGTERM)."""

    name = "checkpoint"

    def after_step(self, trainer: Trainer) -> None:
        if is_due(trainer.step, trainer.args.save_every, trainer.args.max_steps):
            path = trainer.save_checkpoint()
            say(trainer, f"saved checkpoint at step {trainer.step}: {path}")

    def after_train(self, trainer: Trainer) -> None:
        if trainer.last_saved_step != trainer.step:
            trainer.save_checkpoint()


class StopFlag:
    """Set by SIGTERM; :class:`SigtermHook` polls it between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


class SigtermHook(Hook):
    """SIGTERM (a batch scheduler's notice) ends the run after the current step; the processes
    agree on the step (a collective), the checkpoint hook then writes the last checkpoint."""

    name = "sigterm"

    def __init__(self, flag: StopFlag, device: torch.device) -> None:
        self.flag = flag
        self.device = device

    def before_train(self, trainer: Trainer) -> None:
        self.flag.install()

    def wants_stop(self) -> bool:
        return any_rank(self.flag.requested, self.device)

    def close(self) -> None:
        self.flag.uninstall()


class FinalModelHook(Hook):
    """At ``max_steps``: the model in Hugging Face format in ``OUTPUT/final`` (rank 0)."""

    name = "final"

    def after_train(self, trainer: Trainer) -> None:
        if trainer.step < trainer.args.max_steps:
            return
        if trainer.context.is_main:
            final = checkpointing.save_final_model(trainer.module, trainer.output_dir)
            say(trainer, f"saved the final model to {final}")
        barrier()


def default_hooks(
    args: TrainingArguments,
    context: DistributedContext,
    stop_flag: StopFlag,
    eval_dataset: Dataset | None,
    train_dataset: Dataset,
    extra_hooks: list[Hook] | None = None,
) -> list[Hook]:
    """The loop's hooks in order: guard, log, evaluation, TensorBoard, ``extra_hooks``,
    checkpoint (which stores every hook's state), final model, curves, SIGTERM."""
    from maskformer.engine.curves import CurvesHook
    from maskformer.engine.data_stream import build_dataset

    hooks: list[Hook] = [
        NonFiniteGuard((args.log_every, args.save_every, args.eval_every)),
        LogHook(),
    ]
    if args.eval_every > 0:
        from maskformer.engine.evaluation_hook import EvaluationHook

        if eval_dataset is None:
            eval_dataset = build_dataset(args, split="val")
        hooks.append(EvaluationHook(eval_dataset, args, train_dataset))
    if args.report_to == "tensorboard":
        from maskformer.engine.tensorboard import TensorBoardHook

        hooks.append(TensorBoardHook(args.output_dir, context.is_main))
    hooks += list(extra_hooks or [])
    hooks += [
        CheckpointHook(),
        FinalModelHook(),
        CurvesHook(),
        SigtermHook(stop_flag, context.device),
    ]
    return hooks
