"""Semantic metric on hand-built cases with known answers and against a per-class loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from PIL import Image

from maskformer.evaluation import SemanticSegmentationMetric, evaluate_semantic_folders

# Tolerances in this file: every figure is a ratio of int64 pixel counts (exact on any CPU and
# thread count: bincount is integer) divided in float64, then averaged over at most a handful of
# classes. That differs from the exact fraction by a few ulps (< 1e-15 relative), so
# pytest.approx's default (relative 1e-6) and assert_allclose's (relative 1e-7) hold with a wide
# margin; a ratio n / n is exactly 1.0, so perfect scores are compared with ==.


def test_perfect_prediction_scores_one() -> None:
    target = torch.randint(0, 4, (2, 8, 8))
    metric = SemanticSegmentationMetric(4)
    metric.update(target.clone(), target)
    results = metric.compute()
    assert results["mIoU"] == 1.0
    assert results["pixel_accuracy"] == 1.0
    assert results["mean_class_accuracy"] == 1.0
    assert results["num_pixels"] == 128


def test_hand_built_case_with_ignore_and_out_of_range_prediction() -> None:
    # Pixels (target -> prediction): 0->0, 1->1, 1->2, 1->7 (out of range: wrong, no class's
    # positive), 255->0 (ignored). Class 0: TP 1, union 1 -> IoU 1. Class 1: TP 1, target 3,
    # predicted 1 -> union 3 -> IoU 1/3. Class 2: TP 0, predicted once -> IoU 0.
    # Class 3: absent from both -> NaN, out of the mean. mIoU = (1 + 1/3 + 0) / 3.
    preds = torch.tensor([[0, 1, 2, 7, 0]])
    targets = torch.tensor([[0, 1, 1, 1, 255]])
    metric = SemanticSegmentationMetric(4, class_names=["a", "b", "c", "d"])
    metric.update(preds, targets)
    results = metric.compute()
    iou = results["per_class_IoU"]
    assert iou[:3] == pytest.approx([1.0, 1 / 3, 0.0])
    assert math.isnan(iou[3])
    assert results["mIoU"] == pytest.approx((1 + 1 / 3) / 3)
    assert results["pixel_accuracy"] == pytest.approx(2 / 4)
    accuracy = results["per_class_accuracy"]
    assert accuracy[:2] == pytest.approx([1.0, 1 / 3])
    assert math.isnan(accuracy[2]) and math.isnan(accuracy[3])
    assert results["mean_class_accuracy"] == pytest.approx((1 + 1 / 3) / 2)
    assert results["num_pixels"] == 4
    assert results["class_names"] == ["a", "b", "c", "d"]
    assert metric.confusion_matrix.tolist() == [
        [1, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]


def _reference_figures(preds: list[np.ndarray], targets: list[np.ndarray], k: int, ignore: int):
    pred = np.concatenate([p.ravel() for p in preds])
    target = np.concatenate([t.ravel() for t in targets])
    keep = target != ignore
    pred, target = pred[keep], target[keep]
    ious, accuracies = [], []
    for c in range(k):
        inter = np.sum((pred == c) & (target == c))
        union = np.sum((pred == c) | (target == c))
        ious.append(inter / union if union else math.nan)
        total = np.sum(target == c)
        accuracies.append(inter / total if total else math.nan)
    return ious, accuracies, np.mean(pred == target)


def test_matches_per_class_loop_over_batches_and_lists() -> None:
    rng = np.random.default_rng(0)
    k, ignore = 6, 255
    preds, targets = [], []
    for height, width in [(7, 9), (5, 5), (12, 3)]:
        target = rng.integers(0, k - 1, (height, width))  # class 5 never in the targets
        target[rng.random((height, width)) < 0.2] = ignore
        pred = np.where(
            rng.random((height, width)) < 0.6, target, rng.integers(-2, k + 2, (height, width))
        )
        preds.append(pred)
        targets.append(target)
    metric = SemanticSegmentationMetric(k, ignore_index=ignore)
    metric.update(
        [torch.from_numpy(p) for p in preds[:2]], [torch.from_numpy(t) for t in targets[:2]]
    )
    metric.update(preds[2][None], targets[2][None])  # numpy, batched
    results = metric.compute()
    ious, accuracies, pixel_accuracy = _reference_figures(preds, targets, k, ignore)
    np.testing.assert_allclose(results["per_class_IoU"], ious)
    np.testing.assert_allclose(results["per_class_accuracy"], accuracies)
    assert results["pixel_accuracy"] == pytest.approx(pixel_accuracy)
    assert results["mIoU"] == pytest.approx(np.nanmean(ious))
    assert results["mean_class_accuracy"] == pytest.approx(np.nanmean(accuracies))


def test_reset_and_empty() -> None:
    metric = SemanticSegmentationMetric(2)
    metric.update(torch.zeros(3, 3, dtype=torch.int64), torch.ones(3, 3, dtype=torch.int64))
    metric.reset()
    results = metric.compute()
    assert math.isnan(results["mIoU"]) and math.isnan(results["pixel_accuracy"])
    assert results["num_pixels"] == 0


def test_bad_inputs_raise_clear_errors() -> None:
    metric = SemanticSegmentationMetric(3)
    with pytest.raises(TypeError, match="integer"):
        metric.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="outside"):
        metric.update(torch.zeros(1, 2, dtype=torch.int64), torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="2 predictions but 1"):
        metric.update(
            [torch.zeros(2, 2, dtype=torch.int64)] * 2, [torch.zeros(2, 2, dtype=torch.int64)]
        )
    with pytest.raises(ValueError, match="num_classes"):
        SemanticSegmentationMetric(0)
    with pytest.raises(ValueError, match="class_names"):
        SemanticSegmentationMetric(2, class_names=["only one"])


@requires_shared_data
def test_folder_evaluation_on_ade20k_sample(tmp_path) -> None:
    # Predictions are model class ids: the ground truth shifted down by one (reduce-labels).
    annotations = SHARED_DATA / "ade20k_sample" / "annotations"
    exact, all_wall = tmp_path / "exact", tmp_path / "wall"
    exact.mkdir()
    all_wall.mkdir()
    wall, counted = 0, 0
    for path in sorted(annotations.glob("*.png")):
        labels = np.asarray(Image.open(path))
        Image.fromarray((np.maximum(labels.astype(np.int64), 1) - 1).astype(np.uint8)).save(
            exact / path.name
        )
        Image.fromarray(np.zeros_like(labels)).save(all_wall / path.name)
        wall += np.sum(labels == 1)
        counted += np.sum(labels != 0)
    perfect = evaluate_semantic_folders(annotations, exact, 150, reduce_labels=True)
    assert perfect["mIoU"] == 1.0 and perfect["num_images"] == 3

    # Class 0 ("wall" after reduce-labels) everywhere: pixel accuracy = the wall share.
    results = evaluate_semantic_folders(annotations, all_wall, 150, reduce_labels=True)
    assert results["pixel_accuracy"] == pytest.approx(wall / counted)
    assert results["num_pixels"] == counted

    (all_wall / "ADE_val_00000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="no prediction"):
        evaluate_semantic_folders(annotations, all_wall, 150, reduce_labels=True)
