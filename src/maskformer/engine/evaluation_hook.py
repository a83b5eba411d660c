"""Validation during training: a hook that scores the model every ``eval_every`` steps.

The validation set is any data set of training-sample dicts (``pixel_values`` ``(3, H, W)``,
``mask_labels`` ``(n, H, W)`` with 1 = in, 255 = ignored, ``class_labels`` ``(n,)``): the ground
truth is rebuilt from those targets, the predictions come from the processor's post-processors,
and the figures from the project's metrics (:mod:`maskformer.evaluation`). Each process scores
every ``world_size``-th image; the metrics reduce their state across processes, so every process
gets the figures of the whole set.

Each evaluation is a ``{"step", "eval": {...}}`` line in ``log.jsonl``; the best model so far
(``metric_for_best``, higher is better) is written to ``OUTPUT/best/`` with ``best.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from maskformer.engine import checkpointing
from maskformer.engine.arguments import TrainingArguments
from maskformer.engine.data_stream import TASK_OF_FORMAT, DatasetItemError
from maskformer.engine.distributed import barrier
from maskformer.engine.hooks import Hook, append_jsonl, is_due, say
from maskformer.utils.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from maskformer.engine.train import Trainer

METRIC_OF_TASK = {"semantic": "miou", "panoptic": "pq", "instance": "ap"}
TASK_OF_METRIC = {metric: task for task, metric in METRIC_OF_TASK.items()}
BEST_FILENAME = "best.json"
OVERLAY_IMAGES = 3


def metric_for(args: TrainingArguments) -> str:
    """``metric_for_best``, else the metric of the data's task (mIoU without a format)."""
    if args.metric_for_best is not None:
        return args.metric_for_best
    return METRIC_OF_TASK[TASK_OF_FORMAT.get(args.data_format or "", "semantic")]


def semantic_target(mask_labels: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` class ids from ``mask_labels`` ``(n, H, W)``; IGNORE_INDEX where no mask is 1."""
    inside = mask_labels == 1
    owner = inside.to(torch.uint8).argmax(dim=0)
    if len(class_labels) == 0:
        return torch.full(mask_labels.shape[-2:], IGNORE_INDEX, dtype=torch.int64)
    return torch.where(inside.any(dim=0), class_labels.to(torch.int64)[owner], IGNORE_INDEX)


def panoptic_target(
    mask_labels: torch.Tensor, class_labels: torch.Tensor
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Segment ids ``(H, W)`` (segment k has id k + 1, 0 = void) and their ``segments_info``."""
    inside = mask_labels == 1
    ids = torch.where(inside.any(dim=0), inside.to(torch.uint8).argmax(dim=0) + 1, 0)
    info = [{"id": k + 1, "category_id": int(c), "iscrowd": 0} for k, c in enumerate(class_labels)]
    return ids.numpy(), info


def to_image(pixel_values: torch.Tensor) -> np.ndarray:
    """``(H, W, 3)`` uint8 from normalised ``pixel_values`` ``(3, H, W)``."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    image = (pixel_values.float().cpu() * std + mean).clamp(0, 1) * 255
    return image.round().to(torch.uint8).permute(1, 2, 0).numpy()


class ValidationEvaluator:
    """Scores a model on a data set of training-sample dicts for one task.

    Args:
        dataset: the validation samples (no augmentation).
        task: ``"semantic"`` (mIoU), ``"panoptic"`` (PQ) or ``"instance"`` (mask AP).
        id2label: the model's classes.
        thing_ids: class ids of countable things (panoptic: the others are fused stuff;
            instance: the evaluated classes); default every class.
    """

    def __init__(
        self,
        dataset: Dataset,
        task: str,
        id2label: Mapping[int, str],
        thing_ids: list[int] | None = None,
    ) -> None:
        if task not in METRIC_OF_TASK:
            raise ValueError(f"task must be one of {sorted(METRIC_OF_TASK)}, got {task!r}")
        if len(dataset) == 0:
            raise ValueError("the validation set is empty")
        self.dataset = dataset
        self.task = task
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self.thing_ids = sorted(self.id2label) if thing_ids is None else sorted(thing_ids)

    def _metric(self) -> Any:
        from maskformer import evaluation

        if self.task == "semantic":
            names = [self.id2label[k] for k in sorted(self.id2label)]
            return evaluation.SemanticSegmentationMetric(len(names), class_names=names)
        if self.task == "panoptic":
            things = set(self.thing_ids)
            return evaluation.PanopticQualityMetric({k: k in things for k in self.id2label})
        return evaluation.InstanceSegmentationMetric({k: self.id2label[k] for k in self.thing_ids})

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, rank: int = 0, world_size: int = 1, overlays: int = 0
    ) -> tuple[dict[str, float | None], list[Any]]:
        """The figures over the whole set (every process must call this under torchrun) and up
        to ``overlays`` prediction overlays (PIL images) of this process's first images."""
        from maskformer.processing import postprocess

        metric = self._metric()
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        pictures: list[Any] = []
        try:
            for index in range(rank, len(self.dataset), world_size):
                sample = self.dataset[index]
                if not {"pixel_values", "mask_labels", "class_labels"} <= set(sample):
                    raise DatasetItemError(f"validation sample {index} lacks training targets")
                pixels = sample["pixel_values"]
                size = tuple(pixels.shape[-2:])
                outputs = model(pixel_values=pixels[None].to(device))
                masks, classes = sample["mask_labels"], sample["class_labels"]
                result = self._update(metric, postprocess, outputs, size, masks, classes, index)
                if len(pictures) < overlays:
                    pictures.append(self._overlay(pixels, result))
        finally:
            model.train(was_training)
        return self._figures(metric.compute()), pictures

    def _update(self, metric, postprocess, outputs, size, masks, classes, index) -> Any:
        from maskformer.engine.predict import instance_result_to_arrays, panoptic_result_to_coco

        if self.task == "semantic":
            prediction = postprocess.post_process_semantic_segmentation(
                outputs, target_sizes=[size]
            )[0].cpu()
            metric.update(prediction, semantic_target(masks, classes))
            return prediction
        if self.task == "panoptic":
            stuff = set(self.id2label) - set(self.thing_ids)
            result = postprocess.post_process_panoptic_segmentation(
                outputs, label_ids_to_fuse=stuff, target_sizes=[size]
            )[0]
            ids, segments = panoptic_result_to_coco(result)
            metric.update(ids, segments, *panoptic_target(masks, classes))
            return ids, segments
        result = postprocess.post_process_instance_segmentation(
            outputs, target_sizes=[size], return_binary_maps=True
        )[0]
        predicted, labels, scores = instance_result_to_arrays(result, *size)
        things = torch.isin(classes, torch.tensor(self.thing_ids, dtype=classes.dtype))
        metric.update(
            predicted,
            scores,
            labels,
            (masks[things] == 1).numpy(),
            classes[things].numpy(),
            image_id=index,
        )
        return predicted, labels

    def _overlay(self, pixels: torch.Tensor, result: Any) -> Any:
        from maskformer import visualize

        image = to_image(pixels)
        if self.task == "semantic":
            return visualize.overlay_semantic(image, result.numpy(), self.id2label)
        if self.task == "panoptic":
            return visualize.overlay_panoptic(image, result[0], result[1], self.id2label)
        masks, labels = result
        ids = np.zeros(image.shape[:2], dtype=np.int64)
        for k, mask in enumerate(masks):
            ids[mask] = k + 1
        infos = [{"id": k + 1, "label_id": int(c)} for k, c in enumerate(labels)]
        return visualize.overlay_panoptic(image, ids, infos, self.id2label)

    def _figures(self, computed: Mapping[str, Any]) -> dict[str, float | None]:
        if self.task == "semantic":
            figures = {"miou": computed["mIoU"], "pixel_accuracy": computed["pixel_accuracy"]}
        elif self.task == "panoptic":
            figures = {
                "pq": computed["PQ"],
                "sq": computed["SQ"],
                "rq": computed["RQ"],
                "pq_things": computed["Things"]["PQ"],
                "pq_stuff": computed["Stuff"]["PQ"],
            }
        else:
            figures = {"ap": computed["AP"], "ap50": computed["AP50"], "ap75": computed["AP75"]}
        # NaN (nothing to average) is not JSON: None.
        return {
            k: None if v is None or math.isnan(float(v)) else float(v) for k, v in figures.items()
        }


class EvaluationHook(Hook):
    """Every ``eval_every`` steps (and at the last step): evaluate, log, keep the best model."""

    name = "evaluation"

    def __init__(
        self, dataset: Dataset, args: TrainingArguments, train_dataset: Dataset | None = None
    ) -> None:
        self.dataset = dataset
        self.metric = metric_for(args)
        self.every = args.eval_every
        self.train_dataset = train_dataset
        self.best: dict[str, Any] | None = None
        self.evaluator: ValidationEvaluator | None = None

    def before_train(self, trainer: Trainer) -> None:
        thing_ids = getattr(self.dataset, "thing_ids", None)
        if thing_ids is None:
            thing_ids = getattr(self.train_dataset, "thing_ids", None)
        self.evaluator = ValidationEvaluator(
            self.dataset,
            TASK_OF_METRIC[self.metric],
            trainer.module.config.id2label,
            None if thing_ids is None else [int(k) for k in thing_ids],
        )

    def after_step(self, trainer: Trainer) -> None:
        if not is_due(trainer.step, self.every, trainer.args.max_steps):
            return
        context = trainer.context
        wanted = OVERLAY_IMAGES if trainer.args.report_to == "tensorboard" else 0
        figures, overlays = self.evaluator.evaluate(
            trainer.module, context.rank, context.world_size, wanted if context.is_main else 0
        )
        record = {"step": trainer.step, "eval": figures}
        trainer.storage["eval"] = figures
        trainer.storage["eval_overlays"] = overlays
        value = figures.get(self.metric)
        improved = value is not None and (self.best is None or value > self.best["value"])
        if improved:
            self.best = {"metric": self.metric, "value": value, "step": trainer.step}
            if context.is_main:
                checkpointing.save_model_folder(
                    trainer.module,
                    trainer.output_dir,
                    checkpointing.BEST_DIRNAME,
                    extra_json={BEST_FILENAME: self.best},
                )
            barrier()
        if context.is_main:
            append_jsonl(trainer.log_file, record)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in figures.items() if v is not None)
        best = f" (best {self.best['value']:.4f} at step {self.best['step']})" if self.best else ""
        say(trainer, f"eval at step {trainer.step}: {shown}{best}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best)} if self.best else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        best = state.get("best")
        self.best = dict(best) if best else None
