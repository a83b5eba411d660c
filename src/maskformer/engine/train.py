"""Fine-tuning and training MaskFormer: one process or many (``torchrun``), resumable exactly.

Python::

    from maskformer.engine.train import TrainingArguments, train

    args = TrainingArguments(output_dir="runs/ade", model="facebook/maskformer-swin-tiny-ade",
                             data_format="ade20k", data_dir="ADEChallengeData2016/training",
                             max_steps=20_000, batch_size=4)
    result = train(args)                         # or train(args, train_dataset=my_dataset)

Command line: ``maskformer train --output-dir runs/ade --model ... --data-format ade20k
--data-dir ...`` (flags generated from :class:`TrainingArguments`); several processes:
``torchrun --nproc_per_node 4 -m maskformer.cli train ...``.

The pieces: settings and flags in :mod:`~maskformer.engine.arguments`, parameter groups and the
schedule in :mod:`~maskformer.engine.optim`, data in :mod:`~maskformer.engine.data_stream`, and
everything around the step (log, non-finite guard, evaluation, checkpoints, SIGTERM, TensorBoard,
curves) as hooks (:mod:`~maskformer.engine.hooks`). This module holds the :class:`Trainer`: set-up,
resume and the loop, whose step does:

1. Read ``gradient_accumulation_steps`` batches of ``batch_size`` samples per process (a
   permutation seeded by ``(seed, epoch)``, sharded over processes; augmentations seeded by
   ``(seed, epoch, index)`` inside the data set).
2. Forward the model without labels (under autocast if ``amp`` is set), then compute the loss
   once with ``model.get_loss_dict`` / ``model.get_loss`` in float32. ``num_masks`` is averaged
   over processes inside the loss, and DDP averages gradients, so the mask terms equal those of
   one process on the joined batch.
3. Clip the gradient norm of the whole model (``max_grad_norm``), take an AdamW step, advance the
   poly schedule.

SIGTERM makes the loop finish the current step, write a checkpoint, print ``saved checkpoint at
step N`` and return normally (exit code 0); ``resume="auto"`` picks the run up again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from maskformer.engine import checkpointing
from maskformer.engine.arguments import (
    AMP_MODES,
    DATA_FORMATS,
    TrainingArguments,
    TrainResult,
    add_train_arguments,
    run_train_from_args,
    training_arguments_from_namespace,
)
from maskformer.engine.data_stream import (
    BatchStream,
    DatasetItemError,
    build_dataset,
    check_validation_flags,
    to_device,
)
from maskformer.engine.distributed import (
    DistributedContext,
    ShardedBatchSampler,
    all_reduce_mean,
    barrier,
    cleanup,
    freeze_unused_parameters,
    init_distributed,
    wrap_model,
)
from maskformer.engine.hooks import Hook, default_hooks, say
from maskformer.engine.hooks import StopFlag as _StopFlag
from maskformer.engine.model_setup import autocast, build_model, check_label_sets, seed_everything
from maskformer.engine.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups
from maskformer.engine.resume import describe_model_mismatch, resolve_resume, resume_position
from maskformer.utils.atomic import atomic_write_json

__all__ = [
    "AMP_MODES",
    "DATA_FORMATS",
    "DatasetItemError",
    "Hook",
    "Trainer",
    "TrainResult",
    "TrainingArguments",
    "add_train_arguments",
    "build_dataset",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "parameter_groups",
    "run_train_from_args",
    "train",
    "training_arguments_from_namespace",
]

LOG_FILENAME = "log.jsonl"
ARGS_FILENAME = "training_args.json"


def train(
    args: TrainingArguments,
    model: nn.Module | None = None,
    train_dataset: Dataset | None = None,
    eval_dataset: Dataset | None = None,
    hooks: list[Hook] | None = None,
) -> TrainResult:
    """Train (or fine-tune) a MaskFormer; see the module docstring for what a step does.

    Args:
        args: the run's settings.
        model: a ``MaskFormerForInstanceSegmentation`` to train; default :func:`build_model`.
        train_dataset: a map-style data set of training-sample dicts; default
            :func:`build_dataset` from ``args``.
        eval_dataset: the validation set (training-sample dicts, no augmentation) used every
            ``args.eval_every`` steps; default the ``val_*`` paths of ``args``.
        hooks: more :class:`~maskformer.engine.hooks.Hook` objects, run after the built-in
            log, evaluation and TensorBoard hooks and before the checkpoint.

    Raises:
        FileNotFoundError: a data path, the model folder or the checkpoint to resume is missing.
        ValueError: inconsistent settings, a checkpoint of another architecture, or
            ``output_dir`` already holds checkpoints of another run.
        DatasetItemError: a sample could not be read or holds an unknown class (the message
            names it). Checkpoints already written are left as they are.
        FloatingPointError: the loss became NaN or infinite (without fp16 loss scaling).
        OSError: a checkpoint could not be written (a full disk); the older ones stay intact.
    """
    context = init_distributed(args.device)
    try:
        trainer = Trainer(args, model, train_dataset, context, _StopFlag(), eval_dataset, hooks)
        return trainer.run()
    finally:
        cleanup(context)


class Trainer:
    """One call of :func:`train`: set-up, optional resume, the step loop and its hooks."""

    def __init__(
        self,
        args: TrainingArguments,
        model: nn.Module | None,
        train_dataset: Dataset | None,
        context: DistributedContext,
        stop_flag: _StopFlag,
        eval_dataset: Dataset | None = None,
        extra_hooks: list[Hook] | None = None,
    ) -> None:
        self.args = args
        self.context = context
        self.device = context.device
        self.output_dir = Path(args.output_dir)
        if args.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device (GradScaler); use amp='bf16' on CPU")
        check_validation_flags(args)
        self.resume_path = resolve_resume(args)
        self._refuse_foreign_checkpoints()

        # Everything that can fail on bad input happens before anything is written.
        seed_everything(args.seed)
        dataset = train_dataset if train_dataset is not None else build_dataset(args)
        if len(dataset) == 0:
            raise ValueError("the training set is empty")
        model = model if model is not None else build_model(args, dataset)
        check_label_sets(model, dataset)
        self.num_labels = int(model.config.num_labels)
        model.to(self.device)
        self.frozen = freeze_unused_parameters(model)
        self.trainable_parameters = [p for p in model.parameters() if p.requires_grad]
        model.train()
        self.module = model
        self.optimizer = build_optimizer(model, args)
        self.scheduler = build_scheduler(self.optimizer, args)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.amp == "fp16")
        self.sampler = ShardedBatchSampler(
            len(dataset), args.batch_size, context.rank, context.world_size, seed=args.seed
        )
        self.hooks = default_hooks(args, context, stop_flag, eval_dataset, dataset, extra_hooks)
        self.step, epoch, batch_in_epoch = 0, 0, 0
        if self.resume_path is not None:
            epoch, batch_in_epoch = self._load(self.resume_path)
        elif context.world_size > 1:
            torch.manual_seed(args.seed + 1_000 * context.rank)  # own dropout noise per rank
        self.stream = BatchStream(
            dataset,
            self.sampler,
            args.num_workers,
            pin_memory=self.device.type == "cuda",
            seed=args.seed,
            epoch=epoch,
            batch_in_epoch=batch_in_epoch,
            num_labels=self.num_labels,
        )
        self.use_auxiliary = bool(getattr(model.config, "use_auxiliary_loss", False))
        self.log_file = self.output_dir / LOG_FILENAME
        self.last_saved_step = self.step if self.resume_path is not None else -1
        self.last_checkpoint: Path | None = self.resume_path
        self.terms: dict[str, torch.Tensor] = {}
        self.storage: dict[str, Any] = {}

    # -- set-up --------------------------------------------------------------------------------
    def _refuse_foreign_checkpoints(self) -> None:
        if self.resume_path is not None or self.args.overwrite_output_dir:
            return
        existing = checkpointing.find_latest_checkpoint(self.output_dir)
        if existing is not None:
            raise ValueError(
                f"output_dir {str(self.output_dir)!r} already holds checkpoints (newest: "
                f"{existing.name}); pass resume='auto' (--resume) to continue that run, or "
                "overwrite_output_dir=True (--overwrite-output-dir) to start over in it"
            )

    def _load(self, path: Path) -> tuple[int, int]:
        """Restore model, optimiser, schedule, scaler, hooks and RNG; return the position."""
        checkpoint = checkpointing.load_checkpoint(path, map_location="cpu")
        problem = describe_model_mismatch(self.module, checkpoint)
        if problem is not None:
            raise ValueError(f"cannot resume from {path}: {problem}")
        self.module.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        hook_states = checkpoint.get("hooks") or {}
        for hook in self.hooks:
            if hook.name in hook_states:
                hook.load_state_dict(hook_states[hook.name])
        self.step, epoch = int(checkpoint["step"]), int(checkpoint["epoch"])
        batch_in_epoch = resume_position(
            checkpoint,
            self.sampler.batches_per_epoch,
            self.context.world_size,
            self.args.batch_size,
        )
        per_rank = checkpoint.get("rng_per_rank") or []
        if len(per_rank) == self.context.world_size:
            checkpointing.restore_rng_state(per_rank[self.context.rank])
        else:
            checkpointing.restore_rng_state(checkpoint["rng"])
            torch.manual_seed(self.args.seed + 1_000 * self.context.rank + self.step)
        say(
            self, f"resumed from {path} at step {self.step} (epoch {epoch}, batch {batch_in_epoch})"
        )
        return epoch, batch_in_epoch

    def _prepare_output_dir(self) -> None:
        if self.context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.resume_path is None and self.args.overwrite_output_dir:
                for _, stale in checkpointing.list_checkpoints(self.output_dir):
                    stale.unlink()
                self.log_file.unlink(missing_ok=True)
            atomic_write_json(self.output_dir / ARGS_FILENAME, self.args.to_dict())
            if self.frozen:
                say(self, f"not trained (unused in the forward pass): {self.frozen}")
        barrier()

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """The loop: a step, then every hook; hooks before and after the run."""
        try:
            self._prepare_output_dir()
            self.train_model = wrap_model(
                self.module, self.context, self.args.find_unused_parameters
            )
            for hook in self.hooks:
                hook.before_train(self)
            while self.step < self.args.max_steps and not any(h.wants_stop() for h in self.hooks):
                self.storage = {}
                self.terms = self.run_step()
                self.step += 1
                for hook in self.hooks:
                    hook.after_step(self)
            for hook in self.hooks:
                hook.after_train(self)
            return self._result()
        finally:
            for hook in self.hooks:
                hook.close()
            self.stream.close()

    def run_step(self) -> dict[str, torch.Tensor]:
        """One optimisation step over ``gradient_accumulation_steps`` batches; returns the
        step's loss terms (detached, averaged over the micro-batches, this rank only)."""
        args = self.args
        accumulation = args.gradient_accumulation_steps
        step_terms: dict[str, torch.Tensor] = {}
        for micro_step in range(accumulation):
            batch = self.stream.next()
            inputs = to_device(batch, self.device)
            # Gradients are all-reduced on the last micro-batch only.
            accumulate_locally = self.context.is_distributed and micro_step < accumulation - 1
            sync = self.train_model.no_sync() if accumulate_locally else contextlib.nullcontext()
            with sync:
                loss, terms = self._forward_loss(inputs)
                self.scaler.scale(loss / accumulation).backward()
            # Local target count; its mean over ranks (taken when logging) is the loss's
            # num_masks before the clamp to >= 1.
            terms["num_masks"] = torch.tensor(
                float(sum(len(c) for c in batch["class_labels"])), device=self.device
            )
            for key, value in terms.items():
                step_terms[key] = step_terms.get(key, 0.0) + value / accumulation
        self.scaler.unscale_(self.optimizer)
        if args.max_grad_norm > 0:
            step_terms["grad_norm"] = nn.utils.clip_grad_norm_(
                self.trainable_parameters, args.max_grad_norm
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_terms

    def _forward_loss(
        self, inputs: Mapping[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward without labels (autocast if asked), then the loss once, in float32."""
        with autocast(self.device, self.args.amp):
            outputs = self.train_model(
                pixel_values=inputs["pixel_values"],
                pixel_mask=inputs["pixel_mask"],
                output_auxiliary_logits=self.use_auxiliary,
            )
        auxiliary = None
        if self.use_auxiliary and outputs.auxiliary_logits is not None:
            auxiliary = [
                {key: value.float() for key, value in entry.items()}
                for entry in outputs.auxiliary_logits
            ]
        loss_dict = self.module.get_loss_dict(
            outputs.masks_queries_logits.float(),
            outputs.class_queries_logits.float(),
            inputs["mask_labels"],
            inputs["class_labels"],
            auxiliary,
        )
        loss = self.module.get_loss(loss_dict).reshape(())
        terms = {"loss": loss.detach(), **{k: v.detach().reshape(()) for k, v in loss_dict.items()}}
        return loss, terms

    def _result(self) -> TrainResult:
        interrupted = self.step < self.args.max_steps
        result = TrainResult(
            step=self.step,
            checkpoint=self.last_checkpoint,
            interrupted=interrupted,
            log_file=self.log_file,
            best=next((h.best for h in self.hooks if getattr(h, "best", None)), None),
        )
        if interrupted:
            say(self, f"SIGTERM: saved checkpoint at step {self.step}: {result.checkpoint}")
        else:
            result.final_model_dir = self.output_dir / checkpointing.FINAL_DIRNAME
        if self.terms:
            keys = sorted(self.terms)
            means = all_reduce_mean(torch.stack([self.terms[k].float() for k in keys]))
            result.losses = dict(zip(keys, means.tolist()))
        return result

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step (rank 0), keep the newest ``keep_last``."""
        rng_per_rank = checkpointing.gather_rng_states()  # a collective: every rank calls it
        path = checkpointing.checkpoint_path(self.output_dir, self.step)
        if self.context.is_main:
            state = checkpointing.build_checkpoint(
                model=self.module,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                step=self.step,
                epoch=self.stream.epoch,
                batch_in_epoch=self.stream.batch_in_epoch,
                world_size=self.context.world_size,
                training_args=self.args.to_dict(),
            )
            state["rng_per_rank"] = rng_per_rank
            state["hooks"] = {hook.name: hook.state_dict() for hook in self.hooks}
            path = checkpointing.save_checkpoint(state, self.output_dir)
            checkpointing.prune_checkpoints(self.output_dir, self.args.keep_last)
        barrier()
        self.last_saved_step = self.step
        self.last_checkpoint = path
        return path
