"""The file formats `maskformer predict` writes, checked without a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.engine.predict import (
    PredictOptions,
    check_no_overwrite,
    collect_image_paths,
    image_id_of,
    instance_records,
    label_png,
    panoptic_png,
    panoptic_result_to_coco,
)


def test_label_png_is_8_bit_until_ids_need_16(tmp_path):
    classes = np.array([[0, 5], [149, 3]])
    small = label_png(classes, num_labels=150)
    assert small.mode == "L"
    large = label_png(np.array([[0, 300], [1000, 3]]), num_labels=1200)
    assert large.mode == "I;16"
    large.save(tmp_path / "large.png")
    assert np.asarray(Image.open(tmp_path / "large.png")).tolist() == [[0, 300], [1000, 3]]


def test_panoptic_png_round_trips_ids(tmp_path):
    ids = np.array([[0, 1], [256, 70000]])
    panoptic_png(ids).save(tmp_path / "p.png")
    rgb = np.asarray(Image.open(tmp_path / "p.png")).astype(np.int64)
    assert (rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]).tolist() == ids.tolist()


def test_panoptic_result_merges_fused_duplicates_and_drops_vanished_ids():
    segmentation = torch.tensor([[1, 1], [2, 0]], dtype=torch.int32)
    info = [
        {"id": 1, "label_id": 0, "was_fused": True, "score": 0.6},
        {"id": 1, "label_id": 0, "was_fused": True, "score": 0.9},
        {"id": 2, "label_id": 4, "was_fused": False, "score": 0.7},
        {"id": 3, "label_id": 4, "was_fused": False, "score": 0.8},
    ]
    ids, segments = panoptic_result_to_coco({"segmentation": segmentation, "segments_info": info})
    assert ids.tolist() == [[1, 1], [2, 0]]
    assert segments == [
        {"id": 1, "category_id": 0, "score": 0.9},
        {"id": 2, "category_id": 4, "score": 0.7},
    ]


def test_instance_records_are_coco_results_with_string_counts():
    from pycocotools import mask as mask_utils

    masks = np.zeros((2, 5, 7), dtype=bool)
    masks[0, 1:3, 2:6] = True
    masks[1, 4, :] = True
    records = instance_records(42, masks, np.array([3, 1]), np.array([0.5, 0.25]))
    assert [r["category_id"] for r in records] == [3, 1]
    for record, mask in zip(records, masks):
        assert record["image_id"] == 42 and isinstance(record["segmentation"]["counts"], str)
        assert np.array_equal(mask_utils.decode(record["segmentation"]).astype(bool), mask)
    assert instance_records(1, np.zeros((0, 5, 7), bool), np.zeros(0), np.zeros(0)) == []


def test_inputs_expand_folders_and_globs_and_reject_bad_ones(tmp_path):
    for name in ("b.jpg", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.JPG").write_bytes(b"x")
    assert [p.name for p in collect_image_paths([tmp_path])] == ["a.png", "b.jpg"]
    assert [p.name for p in collect_image_paths([str(tmp_path / "*" / "*.JPG")])] == ["c.JPG"]
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        collect_image_paths([tmp_path / "missing.jpg"])
    with pytest.raises(FileNotFoundError, match="matches no files"):
        collect_image_paths([str(tmp_path / "*.gif")])
    (tmp_path / "sub" / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="same name"):
        collect_image_paths([tmp_path / "a.png", tmp_path / "sub" / "a.jpg"])
    assert image_id_of(tmp_path / "000000142238.jpg") == 142238
    assert image_id_of(tmp_path / "photo_1.jpg") == "photo_1"
    # ASCII digits only: other scripts' digits and superscripts stay strings (int() would turn
    # "١٢٣" into 123, colliding with 123.jpg, and fail on "²")
    assert image_id_of(tmp_path / "١٢٣.jpg") == "١٢٣" and image_id_of(tmp_path / "².png") == "²"


def test_overwrite_check_names_the_first_existing_file(tmp_path):
    paths = [tmp_path / "x.jpg"]
    options = PredictOptions(task="panoptic", output_dir=tmp_path / "out")
    check_no_overwrite(paths, options)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "panoptic.json").write_text("{}")
    with pytest.raises(FileExistsError, match="panoptic.json"):
        check_no_overwrite(paths, options)
    check_no_overwrite(paths, PredictOptions(task="semantic", output_dir=tmp_path / "out"))
    with pytest.raises(ValueError, match="task"):
        PredictOptions(task="depth")
