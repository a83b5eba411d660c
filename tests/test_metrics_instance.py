"""Mask AP through pycocotools on cases whose answer is derived by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maskformer.evaluation import InstanceSegmentationMetric, encode_masks

# Tolerances in this file: COCOeval's AP is the float64 mean of 101 interpolated precisions, each
# a ratio of small integer counts (matching is on exact RLE IoUs of binary masks: no float
# accumulation that depends on the CPU or thread count). The results are a few ulps from the exact
# fractions (25.5 / 101, 0.1, ...), so pytest.approx's default relative 1e-6 holds with margin.


def _square(top: int, left: int, size: int = 10, shape=(64, 64)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def _two_instances() -> np.ndarray:
    return np.stack([_square(2, 2), _square(30, 30)])


def test_perfect_detections_score_one() -> None:
    gt = _two_instances()
    metric = InstanceSegmentationMetric()
    metric.update(torch.from_numpy(gt), torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), gt, [1, 1])
    results = metric.compute()
    assert results["AP"] == pytest.approx(1.0)
    assert results["AP50"] == pytest.approx(1.0) and results["AP75"] == pytest.approx(1.0)
    assert results["APs"] == pytest.approx(1.0)  # 100-pixel masks are "small" (< 32^2)
    assert math.isnan(results["APl"])  # no large ground truth
    assert results["per_class_AP"] == {1: pytest.approx(1.0)}
    assert results["num_images"] == 1


def test_false_positive_ranked_first_gives_known_ap() -> None:
    # Two gt instances. Detections by score: a false positive (0.95, on empty ground), then an
    # exact match of the first instance (0.9). Cumulative (recall, precision): (0, 0), (0.5, 0.5).
    # COCO makes precision non-increasing from the right -> [0.5, 0.5], then reads it at the 101
    # recall points 0, 0.01, ..., 1: points <= 0.5 (51 of them) get 0.5, points above recall 0.5
    # get 0. AP = 51 * 0.5 / 101 = 25.5 / 101 at every IoU threshold (the match has IoU 1).
    gt = _two_instances()
    detections = np.stack([_square(50, 2), gt[0]])
    metric = InstanceSegmentationMetric(categories=[1])
    metric.update(detections, [0.95, 0.9], [1, 1], gt, [1, 1])
    results = metric.compute()
    assert results["AP"] == pytest.approx(25.5 / 101)
    assert results["AP50"] == pytest.approx(25.5 / 101)
    assert results["AP75"] == pytest.approx(25.5 / 101)


def test_half_overlap_counts_at_ap50_only() -> None:
    # One gt (10x10) and one detection shifted by 3 columns: IoU = 70 / 130 = 0.538 -> a match at
    # IoU thresholds 0.50 only (0.55 ... 0.95 are above 0.538): AP50 = 1, AP75 = 0,
    # AP = mean over the 10 thresholds = 1/10.
    gt = _square(10, 10)[None]
    metric = InstanceSegmentationMetric()
    metric.update(_square(10, 13)[None], [0.5], [3], gt, [3])
    results = metric.compute()
    assert results["AP50"] == pytest.approx(1.0)
    assert results["AP75"] == pytest.approx(0.0)
    assert results["AP"] == pytest.approx(0.1)


def test_crowd_ground_truth_absorbs_detections_and_is_never_missed() -> None:
    # A crowd gt plus one ordinary gt: the exact detection of the ordinary one is a TP; the
    # detection inside the crowd (even ranked first) is ignored, the crowd needs no detection.
    gt = np.stack([_square(2, 2, size=20), _square(40, 40)])
    detections = np.stack([_square(5, 5, size=8), gt[1]])
    metric = InstanceSegmentationMetric()
    metric.update(detections, [0.99, 0.5], [1, 1], gt, [1, 1], gt_iscrowd=[1, 0])
    assert metric.compute()["AP"] == pytest.approx(1.0)


def test_several_images_categories_and_missing_detections() -> None:
    # Image 1: category 1 detected exactly; image 2: category 2 not detected at all.
    # per-class AP: 1 -> 1.0, 2 -> 0.0; AP = mean = 0.5. Category 5 has no gt: NaN, out of the mean.
    metric = InstanceSegmentationMetric(categories={1: "cat", 2: "dog", 5: "unused"})
    gt = _square(0, 0)[None]
    metric.update(gt, [0.7], [1], gt, [1], image_id="a")
    metric.update(np.zeros((0, 64, 64), bool), [], [], gt, [2], image_id="b")
    results = metric.compute()
    assert results["per_class_AP"][1] == pytest.approx(1.0)
    assert results["per_class_AP"][2] == pytest.approx(0.0)
    assert math.isnan(results["per_class_AP"][5])
    assert results["AP"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="already added"):
        metric.update(gt, [0.7], [1], gt, [1], image_id="a")
    metric.reset()
    assert math.isnan(metric.compute()["AP"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode under numpy 2
def test_rle_input_and_float_masks() -> None:
    gt = _two_instances()
    rles = encode_masks(gt.astype(np.uint8))
    assert np.array_equal(mask_utils.decode(rles[0]), gt[0].astype(np.uint8))
    metric = InstanceSegmentationMetric()
    metric.update_from_rle(
        64,
        64,
        # RLE counts are accepted as bytes (what pycocotools gives) and as str (what json holds).
        gt_annotations=[
            {"segmentation": {"size": r["size"], "counts": r["counts"].encode()}, "category_id": 4}
            for r in rles
        ],
        detections=[
            {
                "segmentation": r,
                "category_id": 4,
                "score": 0.5,
            }
            for r in rles
        ],
    )
    metric.update(gt.astype(np.float32) * 0.9, [0.3, 0.2], [4, 4], gt, [4, 4])
    assert metric.compute()["AP"] == pytest.approx(1.0)


def test_bad_inputs_raise_clear_errors() -> None:
    metric = InstanceSegmentationMetric()
    gt = _two_instances()
    with pytest.raises(ValueError, match="number of detections"):
        metric.update(gt, [0.5], [1, 1], gt, [1, 1])
    with pytest.raises(ValueError, match="share"):
        metric.update(gt[:, :32], [0.5, 0.5], [1, 1], gt, [1, 1])
    with pytest.raises(ValueError, match=r"\(instances, height, width\)"):
        metric.update(gt[0], [0.5], [1], gt, [1, 1])
    with pytest.raises(ValueError, match="lacks"):
        metric.update_from_rle(64, 64, [{"category_id": 1}], [])
