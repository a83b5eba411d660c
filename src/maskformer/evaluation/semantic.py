"""Semantic segmentation metric: mIoU, per-class IoU, pixel accuracy, mean class accuracy.

The state is one confusion matrix of pixel counts, ``(num_classes, num_classes + 1)`` int64:
row = target class, column = predicted class, and one extra column for predictions outside
``[0, num_classes)`` (they are wrong for every class but belong to no class). It lives on the
device of the first inputs and grows with one ``bincount`` per ``update``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from maskformer.evaluation.distributed import all_reduce_sum
from maskformer.utils.constants import IGNORE_INDEX

LabelMaps = torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]


def as_label_tensor(labels: Any, name: str) -> torch.Tensor:
    """``labels`` (a tensor or numpy array of integer class ids) as an int64 tensor."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(np.ascontiguousarray(labels))
    if not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array, got {type(labels).__name__}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    return labels.long()


def _pairs_of_maps(preds: LabelMaps, targets: LabelMaps) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Matching (prediction, target) tensors from single maps, batches or lists of maps."""
    if isinstance(preds, (torch.Tensor, np.ndarray)) != isinstance(
        targets, (torch.Tensor, np.ndarray)
    ):
        raise TypeError("preds and targets must both be tensors/arrays or both be lists of them")
    if isinstance(preds, (torch.Tensor, np.ndarray)):
        pairs = [(as_label_tensor(preds, "preds"), as_label_tensor(targets, "targets"))]
    else:
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} predictions but {len(targets)} targets")
        pairs = [
            (as_label_tensor(p, f"preds[{i}]"), as_label_tensor(t, f"targets[{i}]"))
            for i, (p, t) in enumerate(zip(preds, targets))
        ]
    for pred, target in pairs:
        if pred.shape != target.shape:
            raise ValueError(
                f"preds and targets must have the same shape, got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        if pred.dim() not in (2, 3):
            raise ValueError(
                f"preds and targets must be (height, width) or (batch, height, width), got "
                f"{pred.dim()} dimensions"
            )
    return pairs


def _nanmean(values: torch.Tensor) -> float:
    present = values[~torch.isnan(values)]
    return float(present.mean()) if present.numel() else math.nan


class SemanticSegmentationMetric:
    """Accumulates a confusion matrix over batches (and processes) and reports IoU and accuracy.

    Args:
        num_classes: number of classes ``K``; class ids are ``0 .. K-1``.
        ignore_index: target value whose pixels are left out entirely.
        class_names: optional ``K`` names, returned with the figures.

    Classes absent from both prediction and target have NaN IoU and are left out of ``mIoU``;
    classes absent from the target have NaN accuracy and are left out of ``mean_class_accuracy``.
    Under ``torch.distributed`` every rank must call :meth:`compute`.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes is {num_classes}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._counts = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64)

    @torch.no_grad()
    def update(self, preds: LabelMaps, targets: LabelMaps) -> None:
        """Add prediction/target pairs.

        Args:
            preds: predicted class ids, ``(height, width)`` or ``(batch, height, width)`` integer
                tensor or array, or a list of them (sizes may differ between list items).
            targets: ground-truth class ids of the same shape(s); ``ignore_index`` pixels are
                skipped. Target values outside ``[0, num_classes)`` other than ``ignore_index``
                raise ``ValueError``.
        """
        pairs = _pairs_of_maps(preds, targets)
        if not pairs:
            return
        device = pairs[0][0].device
        if self._counts.device != device:
            self._counts = self._counts.to(device)
        pred = torch.cat([p.to(device).reshape(-1) for p, _ in pairs])
        target = torch.cat([t.to(device).reshape(-1) for _, t in pairs])

        num_classes = self.num_classes
        valid = target != self.ignore_index
        pred, target = pred[valid], target[valid]
        out_of_range = (target < 0) | (target >= num_classes)
        if out_of_range.any():
            bad = target[out_of_range].unique()[:10].tolist()
            raise ValueError(
                f"targets hold class ids {bad} outside [0, {num_classes}) that are not the "
                f"ignore_index {self.ignore_index}"
            )
        # Predictions outside [0, K) go to the extra column K: wrong, but no class's positive.
        pred = torch.where((pred < 0) | (pred >= num_classes), num_classes, pred)
        flat = target * (num_classes + 1) + pred
        self._counts += torch.bincount(flat, minlength=num_classes * (num_classes + 1)).view(
            num_classes, num_classes + 1
        )

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """``(num_classes, num_classes)`` int64 pixel counts of this process, row = target,
        column = prediction (out-of-range predictions are not in it)."""
        return self._counts[:, : self.num_classes].clone()

    def compute(self) -> dict[str, Any]:
        """The figures over everything accumulated (on every rank, summed across ranks).

        Returns:
            ``{"mIoU": float, "per_class_IoU": list[float] (NaN = class absent from both),
            "pixel_accuracy": float, "mean_class_accuracy": float,
            "per_class_accuracy": list[float] (NaN = class absent from the targets),
            "num_pixels": int}`` plus ``"class_names"`` when names were given. Fractions in
            [0, 1]; NaN when nothing was counted.
        """
        counts = all_reduce_sum(self._counts).double()
        num_classes = self.num_classes
        true_positives = counts.diagonal()
        target_totals = counts.sum(dim=1)
        predicted_totals = counts[:, :num_classes].sum(dim=0)
        union = target_totals + predicted_totals - true_positives
        nan = torch.tensor(math.nan, dtype=counts.dtype, device=counts.device)
        iou = torch.where(union > 0, true_positives / union.clamp(min=1), nan)
        accuracy = torch.where(target_totals > 0, true_positives / target_totals.clamp(min=1), nan)
        num_pixels = int(target_totals.sum())
        results: dict[str, Any] = {
            "mIoU": _nanmean(iou),
            "per_class_IoU": iou.tolist(),
            "pixel_accuracy": float(true_positives.sum()) / num_pixels if num_pixels else math.nan,
            "mean_class_accuracy": _nanmean(accuracy),
            "per_class_accuracy": accuracy.tolist(),
            "num_pixels": num_pixels,
        }
        if self.class_names is not None:
            results["class_names"] = list(self.class_names)
        return results
