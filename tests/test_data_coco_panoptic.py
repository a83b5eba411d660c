"""COCO panoptic reader: one mask per non-crowd segment, crowd and void ignored, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from PIL import Image

from maskformer.data.coco_panoptic import CocoPanopticDataset, rgb_to_segment_ids

COCO = SHARED_DATA / "coco_panoptic_sample"


def coco_dataset(**kwargs) -> CocoPanopticDataset:
    return CocoPanopticDataset(
        COCO / "panoptic_examples.json", COCO / "images", COCO / "panoptic", **kwargs
    )


@requires_shared_data
def test_categories_map_to_contiguous_classes():
    dataset = coco_dataset()
    assert dataset.num_labels == 133 and len(dataset) == 2
    assert dataset.id2label[0] == "person" and dataset.category_ids[0] == 1
    assert len(dataset.thing_ids) == 80 and dataset.isthing[0] and not dataset.isthing[-1]
    assert dataset.category_to_class[dataset.category_ids[100]] == 100


@requires_shared_data
@pytest.mark.parametrize("index", [0, 1])
def test_one_mask_per_non_crowd_segment(index):
    dataset = coco_dataset()
    sample = dataset[index]
    annotation = json.loads((COCO / "panoptic_examples.json").read_text())["annotations"][index]
    ids = torch.from_numpy(
        rgb_to_segment_ids(np.array(Image.open(COCO / "panoptic" / annotation["file_name"])))
    )
    segments = annotation["segments_info"]
    kept = [s for s in segments if not s["iscrowd"] and (ids == s["id"]).any()]
    crowd_ids = [s["id"] for s in segments if s["iscrowd"]]
    assert crowd_ids  # the sample images do hold crowd segments
    masks, classes = sample["mask_labels"], sample["class_labels"]
    assert masks.shape == (len(kept), *ids.shape)
    assert classes.tolist() == [dataset.category_to_class[s["category_id"]] for s in kept]
    ignored = (ids == 0) | torch.isin(ids, torch.tensor(crowd_ids))
    assert ignored.any() and (ids == 0).any()
    for mask, segment in zip(masks, kept):
        assert torch.equal(mask == 1, ids == segment["id"])
        assert torch.equal(mask == 255, ignored)
    assert sample["image_id"] == annotation["file_name"].removesuffix(".png")


@pytest.fixture
def small_coco(tmp_path):
    """A one-image panoptic set: a thing segment, a stuff segment, a crowd one and void."""
    (tmp_path / "images").mkdir()
    (tmp_path / "panoptic").mkdir()
    Image.fromarray(np.full((6, 8, 3), 50, dtype=np.uint8)).save(tmp_path / "images" / "im.jpg")
    ids = np.zeros((6, 8), dtype=np.int64)
    ids[:3, :4] = 255  # a segment whose id equals the ignore value
    ids[3:, :] = 70000
    ids[:3, 6:] = 12
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "panoptic" / "im.png")
    data = {
        "images": [{"id": 7, "file_name": "im.jpg", "height": 6, "width": 8}],
        "annotations": [
            {
                "image_id": 7,
                "file_name": "im.png",
                "segments_info": [
                    {"id": 255, "category_id": 5, "iscrowd": 0},
                    {"id": 70000, "category_id": 9, "iscrowd": 0},
                    {"id": 12, "category_id": 5, "iscrowd": 1},
                ],
            }
        ],
        "categories": [
            {"id": 5, "name": "cat", "isthing": 1},
            {"id": 9, "name": "grass", "isthing": 0},
        ],
    }
    (tmp_path / "p.json").write_text(json.dumps(data))
    return tmp_path, data


def small_dataset(root):
    return CocoPanopticDataset(root / "p.json", root / "images", root / "panoptic")


def test_small_set_segments(small_coco):
    root, _ = small_coco
    dataset = small_dataset(root)
    assert dataset.id2label == {0: "cat", 1: "grass"} and dataset.thing_ids == [0]
    sample = dataset[0]
    masks = sample["mask_labels"]
    assert sample["class_labels"].tolist() == [0, 1]
    assert masks[0, :3, :4].eq(1).all() and masks[0, 3:].eq(0).all()
    assert masks[1, 3:].eq(1).all()
    assert masks[:, :3, 6:].eq(255).all()  # crowd
    assert masks[:, :3, 4:6].eq(255).all()  # void
    assert sample["image_id"] == "im"


def test_unknown_category_names_the_file(small_coco):
    root, data = small_coco
    data["annotations"][0]["segments_info"][1]["category_id"] = 99
    (root / "p.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"im\.png.*category_id 99"):
        small_dataset(root)


def test_missing_png_is_named(small_coco):
    root, _ = small_coco
    (root / "panoptic" / "im.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"im\.png"):
        small_dataset(root)


def test_missing_json_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        CocoPanopticDataset(tmp_path / "nothing.json", tmp_path, tmp_path)


def test_png_of_another_size_is_named(small_coco):
    root, _ = small_coco
    Image.fromarray(np.zeros((5, 8, 3), dtype=np.uint8)).save(root / "panoptic" / "im.png")
    dataset = small_dataset(root)
    with pytest.raises(ValueError, match=r"im\.png.*size"):
        dataset[0]
