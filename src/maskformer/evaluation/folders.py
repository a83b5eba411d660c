"""Scoring prediction files against ground-truth files on disk (what ``maskformer evaluate
--predictions`` uses): semantic label PNG folders and COCO panoptic json + PNG folders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maskformer.evaluation.label_files import (
    PathLike,
    load_panoptic_json,
    read_label_png,
    read_panoptic_png,
)
from maskformer.evaluation.panoptic import CategoriesArg, PanopticQualityMetric
from maskformer.evaluation.semantic import SemanticSegmentationMetric
from maskformer.utils.constants import IGNORE_INDEX


def _progress(items: list, enabled: bool, description: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, unit="image")


def _check_folder(folder: Path, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is a file, not a folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} does not exist")


def evaluate_semantic_folders(
    gt_dir: PathLike,
    pred_dir: PathLike,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    reduce_labels: bool = False,
    class_names: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Semantic figures of the label PNGs in ``pred_dir`` against those in ``gt_dir``.

    Every ``gt_dir/NAME.png`` needs ``pred_dir/NAME.png`` of the same size. ``reduce_labels``
    maps ground truth as ADE20K training does (0 -> ``ignore_index``, k -> k - 1); predictions are
    taken as they are. Returns :meth:`SemanticSegmentationMetric.compute`'s dict plus
    ``"num_images"``.
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth folder"), (pred_dir, "prediction folder")):
        _check_folder(folder, what)
    gt_files = sorted(gt_dir.glob("*.png"))
    if not gt_files:
        raise ValueError(f"ground-truth folder {gt_dir} holds no .png label files")
    missing = [f.name for f in gt_files if not (pred_dir / f.name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} ground-truth label files have no prediction in {pred_dir}, e.g. "
            f"{missing[:5]}"
        )
    metric = SemanticSegmentationMetric(num_classes, ignore_index, class_names)
    for gt_file in _progress(gt_files, progress, "evaluate"):
        target = read_label_png(gt_file)
        pred = read_label_png(pred_dir / gt_file.name)
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction {pred_dir / gt_file.name} is {pred.shape[1]}x{pred.shape[0]} but its "
                f"ground truth is {target.shape[1]}x{target.shape[0]} (width x height)"
            )
        if reduce_labels:
            target = np.where(target == 0, ignore_index, target - 1)
        try:
            metric.update(pred, target)
        except ValueError as error:  # class ids out of range: name the file
            raise ValueError(f"ground truth {gt_file}: {error}") from None
    results = metric.compute()
    results["num_images"] = len(gt_files)
    return results


def evaluate_panoptic_folders(
    gt_json: PathLike,
    gt_dir: PathLike,
    pred_json: PathLike,
    pred_dir: PathLike,
    categories: CategoriesArg | None = None,
    category_names: Mapping[int, str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """PQ of COCO panoptic predictions (json + PNG folder) against ground truth (json + PNG
    folder), as the COCO panoptic API's ``pq_compute`` scores them.

    Images are paired by ``image_id``; every ground-truth image needs a prediction (extra
    predictions are ignored). ``categories`` defaults to the ground-truth json's ``categories``.
    Returns :meth:`PanopticQualityMetric.compute`'s dict plus ``"num_images"``.
    """
    gt_data, pred_data = load_panoptic_json(gt_json), load_panoptic_json(pred_json)
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth PNG folder"), (pred_dir, "prediction PNG folder")):
        _check_folder(folder, what)
    if categories is None:
        if "categories" not in gt_data:
            raise ValueError(f"{gt_json} has no 'categories'; pass `categories`")
        categories = gt_data["categories"]
    metric = PanopticQualityMetric(categories, category_names)

    predictions = {str(a["image_id"]): a for a in pred_data["annotations"]}
    gt_annotations = gt_data["annotations"]
    if not gt_annotations:
        raise ValueError(f"ground-truth json {gt_json} lists no images (empty 'annotations')")
    unpredicted = [a["image_id"] for a in gt_annotations if str(a["image_id"]) not in predictions]
    if unpredicted:
        raise ValueError(
            f"{pred_json} has no prediction for {len(unpredicted)} ground-truth images, e.g. "
            f"image_id {unpredicted[:5]}"
        )
    for gt_annotation in _progress(gt_annotations, progress, "evaluate"):
        pred_annotation = predictions[str(gt_annotation["image_id"])]
        gt_ids = read_panoptic_png(gt_dir / gt_annotation["file_name"])
        pred_ids = read_panoptic_png(pred_dir / pred_annotation["file_name"])
        if pred_ids.shape != gt_ids.shape:
            raise ValueError(
                f"prediction {pred_dir / pred_annotation['file_name']} is {pred_ids.shape[1]}x"
                f"{pred_ids.shape[0]} but its ground truth is {gt_ids.shape[1]}x{gt_ids.shape[0]}"
            )
        try:
            metric.update(
                pred_ids,
                pred_annotation.get("segments_info", []),
                gt_ids,
                gt_annotation.get("segments_info", []),
            )
        except ValueError as error:
            raise ValueError(
                f"{pred_json}, image_id {gt_annotation['image_id']!r}: {error}"
            ) from error
    results = metric.compute()
    results["num_images"] = len(gt_annotations)
    return results
