"""`maskformer evaluate --format coco-instances`: mask AP against pycocotools run on the files."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _coco_instances_support import write_synthetic_coco
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskformer.cli import main
from maskformer.data.coco_instances import annotation_masks, read_coco_instances
from maskformer.utils.coco import encode_rle


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("coco_instances")
    write_synthetic_coco(folder, num_images=6, image_size=48)
    return folder


def _pycocotools_figures(json_file: Path, results: list[dict]) -> list[float]:
    """AP, AP50, AP75 as pycocotools computes them from the files themselves.

    Only these three: APs/APm/APl depend on the json's ``area`` fields, which we take from the
    decoded masks instead (polygon exports often carry the polygon's area).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(json_file))
        detections = ground_truth.loadRes(copy.deepcopy(results))  # loadRes edits its input
        evaluator = COCOeval(ground_truth, detections, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats[:3]]


def _imperfect_predictions(json_file: Path, rng: np.random.Generator) -> list[dict]:
    """Ground-truth objects, some dropped, shifted, relabelled, with random scores, plus noise."""
    index = read_coco_instances(json_file)
    results = []
    for info in index.images:
        objects = [a for a in index.annotations[info["id"]] if not a.get("iscrowd")]
        masks = annotation_masks(objects, info["height"], info["width"])
        for annotation, mask in zip(objects, masks):
            if rng.random() < 0.2:
                continue
            if rng.random() < 0.4:
                mask = np.roll(mask, int(rng.integers(1, 6)), axis=1)
            category = annotation["category_id"]
            if rng.random() < 0.15:
                category = int(rng.choice(index.category_ids))
            rle = encode_rle(mask[None])[0]
            results.append(
                {
                    "image_id": info["id"],
                    "category_id": category,
                    "segmentation": rle,
                    "score": float(rng.random()),
                }
            )
        for crowd in (a for a in index.annotations[info["id"]] if a.get("iscrowd")):
            # a detection on a crowd region is neither a hit nor a false positive
            (mask,) = annotation_masks([crowd], info["height"], info["width"])
            results.append(
                {
                    "image_id": info["id"],
                    "category_id": crowd["category_id"],
                    "segmentation": encode_rle(mask[None])[0],
                    "score": 0.9,
                }
            )
        noise = np.zeros((1, info["height"], info["width"]), dtype=bool)
        noise[0, 30:40, 30:44] = True
        results.append(
            {
                "image_id": info["id"],
                "category_id": index.category_ids[0],
                "segmentation": encode_rle(noise)[0],
                "score": 0.3,
            }
        )
    return results


def _evaluate(argv: list[str], output: Path) -> dict:
    code = main(["evaluate", *argv, "--output", str(output), "--no-progress", "--device", "cpu"])
    assert code == 0
    return json.loads(output.read_text())


def test_prediction_files_match_pycocotools(data: Path, tmp_path: Path) -> None:
    json_file = data / "annotations.json"
    for seed in (0, 1):
        results = _imperfect_predictions(json_file, np.random.default_rng(seed))
        expected = _pycocotools_figures(json_file, results)
        assert 0.1 < expected[0] < 0.95  # imperfect, not degenerate
        # predict writes file-name stems as image ids: the evaluator maps them back
        as_stems = [{**r, "image_id": f"{r['image_id']:06d}"} for r in results]
        predictions = tmp_path / f"results_{seed}.json"
        predictions.write_text(json.dumps(as_stems))
        figures = _evaluate(
            [
                "--predictions",
                str(predictions),
                "--data",
                str(data),
                "--format",
                "coco-instances",
                "--task",
                "instance",
            ],
            tmp_path / f"figures_{seed}.json",
        )
        # Same COCOeval arithmetic on the same masks: equal up to float64 rounding of the means.
        assert [figures["AP"], figures["AP50"], figures["AP75"]] == pytest.approx(
            expected, abs=1e-12
        )
        assert figures["num_images"] == 6


def test_perfect_predictions_score_one(data: Path, tmp_path: Path) -> None:
    json_file = data / "annotations.json"
    index = read_coco_instances(json_file)
    results = []
    for info in index.images:
        objects = [a for a in index.annotations[info["id"]] if not a.get("iscrowd")]
        for annotation, rle in zip(
            objects, encode_rle(annotation_masks(objects, info["height"], info["width"]))
        ):
            results.append(
                {
                    "image_id": info["id"],
                    "category_id": annotation["category_id"],
                    "segmentation": rle,
                    "score": 1.0,
                }
            )
    (tmp_path / "instances.json").write_text(json.dumps(results))
    figures = _evaluate(
        ["--predictions", str(tmp_path), "--data", str(data)]
        + ["--format", "coco-instances", "--task", "instance"],
        tmp_path / "figures.json",
    )
    assert figures["AP"] == pytest.approx(1.0)
    assert set(figures["per_class_AP"]) == {"5", "11", "27"}


def _tiny_model(folder: Path, id2label: dict[int, str], category_ids: list[int]) -> Path:
    from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
    from maskformer.presets import get_preset

    torch.manual_seed(0)
    config = get_preset("tiny-resnet", id2label=id2label)
    config.label_category_ids = category_ids
    model = MaskFormerForInstanceSegmentation(config)
    with torch.no_grad():
        model.class_predictor.bias[-1] = -4.0  # commit to some class: detections to score
    model.save_pretrained(folder)
    MaskFormerImageProcessor(size={"shortest_edge": 48, "longest_edge": 64}).save_pretrained(folder)
    return folder


def test_model_predict_and_evaluate_agree_with_pycocotools(data: Path, tmp_path: Path) -> None:
    json_file = data / "annotations.json"
    index = read_coco_instances(json_file)
    model = _tiny_model(tmp_path / "model", index.id2label, index.category_ids)
    thresholds = ["--threshold", "0.0", "--batch-size", "3"]
    code = main(
        ["predict", "--model", str(model), "--task", "instance", str(data / "images")]
        + ["--output-dir", str(tmp_path / "out"), "--no-overlay", "--no-progress"]
        + ["--device", "cpu", *thresholds]
    )
    assert code == 0
    results = json.loads((tmp_path / "out" / "instances.json").read_text())
    assert results and {r["category_id"] for r in results} <= set(index.category_ids)
    assert {r["image_id"] for r in results} <= {i["id"] for i in index.images}
    # pycocotools reads predict's file as it is: original category ids, image ids from names
    expected = _pycocotools_figures(json_file, results)

    common = ["--data", str(data), "--format", "coco-instances", "--task", "instance"]
    from_files = _evaluate(["--predictions", str(tmp_path / "out"), *common], tmp_path / "f.json")
    from_model = _evaluate(
        ["--model", str(model), *common, *thresholds, "--coco-json", str(json_file)],
        tmp_path / "m.json",
    )
    for figures in (from_files, from_model):
        assert [figures["AP"], figures["AP50"], figures["AP75"]] == pytest.approx(
            expected, abs=1e-12
        )
    assert from_model["per_class_AP"] == from_files["per_class_AP"]


def _predictions_error(data: Path, tmp_path: Path, entries: list[dict], capsys) -> str:
    predictions = tmp_path / "bad.json"
    predictions.write_text(json.dumps(entries))
    code = main(
        ["evaluate", "--predictions", str(predictions), "--data", str(data)]
        + ["--format", "coco-instances", "--task", "instance", "--output", str(tmp_path / "o")]
    )
    assert code == 2
    return capsys.readouterr().err


def test_bad_predictions_are_one_line(data: Path, tmp_path: Path, capsys) -> None:
    rle = dict(mask_utils.encode(np.asfortranarray(np.ones((48, 48, 1), dtype=np.uint8)))[0])
    rle["counts"] = rle["counts"].decode()
    entry = {"image_id": 100, "category_id": 5, "segmentation": rle, "score": 0.5}
    error = _predictions_error(data, tmp_path, [{**entry, "category_id": 2}], capsys)
    assert "prediction #0 has category_id 2" in error and error.count("\n") == 1
    error = _predictions_error(data, tmp_path, [{**entry, "image_id": 7}], capsys)
    assert "prediction #0 has image_id 7" in error
    error = _predictions_error(data, tmp_path, [{"image_id": 100}], capsys)
    assert "needs image_id, category_id, segmentation and score" in error


def test_wrong_task_and_missing_json(data: Path, tmp_path: Path, capsys) -> None:
    code = main(
        ["evaluate", "--predictions", str(tmp_path), "--data", str(data)]
        + ["--format", "coco-instances", "--task", "semantic"]
    )
    assert code == 2
    assert "--format coco-instances is scored with --task instance" in capsys.readouterr().err
    (tmp_path / "instances.json").write_text("[]")
    empty = tmp_path / "empty"
    empty.mkdir()
    panoptic = {"images": [], "annotations": [{"segments_info": []}], "categories": []}
    (empty / "panoptic.json").write_text(json.dumps(panoptic))  # not an instance json
    code = main(
        ["evaluate", "--predictions", str(tmp_path), "--data", str(empty)]
        + ["--format", "coco-instances", "--task", "instance", "--output", str(tmp_path / "o")]
    )
    assert code == 2
    assert "need exactly one COCO instance json" in capsys.readouterr().err


def test_model_classes_matched_by_name_without_category_ids(data: Path) -> None:
    from maskformer import MaskFormerConfig
    from maskformer.engine.evaluate_instances import label_category_ids

    index = read_coco_instances(data / "annotations.json")
    config = MaskFormerConfig(id2label={0: "square", 1: "disc", 2: "triangle"})
    assert label_category_ids(config, index) == [27, 11, 5]
    config = MaskFormerConfig(id2label={0: "a", 1: "b", 2: "c"})
    assert label_category_ids(config, index) == [5, 11, 27]  # by position, ids sorted
    config = MaskFormerConfig(id2label={0: "a", 1: "b"})
    with pytest.raises(ValueError, match="match neither the names nor the number"):
        label_category_ids(config, index)
