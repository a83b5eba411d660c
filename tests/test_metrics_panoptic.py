"""Panoptic quality on hand-built cases, and against a slow per-segment loop written here."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from PIL import Image

from maskformer.evaluation import (
    PanopticQualityMetric,
    evaluate_panoptic_folders,
    panoptic_ids_to_rgb,
    read_panoptic_png,
    rgb_to_panoptic_ids,
)

# Category 1 and 2 are things, 3 and 4 stuff.
CATEGORIES = {1: True, 2: True, 3: False, 4: False}


def _score(pred, pred_info, gt, gt_info, categories=CATEGORIES):
    metric = PanopticQualityMetric(categories)
    metric.update(torch.as_tensor(pred), pred_info, torch.as_tensor(gt), gt_info)
    return metric.compute()


def _two_things_and_stuff() -> tuple[np.ndarray, list[dict]]:
    gt = np.zeros((6, 8), dtype=np.int64)
    gt[:, :4] = 5  # stuff, category 3
    gt[0:2, 4:6] = 7  # thing, category 1
    gt[3:5, 5:8] = 9  # thing, category 1
    info = [
        {"id": 5, "category_id": 3, "iscrowd": 0},
        {"id": 7, "category_id": 1, "iscrowd": 0},
        {"id": 9, "category_id": 1, "iscrowd": 0},
    ]
    return gt, info


def test_perfect_prediction_scores_one() -> None:
    gt, info = _two_things_and_stuff()
    pred = gt * 3 + 1  # other ids, same segments
    pred[gt == 0] = 0
    pred_info = [{"id": s["id"] * 3 + 1, "label_id": s["category_id"]} for s in info]
    results = _score(pred, pred_info, gt, info)
    for group, n in (("All", 2), ("Things", 1), ("Stuff", 1)):
        assert results[group] == {"PQ": 1.0, "SQ": 1.0, "RQ": 1.0, "n": n}
    assert results["PQ"] == 1.0
    assert results["per_class"][1]["TP"] == 2
    # Categories 2 and 4 are absent from both: NaN and out of every mean.
    assert math.isnan(results["per_class"][2]["PQ"]) and math.isnan(results["per_class"][4]["PQ"])


def test_one_missed_segment() -> None:
    # Category 1 has two gt segments, one predicted exactly: TP 1, FN 1 -> SQ 1,
    # RQ = 1 / (1 + 0.5 * 0 + 0.5 * 1) = 2/3, PQ = 2/3. The stuff segment is exact (PQ 1).
    # All = mean over categories 1 and 3 = (2/3 + 1) / 2.
    gt, info = _two_things_and_stuff()
    pred = np.where(gt == 9, 0, gt)
    pred_info = [s for s in info if s["id"] != 9]
    results = _score(pred, pred_info, gt, info)
    cat1 = results["per_class"][1]
    assert (cat1["TP"], cat1["FP"], cat1["FN"]) == (1, 0, 1)
    # SQ = IoU sum / TP of exact integer counts (n / n == 1.0 exactly); the other figures are
    # float64 ratios of small integers, a few ulps from the fraction: approx's 1e-6 is ample.
    assert cat1["SQ"] == 1.0 and cat1["RQ"] == pytest.approx(2 / 3)
    assert results["Things"]["PQ"] == pytest.approx(2 / 3)
    assert results["PQ"] == pytest.approx((2 / 3 + 1) / 2)
    assert results["RQ"] == pytest.approx((2 / 3 + 1) / 2)


def test_partial_overlap_iou_and_the_strict_half_threshold() -> None:
    # gt thing 7 is 4 pixels. A prediction covering 3 of them plus 1 stuff pixel: IoU = 3/5 > 0.5
    # -> TP with SQ 0.6. A prediction of 2 of them plus 2 other pixels: IoU = 2/6 -> FN + FP.
    gt, info = _two_things_and_stuff()
    pred = gt.copy()
    pred[gt == 7] = 0
    pred[0, 4:6] = 11
    pred[1, 4] = 11
    pred[1, 3] = 11  # was stuff 5
    pred_info = [s | {"id": s["id"]} for s in info if s["id"] != 7] + [{"id": 11, "category_id": 1}]
    results = _score(pred, pred_info, gt, info)
    cat1 = results["per_class"][1]
    assert (cat1["TP"], cat1["FP"], cat1["FN"]) == (2, 0, 0)
    assert cat1["SQ"] == pytest.approx((0.6 + 1.0) / 2)

    # Exactly IoU 0.5 is not a match: 2 of the 4 pixels and nothing else -> 2/4.
    pred = gt.copy()
    pred[gt == 7] = 0
    pred[0, 4:6] = 11
    results = _score(pred, pred_info, gt, info)
    cat1 = results["per_class"][1]
    assert (cat1["TP"], cat1["FP"], cat1["FN"]) == (1, 1, 1)


def test_void_pixels_are_left_out_of_iou_and_false_positives() -> None:
    # gt: thing 7 (4 px) next to 4 VOID pixels. A prediction over both: IoU = 4 / (8 - 4) = 1.
    # A second prediction lying 3/4 on VOID is not a false positive.
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[:2, :2] = 7
    gt[2:, :] = 3
    info = [{"id": 7, "category_id": 1}, {"id": 3, "category_id": 4}]
    pred = gt.copy()
    pred[:2, :] = 1
    pred[2, :] = 0  # part of stuff unpredicted, keeps the stuff IoU at 1/2
    pred[3, :] = 2
    pred_info = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 4}]
    gt[:2, 2:] = 0  # void beside the thing
    results = _score(pred, pred_info, gt, info)
    cat1 = results["per_class"][1]
    assert (cat1["TP"], cat1["FP"], cat1["FN"], cat1["SQ"]) == (1, 0, 0, 1.0)
    cat4 = results["per_class"][4]  # IoU 4/8 = 0.5, not > 0.5: FN and FP
    assert (cat4["TP"], cat4["FP"], cat4["FN"]) == (0, 1, 1)

    # Prediction of category 2 with 3 of its 4 pixels on VOID: ignored (3/4 > 1/2).
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[3, :] = 3
    pred = np.zeros_like(gt)
    pred[2:, 0:2] = 8  # pixels (2,0), (2,1) on void, (3,0), (3,1) on stuff: 2/4, not > 1/2
    pred[1:3, 3] = 9  # both on void
    results = _score(
        pred,
        [{"id": 8, "category_id": 2}, {"id": 9, "category_id": 2}],
        gt,
        [{"id": 3, "category_id": 4}],
    )
    assert results["per_class"][2]["FP"] == 1  # segment 8 counts, segment 9 is ignored
    assert results["per_class"][4]["FN"] == 1


def test_crowd_region_is_never_a_false_negative_and_absorbs_predictions() -> None:
    gt = np.zeros((4, 6), dtype=np.int64)
    gt[:, :3] = 20  # crowd of category 1
    gt[:, 3:] = 21  # a person, category 1
    info = [{"id": 20, "category_id": 1, "iscrowd": 1}, {"id": 21, "category_id": 1, "iscrowd": 0}]
    pred = np.zeros_like(gt)
    pred[:, 3:] = 1  # exact match of the person
    pred[:2, :3] = 2  # category 1 on the crowd: not a FP
    pred[2:, :3] = 3  # category 2 on the crowd: a FP (the crowd is another category)
    pred_info = [
        {"id": 1, "category_id": 1},
        {"id": 2, "category_id": 1},
        {"id": 3, "category_id": 2},
    ]
    results = _score(pred, pred_info, gt, info)
    cat1, cat2 = results["per_class"][1], results["per_class"][2]
    assert (cat1["TP"], cat1["FP"], cat1["FN"]) == (1, 0, 0)
    assert (cat2["TP"], cat2["FP"], cat2["FN"]) == (0, 1, 0)
    # A crowd prediction that matches the crowd region exactly is neither TP nor FP.
    results = _score(np.where(gt == 20, 2, 0), [{"id": 2, "category_id": 1}], gt, info)
    assert (results["per_class"][1]["TP"], results["per_class"][1]["FP"]) == (0, 0)
    assert results["per_class"][1]["FN"] == 1  # the person


def test_fused_segments_listed_twice_and_empty_predictions() -> None:
    gt, info = _two_things_and_stuff()
    pred_info = [{"id": s["id"], "label_id": s["category_id"]} for s in info]
    pred_info.append(dict(pred_info[0]))  # listed twice (as fused stuff can be)
    pred_info.append({"id": 99, "label_id": 2})  # no pixels: predicts nothing
    results = _score(gt, pred_info, gt, info)
    assert results["PQ"] == 1.0 and results["per_class"][2]["FP"] == 0


def test_bad_inputs_raise_clear_errors() -> None:
    gt, info = _two_things_and_stuff()
    with pytest.raises(ValueError, match=r"segment ids \[5\] not in pred_segments_info"):
        _score(gt, info[1:], gt, info)
    with pytest.raises(ValueError, match="unknown category 77"):
        _score(gt, info + [{"id": 3, "category_id": 77}], gt, info)
    with pytest.raises(ValueError, match="same size"):
        _score(gt[:, :4], info, gt, info)
    with pytest.raises(ValueError, match="two categories"):
        _score(gt, info + [{"id": 5, "category_id": 4}], gt, info)
    with pytest.raises(TypeError, match="integer"):
        _score(gt.astype(np.float32), info, gt, info)


def test_rgb_id_codec_round_trip() -> None:
    ids = np.array([[0, 1, 256], [65536, 16777215, 4325578]])
    assert np.array_equal(rgb_to_panoptic_ids(panoptic_ids_to_rgb(ids)), ids)
    assert panoptic_ids_to_rgb(np.array([[1 + 2 * 256 + 3 * 65536]])).tolist() == [[[1, 2, 3]]]


# --- an independent, straightforward computation (one segment pair at a time) ---------------


def _slow_pq(images, categories):
    """images: list of (pred ids, pred info, gt ids, gt info) as numpy arrays and dicts."""
    stats = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
    for pred, pred_info, gt, gt_info in images:
        gt_segments = {s["id"]: s for s in gt_info}
        pred_segments = {s["id"]: s for s in pred_info}
        gt_void = ~np.isin(gt, list(gt_segments))
        matched_gt, matched_pred = set(), set()
        for g, gs in gt_segments.items():
            for p, ps in pred_segments.items():
                if gs.get("iscrowd", 0) or gs["category_id"] != ps["category_id"]:
                    continue
                inter = np.sum((gt == g) & (pred == p))
                union = np.sum((gt == g) | (pred == p)) - np.sum((pred == p) & gt_void)
                if inter and inter / union > 0.5:
                    stats[gs["category_id"]]["tp"] += 1
                    stats[gs["category_id"]]["iou"] += inter / union
                    matched_gt.add(g)
                    matched_pred.add(p)
        for g, gs in gt_segments.items():
            if g not in matched_gt and not gs.get("iscrowd", 0):
                stats[gs["category_id"]]["fn"] += 1
        for p, ps in pred_segments.items():
            area = np.sum(pred == p)
            if p in matched_pred or area == 0:
                continue
            crowd = [
                g
                for g, gs in gt_segments.items()
                if gs.get("iscrowd", 0) and gs["category_id"] == ps["category_id"]
            ]
            ignored = np.sum((pred == p) & (gt_void | np.isin(gt, crowd)))
            if ignored / area <= 0.5:
                stats[ps["category_id"]]["fp"] += 1
    figures = {}
    for group, keep in (("All", lambda t: True), ("Things", bool), ("Stuff", lambda t: not t)):
        pqs, sqs, rqs = [], [], []
        for c, isthing in categories.items():
            s = stats[c]
            if not keep(isthing) or s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            sq = s["iou"] / s["tp"] if s["tp"] else 0.0
            rq = s["tp"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
            pqs.append(sq * rq)
            sqs.append(sq)
            rqs.append(rq)
        figures[group] = (np.mean(pqs), np.mean(sqs), np.mean(rqs), len(pqs)) if pqs else None
    return figures, stats


def _assert_same(results, slow) -> None:
    # Both sides sum float64 IoUs of integer pixel counts, in different orders: the sums differ
    # by at most (segments) x 2^-52 relative, below 1e-13 for these few hundred segments, so
    # abs=1e-12 holds on any CPU and thread count (the counts themselves are exact integers).
    figures, stats = slow
    for group, expected in figures.items():
        if expected is None:
            assert results[group]["n"] == 0
            continue
        got = results[group]
        assert (got["PQ"], got["SQ"], got["RQ"]) == pytest.approx(expected[:3], abs=1e-12)
        assert got["n"] == expected[3]
    for c, s in stats.items():
        entry = results["per_class"][c]
        assert (entry["TP"], entry["FP"], entry["FN"]) == (s["tp"], s["fp"], s["fn"])


def _random_image(rng: np.random.Generator):
    """Blocky gt and a perturbed prediction: shifted, some segments dropped/relabelled/merged."""
    height, width = 24, 20
    blocks = rng.integers(0, 9, (6, 5))
    gt = np.kron(blocks, np.ones((4, 4), dtype=np.int64))
    gt_info = []
    for segment_id in np.unique(gt):
        if segment_id == 0:
            continue  # void
        gt_info.append(
            {
                "id": int(segment_id) * 10,
                "category_id": int(rng.integers(1, 5)),
                "iscrowd": int(rng.random() < 0.15),
            }
        )
    gt = gt * 10
    pred = np.roll(gt, shift=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    pred[rng.random((height, width)) < 0.05] = 0
    pred_info = []
    for s in gt_info:
        r = rng.random()
        if r < 0.15:
            pred[pred == s["id"]] = 0
            continue
        category = int(rng.integers(1, 5)) if r < 0.3 else s["category_id"]
        pred_info.append({"id": s["id"] + 1, "category_id": category})
        pred[pred == s["id"]] = s["id"] + 1
    return pred, pred_info, gt, gt_info


def test_matches_slow_reference_on_random_images() -> None:
    rng = np.random.default_rng(1)
    images = [_random_image(rng) for _ in range(12)]
    metric = PanopticQualityMetric(CATEGORIES)
    for pred, pred_info, gt, gt_info in images:
        metric.update(torch.from_numpy(pred), pred_info, torch.from_numpy(gt), gt_info)
    results = metric.compute()
    slow = _slow_pq(images, CATEGORIES)
    assert sum(s["tp"] for s in slow[1].values()) > 5 and sum(s["fp"] for s in slow[1].values()) > 5
    _assert_same(results, slow)


@requires_shared_data
def test_coco_sample_against_itself_and_a_perturbed_copy(tmp_path) -> None:
    sample = SHARED_DATA / "coco_panoptic_sample"
    gt_json, gt_dir = sample / "panoptic_examples.json", sample / "panoptic"
    data = json.loads(gt_json.read_text())
    categories = {c["id"]: bool(c["isthing"]) for c in data["categories"]}

    perfect = evaluate_panoptic_folders(gt_json, gt_dir, gt_json, gt_dir)
    assert (perfect["PQ"], perfect["Things"]["PQ"], perfect["Stuff"]["PQ"]) == (1.0, 1.0, 1.0)
    assert perfect["num_images"] == 2 and perfect["per_class"][1]["name"] == "person"

    # Perturb: shift every prediction, drop one segment per image, relabel another, and predict
    # the crowd region as an ordinary person.
    rng = np.random.default_rng(0)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    annotations, images = [], []
    for annotation in data["annotations"]:
        gt = read_panoptic_png(gt_dir / annotation["file_name"])
        pred = np.roll(gt, shift=(3, -4), axis=(0, 1))
        info = [
            {"id": s["id"], "category_id": s["category_id"]} for s in annotation["segments_info"]
        ]
        dropped = info.pop(int(rng.integers(len(info))))
        pred[pred == dropped["id"]] = 0
        info[0]["category_id"] = 193 if info[0]["category_id"] != 193 else 1
        Image.fromarray(panoptic_ids_to_rgb(pred)).save(pred_dir / annotation["file_name"])
        annotations.append(
            {
                "image_id": annotation["image_id"],
                "file_name": annotation["file_name"],
                "segments_info": info,
            }
        )
        images.append((pred, info, gt, annotation["segments_info"]))
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps({"annotations": annotations}))

    results = evaluate_panoptic_folders(gt_json, gt_dir, pred_json, pred_dir, categories=categories)
    assert 0.1 < results["PQ"] < 0.95
    _assert_same(results, _slow_pq(images, categories))

    with pytest.raises(ValueError, match="no prediction"):
        pred_json.write_text(json.dumps({"annotations": annotations[:1]}))
        evaluate_panoptic_folders(gt_json, gt_dir, pred_json, pred_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_panoptic_folders(gt_json, tmp_path / "missing", gt_json, gt_dir)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_state_stays_on_the_input_device_and_matches_cpu() -> None:
    from maskformer.evaluation import SemanticSegmentationMetric

    rng = np.random.default_rng(3)
    images = [_random_image(rng) for _ in range(4)]
    on_cpu, on_gpu = PanopticQualityMetric(CATEGORIES), PanopticQualityMetric(CATEGORIES)
    semantic_cpu, semantic_gpu = SemanticSegmentationMetric(5), SemanticSegmentationMetric(5)
    for pred, pred_info, gt, gt_info in images:
        on_cpu.update(torch.from_numpy(pred), pred_info, torch.from_numpy(gt), gt_info)
        on_gpu.update(
            torch.from_numpy(pred).cuda(), pred_info, torch.from_numpy(gt).cuda(), gt_info
        )
        target = torch.from_numpy(gt % 5)
        semantic_cpu.update(torch.from_numpy(pred % 7), target)
        semantic_gpu.update(torch.from_numpy(pred % 7).cuda(), target.cuda())
    assert on_gpu._true_positives.is_cuda and semantic_gpu.confusion_matrix.is_cuda
    _assert_same(on_gpu.compute(), _slow_pq(images, CATEGORIES))
    # The confusion counts are integers: equal exactly. The figures divide and average them in
    # float64 on each device, where a reduction may add in another order: a few ulps of values
    # <= 1, so abs=1e-12 (== would also trip on NaN for an absent class; nan_ok handles that).
    assert torch.equal(semantic_gpu.confusion_matrix.cpu(), semantic_cpu.confusion_matrix)
    gpu_figures, cpu_figures = semantic_gpu.compute(), semantic_cpu.compute()
    assert gpu_figures.keys() == cpu_figures.keys()
    for key, value in cpu_figures.items():
        if isinstance(value, (float, list)):
            assert gpu_figures[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
        else:
            assert gpu_figures[key] == value, key
