"""Panoptic quality (PQ, SQ, RQ) with the COCO panoptic definition.

Per image, a predicted and a ground-truth segment of the same category match when their IoU is
above 0.5, where the union leaves out the prediction's pixels on ground-truth VOID (as the COCO
panoptic API ``pq_compute`` does). Segments are non-overlapping, so a match is unique. Unmatched
non-crowd ground truth is a false negative; crowd ground truth is never matched and never a false
negative; an unmatched prediction is a false positive unless more than half of it lies on VOID
plus crowd regions of its own category. Per category: ``SQ = IoU sum / TP``,
``RQ = TP / (TP + FP/2 + FN/2)``, ``PQ = SQ * RQ``; "All" / "Things" / "Stuff" average over the
categories with any TP + FP + FN.

The state is four per-category vectors (TP, FP, FN counts; IoU sums) on the inputs' device; each
``update`` counts all (ground truth, prediction) pixel overlaps of one image with one
``bincount``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from maskformer.evaluation.distributed import all_reduce_sum
from maskformer.evaluation.semantic import as_label_tensor

VOID_ID = 0

CategoriesArg = Mapping[int, bool] | Sequence[Mapping[str, Any]]


def parse_categories(
    categories: CategoriesArg,
) -> tuple[dict[int, bool], dict[int, str]]:
    """``{category id: isthing}`` and ``{category id: name}`` from either a mapping
    ``{id: isthing}`` or a COCO ``categories`` list of ``{"id", "isthing", "name"}`` dicts."""
    if isinstance(categories, Mapping):
        return {int(k): bool(v) for k, v in categories.items()}, {}
    if isinstance(categories, Sequence) and not isinstance(categories, str):
        isthing, names = {}, {}
        for entry in categories:
            if not isinstance(entry, Mapping) or "id" not in entry or "isthing" not in entry:
                raise ValueError(
                    "categories as a list must hold COCO category dicts with 'id' and 'isthing', "
                    f"got {entry!r}"
                )
            isthing[int(entry["id"])] = bool(entry["isthing"])
            if "name" in entry:
                names[int(entry["id"])] = str(entry["name"])
        return isthing, names
    raise TypeError(
        "categories must be a mapping {category_id: isthing} or a list of COCO category dicts, "
        f"got {type(categories).__name__}"
    )


def _segment_table(
    segments_info: Sequence[Mapping[str, Any]],
    name: str,
    category_index: Mapping[int, int],
) -> tuple[list[int], list[int], list[bool]]:
    """Segments sorted by id: ids, category indices, crowd flags. Repeated ids (fused segments
    listed once per query) are kept once; a repeated id with another category is an error."""
    by_id: dict[int, tuple[int, bool]] = {}
    for position, segment in enumerate(segments_info):
        if "id" not in segment:
            raise ValueError(f"{name}[{position}] has no 'id'")
        category = segment.get("category_id", segment.get("label_id"))
        if category is None:
            raise ValueError(f"{name}[{position}] has neither 'category_id' nor 'label_id'")
        segment_id, category = int(segment["id"]), int(category)
        if segment_id == VOID_ID:
            raise ValueError(f"{name}[{position}] uses id 0, which is reserved for VOID")
        if category not in category_index:
            raise ValueError(
                f"{name}[{position}] (id {segment_id}) has unknown category {category}; "
                "pass it in `categories`"
            )
        crowd = bool(segment.get("iscrowd", 0))
        previous = by_id.get(segment_id)
        if previous is not None and previous[0] != category_index[category]:
            raise ValueError(f"{name} lists segment id {segment_id} with two categories")
        by_id[segment_id] = (category_index[category], crowd)
    ids = sorted(by_id)
    return ids, [by_id[i][0] for i in ids], [by_id[i][1] for i in ids]


def _segment_positions(segmentation: torch.Tensor, sorted_ids: torch.Tensor) -> torch.Tensor:
    """Per pixel, 1 + position of its id in ``sorted_ids``, or 0 where the id is not listed."""
    if sorted_ids.numel() == 0:
        return torch.zeros_like(segmentation)
    position = torch.searchsorted(sorted_ids, segmentation).clamp(max=sorted_ids.numel() - 1)
    listed = sorted_ids[position] == segmentation
    return torch.where(listed, position + 1, 0)


class PanopticQualityMetric:
    """Accumulates PQ statistics over images (and processes).

    Args:
        categories: ``{category id: isthing}``, or a COCO ``categories`` list of dicts with
            ``"id"``, ``"isthing"`` (and ``"name"``).
        category_names: optional ``{category id: name}`` (overrides names from a COCO list).

    Under ``torch.distributed`` every rank must call :meth:`compute`.
    """

    def __init__(
        self, categories: CategoriesArg, category_names: Mapping[int, str] | None = None
    ) -> None:
        isthing, names = parse_categories(categories)
        if not isthing:
            raise ValueError("categories is empty")
        if category_names is not None:
            names.update({int(k): str(v) for k, v in category_names.items()})
        self.category_ids: list[int] = sorted(isthing)
        self.isthing: dict[int, bool] = {c: isthing[c] for c in self.category_ids}
        self.category_names: dict[int, str] = names
        self._category_index = {c: i for i, c in enumerate(self.category_ids)}
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        num_categories = len(self.category_ids)
        self._true_positives = torch.zeros(num_categories, dtype=torch.int64)
        self._false_positives = torch.zeros(num_categories, dtype=torch.int64)
        self._false_negatives = torch.zeros(num_categories, dtype=torch.int64)
        self._iou_sums = torch.zeros(num_categories, dtype=torch.float64)

    def _move_state(self, device: torch.device) -> None:
        if self._true_positives.device != device:
            self._true_positives = self._true_positives.to(device)
            self._false_positives = self._false_positives.to(device)
            self._false_negatives = self._false_negatives.to(device)
            self._iou_sums = self._iou_sums.to(device)

    @torch.no_grad()
    def update(
        self,
        pred_segmentation: torch.Tensor | np.ndarray,
        pred_segments_info: Sequence[Mapping[str, Any]],
        gt_segmentation: torch.Tensor | np.ndarray,
        gt_segments_info: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add one image.

        Args:
            pred_segmentation: ``(height, width)`` integer segment ids; 0 = no segment.
            pred_segments_info: ``[{"id", "category_id" (or "label_id"), ...}]`` for every
                non-zero id in ``pred_segmentation`` (a listed id with no pixels is skipped).
            gt_segmentation: ``(height, width)`` integer segment ids; 0 and ids not listed in
                ``gt_segments_info`` are VOID.
            gt_segments_info: ``[{"id", "category_id", "iscrowd" (default 0)}]``.
        """
        pred = as_label_tensor(pred_segmentation, "pred_segmentation")
        gt = as_label_tensor(gt_segmentation, "gt_segmentation")
        if pred.dim() != 2 or pred.shape != gt.shape:
            raise ValueError(
                "pred_segmentation and gt_segmentation must be (height, width) maps of the same "
                f"size, got {tuple(pred.shape)} and {tuple(gt.shape)}"
            )
        device = gt.device
        pred = pred.to(device)
        self._move_state(device)

        gt_ids, gt_categories, gt_crowd = _segment_table(
            gt_segments_info, "gt_segments_info", self._category_index
        )
        pred_ids, pred_categories, _ = _segment_table(
            pred_segments_info, "pred_segments_info", self._category_index
        )
        gt_position = _segment_positions(gt, torch.tensor(gt_ids, dtype=torch.int64, device=device))
        pred_position = _segment_positions(
            pred, torch.tensor(pred_ids, dtype=torch.int64, device=device)
        )
        unlisted = (pred_position == 0) & (pred != VOID_ID)
        if unlisted.any():
            missing = pred[unlisted].unique()[:10].tolist()
            raise ValueError(
                f"pred_segmentation holds segment ids {missing} not in pred_segments_info"
            )

        # overlaps[g, p]: pixels of gt segment g-1 and predicted segment p-1 (row/column 0 = VOID).
        num_gt, num_pred = len(gt_ids), len(pred_ids)
        pair_index = gt_position.reshape(-1) * (num_pred + 1) + pred_position.reshape(-1)
        overlaps = torch.bincount(pair_index, minlength=(num_gt + 1) * (num_pred + 1))
        overlaps = overlaps.view(num_gt + 1, num_pred + 1)
        self._add_image(
            overlaps,
            torch.tensor(gt_categories, dtype=torch.int64, device=device),
            torch.tensor(gt_crowd, dtype=torch.bool, device=device),
            torch.tensor(pred_categories, dtype=torch.int64, device=device),
        )

    def _add_image(
        self,
        overlaps: torch.Tensor,
        gt_categories: torch.Tensor,
        gt_crowd: torch.Tensor,
        pred_categories: torch.Tensor,
    ) -> None:
        """Match one image's segments from their overlap counts and add TP/FP/FN/IoU.

        Args:
            overlaps: ``(num_gt + 1, num_pred + 1)`` int64 pixel counts, index 0 = VOID.
            gt_categories, gt_crowd: ``(num_gt,)`` category indices and crowd flags.
            pred_categories: ``(num_pred,)`` category indices.
        """
        intersection = overlaps[1:, 1:]
        gt_area = overlaps[1:, :].sum(dim=1)
        pred_area = overlaps[:, 1:].sum(dim=0)
        pred_on_void = overlaps[0, 1:]
        same_category = gt_categories[:, None] == pred_categories[None, :]
        union = gt_area[:, None] + pred_area[None, :] - intersection - pred_on_void[None, :]
        # IoU > 0.5 as an exact integer test; a positive intersection implies a positive union.
        matched = (
            (2 * intersection > union) & same_category & ~gt_crowd[:, None] & (intersection > 0)
        )
        iou = torch.where(matched, intersection.double() / union.clamp(min=1).double(), 0.0)

        self._true_positives.index_add_(0, gt_categories, matched.sum(dim=1))
        self._iou_sums.index_add_(0, gt_categories, iou.sum(dim=1))
        missed = ~matched.any(dim=1) & ~gt_crowd
        self._false_negatives.index_add_(0, gt_categories, missed.long())

        on_own_crowd = (intersection * (gt_crowd[:, None] & same_category)).sum(dim=0)
        mostly_ignored = 2 * (pred_on_void + on_own_crowd) > pred_area
        spurious = ~matched.any(dim=0) & ~mostly_ignored & (pred_area > 0)
        self._false_positives.index_add_(0, pred_categories, spurious.long())

    def compute(self) -> dict[str, Any]:
        """PQ / SQ / RQ over everything accumulated (on every rank, summed across ranks).

        Returns:
            ``{"PQ", "SQ", "RQ"}`` (the "All" figures) and ``"All"``, ``"Things"``, ``"Stuff"``:
            ``{"PQ", "SQ", "RQ", "n"}`` (n = categories averaged; figures NaN when n = 0), and
            ``"per_class"``: ``{category id: {"PQ", "SQ", "RQ", "TP", "FP", "FN", "isthing"
            (, "name")}}`` with NaN figures for categories without any TP + FP + FN. Fractions
            in [0, 1].
        """
        tp = all_reduce_sum(self._true_positives).double().cpu()
        fp = all_reduce_sum(self._false_positives).double().cpu()
        fn = all_reduce_sum(self._false_negatives).double().cpu()
        iou_sums = all_reduce_sum(self._iou_sums).cpu()

        counted = (tp + fp + fn) > 0
        sq = torch.where(tp > 0, iou_sums / tp.clamp(min=1), 0.0)
        rq = torch.where(counted, tp / (tp + 0.5 * fp + 0.5 * fn).clamp(min=1e-12), 0.0)
        pq = sq * rq

        things = torch.tensor([self.isthing[c] for c in self.category_ids], dtype=torch.bool)
        results: dict[str, Any] = {}
        for group, members in (
            ("All", counted),
            ("Things", counted & things),
            ("Stuff", counted & ~things),
        ):
            n = int(members.sum())
            results[group] = {
                "PQ": float(pq[members].mean()) if n else math.nan,
                "SQ": float(sq[members].mean()) if n else math.nan,
                "RQ": float(rq[members].mean()) if n else math.nan,
                "n": n,
            }
        results["PQ"] = results["All"]["PQ"]
        results["SQ"] = results["All"]["SQ"]
        results["RQ"] = results["All"]["RQ"]

        per_class: dict[int, dict[str, Any]] = {}
        for index, category in enumerate(self.category_ids):
            present = bool(counted[index])
            entry: dict[str, Any] = {
                "PQ": float(pq[index]) if present else math.nan,
                "SQ": float(sq[index]) if present else math.nan,
                "RQ": float(rq[index]) if present else math.nan,
                "TP": int(tp[index]),
                "FP": int(fp[index]),
                "FN": int(fn[index]),
                "isthing": self.isthing[category],
            }
            if category in self.category_names:
                entry["name"] = self.category_names[category]
            per_class[category] = entry
        results["per_class"] = per_class
        return results
