"""Instance segmentation metric: mask AP through pycocotools' COCOeval (iouType "segm").

Each ``update`` encodes one image's ground-truth and predicted binary masks as COCO RLE and
keeps them as a record; ``compute`` gathers the records of all processes, builds in-memory COCO
ground-truth and result sets and runs COCOeval with its printing captured.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from maskformer.evaluation.distributed import all_gather_objects
from maskformer.utils.coco import encode_rle

_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _as_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    if isinstance(values, (np.ndarray, list, tuple)):
        return np.asarray(values)
    raise TypeError(
        f"{name} must be a torch.Tensor, numpy array or list, got {type(values).__name__}"
    )


def _binary_masks(masks: Any, name: str) -> np.ndarray:
    """``(n, height, width)`` masks as a uint8 array of 0/1."""
    masks = _as_numpy(masks, name)
    if masks.ndim != 3:
        raise ValueError(f"{name} must be (instances, height, width), got shape {masks.shape}")
    return (masks > 0.5 if masks.dtype.kind == "f" else masks != 0).astype(np.uint8)


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO RLE (``{"size": [h, w], "counts": str}``) of each ``(n, height, width)`` mask
    (:func:`maskformer.utils.coco.encode_rle`)."""
    return encode_rle(np.asarray(masks))


def _compressed_rle(rle: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    """A COCO RLE in compressed form (uncompressed ``counts`` lists are compressed)."""
    from pycocotools import mask as mask_utils

    if not isinstance(rle, Mapping) or "counts" not in rle or "size" not in rle:
        raise ValueError(
            f"segmentation must be a COCO RLE dict with 'size' and 'counts', got {rle!r}"
        )
    if list(rle["size"]) != [height, width]:
        raise ValueError(
            f"RLE size {list(rle['size'])} differs from the image size {[height, width]}"
        )
    if isinstance(rle["counts"], list):
        return dict(mask_utils.frPyObjects(dict(rle), height, width))
    return {"size": [height, width], "counts": rle["counts"]}


def _coco_annotation(entry: Mapping[str, Any], number: int, image_number: int) -> dict[str, Any]:
    """A record's ground-truth or detection entry as a COCO annotation (id ``number`` > 0, as
    COCOeval needs) of image ``image_number``, with the ``area`` and ``bbox`` of its RLE."""
    from pycocotools import mask as mask_utils

    rle = entry["segmentation"]
    return {
        **entry,
        "id": number,
        "image_id": image_number,
        "area": float(mask_utils.area(rle)),
        "bbox": list(mask_utils.toBbox(rle)),
    }


def _coco_index(
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]],
) -> Any:
    """An in-memory pycocotools ``COCO`` over these images, annotations and categories."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    coco.createIndex()
    return coco


class InstanceSegmentationMetric:
    """Accumulates per-image ground truth and detections and reports COCO mask AP.

    Args:
        categories: the category ids to evaluate (a list of ids, ``{id: name}`` or a COCO
            ``categories`` list of dicts). ``None``: every category seen in the ground truth.
            Categories without ground truth are left out of the means, as COCOeval does.
        max_detections: detections kept per image (COCOeval's largest ``maxDets``), best score
            first.

    Under ``torch.distributed`` every rank must call :meth:`compute`. Records that carry the same
    ``image_id`` on several ranks (a padding sampler repeating images) are counted once.
    """

    def __init__(
        self,
        categories: Sequence[int] | Mapping[int, str] | Sequence[Mapping[str, Any]] | None = None,
        max_detections: int = 100,
    ) -> None:
        self.category_names: dict[int, str] = {}
        if categories is None:
            self.category_ids: list[int] | None = None
        elif isinstance(categories, Mapping):
            self.category_ids = sorted(int(c) for c in categories)
            self.category_names = {int(k): str(v) for k, v in categories.items()}
        else:
            ids = []
            for entry in categories:
                if isinstance(entry, Mapping):
                    ids.append(int(entry["id"]))
                    if "name" in entry:
                        self.category_names[int(entry["id"])] = str(entry["name"])
                else:
                    ids.append(int(entry))
            self.category_ids = sorted(ids)
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        self.max_detections = max_detections
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._records: list[dict[str, Any]] = []
        self._image_ids: set[Any] = set()

    def update(
        self,
        pred_masks: Any,
        pred_scores: Any,
        pred_labels: Any,
        gt_masks: Any,
        gt_labels: Any,
        gt_iscrowd: Any = None,
        image_id: Any = None,
    ) -> None:
        """Add one image.

        Args:
            pred_masks: ``(num_detections, height, width)`` binary masks (bool/int; float
                thresholded at 0.5).
            pred_scores: ``(num_detections,)`` confidence scores.
            pred_labels: ``(num_detections,)`` category ids.
            gt_masks: ``(num_instances, height, width)`` binary masks, same size as predictions.
            gt_labels: ``(num_instances,)`` category ids.
            gt_iscrowd: ``(num_instances,)`` crowd flags (default all 0).
            image_id: optional hashable id; repeated ids raise within a process and are counted
                once across processes.
        """
        pred = _binary_masks(pred_masks, "pred_masks")
        gt = _binary_masks(gt_masks, "gt_masks")
        if pred.shape[1:] != gt.shape[1:]:
            raise ValueError(
                f"pred_masks and gt_masks must share (height, width), got {pred.shape[1:]} and "
                f"{gt.shape[1:]}"
            )
        scores = _as_numpy(pred_scores, "pred_scores").astype(np.float64).reshape(-1)
        labels = _as_numpy(pred_labels, "pred_labels").astype(np.int64).reshape(-1)
        gt_labels_array = _as_numpy(gt_labels, "gt_labels").astype(np.int64).reshape(-1)
        crowd = (
            np.zeros(len(gt), dtype=np.int64)
            if gt_iscrowd is None
            else _as_numpy(gt_iscrowd, "gt_iscrowd").astype(np.int64).reshape(-1)
        )
        if not (len(scores) == len(labels) == len(pred)):
            raise ValueError(
                f"pred_masks, pred_scores and pred_labels disagree on the number of detections: "
                f"{len(pred)}, {len(scores)}, {len(labels)}"
            )
        if not (len(gt_labels_array) == len(crowd) == len(gt)):
            raise ValueError(
                f"gt_masks, gt_labels and gt_iscrowd disagree on the number of instances: "
                f"{len(gt)}, {len(gt_labels_array)}, {len(crowd)}"
            )
        height, width = gt.shape[1:]
        self.update_from_rle(
            height,
            width,
            gt_annotations=[
                {"segmentation": rle, "category_id": int(c), "iscrowd": int(k)}
                for rle, c, k in zip(encode_masks(gt), gt_labels_array, crowd)
            ],
            detections=[
                {"segmentation": rle, "category_id": int(c), "score": float(s)}
                for rle, c, s in zip(encode_masks(pred), labels, scores)
            ],
            image_id=image_id,
        )

    def update_from_rle(
        self,
        height: int,
        width: int,
        gt_annotations: Sequence[Mapping[str, Any]],
        detections: Sequence[Mapping[str, Any]],
        image_id: Any = None,
    ) -> None:
        """Add one image given COCO RLE.

        Args:
            height, width: image size.
            gt_annotations: ``[{"segmentation": RLE, "category_id", "iscrowd" (default 0)}]``.
            detections: ``[{"segmentation": RLE, "category_id", "score"}]`` (the COCO results
                format; RLE ``counts`` may be bytes or str).
            image_id: as in :meth:`update`.
        """
        if image_id is not None:
            if image_id in self._image_ids:
                raise ValueError(f"image_id {image_id!r} was already added")
            self._image_ids.add(image_id)
        for name, entries, keys in (
            ("gt_annotations", gt_annotations, ("segmentation", "category_id")),
            ("detections", detections, ("segmentation", "category_id", "score")),
        ):
            for position, entry in enumerate(entries):
                missing = [k for k in keys if k not in entry]
                if missing:
                    raise ValueError(f"{name}[{position}] lacks {missing}")
        ranked = sorted(detections, key=lambda d: -float(d["score"]))[: self.max_detections]
        height, width = int(height), int(width)
        self._records.append(
            {
                "image_id": image_id,
                "height": height,
                "width": width,
                "gt": [
                    {
                        "segmentation": _compressed_rle(a["segmentation"], height, width),
                        "category_id": int(a["category_id"]),
                        "iscrowd": int(a.get("iscrowd", 0)),
                    }
                    for a in gt_annotations
                ],
                "detections": [
                    {
                        "segmentation": _compressed_rle(d["segmentation"], height, width),
                        "category_id": int(d["category_id"]),
                        "score": float(d["score"]),
                    }
                    for d in ranked
                ],
            }
        )

    def _all_records(self) -> list[dict[str, Any]]:
        """Records of every rank in rank order, repeated image ids kept once."""
        records, seen = [], set()
        for rank_records in all_gather_objects(self._records):
            for record in rank_records:
                if record["image_id"] is not None:
                    if record["image_id"] in seen:
                        continue
                    seen.add(record["image_id"])
                records.append(record)
        return records

    def compute(self) -> dict[str, Any]:
        """Mask AP over everything accumulated (on every rank, gathered across ranks).

        Returns:
            ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` (fractions; NaN where COCOeval has
            nothing to average, e.g. no ground truth), ``"per_class_AP"``: ``{category id: AP or
            NaN}``, and ``"num_images"``.
        """
        from pycocotools.cocoeval import COCOeval

        records = self._all_records()
        if self.category_ids is not None:
            category_ids = list(self.category_ids)
        else:
            category_ids = sorted({a["category_id"] for r in records for a in r["gt"]})
        nan_results = {name: math.nan for name in _STAT_NAMES}
        nan_results["per_class_AP"] = {c: math.nan for c in category_ids}
        nan_results["num_images"] = len(records)
        if not records or not category_ids or not any(r["gt"] for r in records):
            return nan_results

        images, gt_annotations, detections = [], [], []
        for number, record in enumerate(records, start=1):
            images.append({"id": number, "height": record["height"], "width": record["width"]})
            for annotation in record["gt"]:
                gt_annotations.append(_coco_annotation(annotation, len(gt_annotations) + 1, number))
            for detection in record["detections"]:
                detections.append(
                    _coco_annotation({**detection, "iscrowd": 0}, len(detections) + 1, number)
                )
        categories = [{"id": c} for c in category_ids]
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = _coco_index(images, gt_annotations, categories)
            results = _coco_index(images, detections, categories)
            evaluator = COCOeval(ground_truth, results, iouType="segm")
            evaluator.params.catIds = category_ids
            evaluator.params.maxDets = [1, 10, self.max_detections]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()

        figures = {
            name: (float(value) if value >= 0 else math.nan)
            for name, value in zip(_STAT_NAMES, evaluator.stats[: len(_STAT_NAMES)])
        }
        # precision: (iou thresholds, recall points, categories, area ranges, max dets).
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        per_class = {}
        for index, category in enumerate(category_ids):
            values = precision[:, :, index]
            values = values[values > -1]
            per_class[category] = float(values.mean()) if values.size else math.nan
        figures["per_class_AP"] = per_class
        figures["num_images"] = len(records)
        return figures
