"""COCO instance json as training data: decoding, labels, crowd regions, overlaps, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _coco_instances_support import (
    CROWD_BOX,
    SYNTHETIC_TO_CATEGORY,
    uncompressed_rle,
    write_synthetic_coco,
)
from PIL import Image

from maskformer.data.coco_instances import (
    CocoInstanceDataset,
    instance_label_map,
    original_category_ids,
    read_coco_instances,
)
from maskformer.data.synthetic import SyntheticShapesDataset
from maskformer.utils.coco import encode_rle

HEIGHT, WIDTH = 10, 12


def _rect(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


# Hand-made objects: a large box (compressed RLE, category 7), a small square on it (polygon,
# category 3), a separate box (uncompressed RLE, category 3) and a crowd region (category 7)
# that overlaps the large box.
BIG = _rect(1, 1, 9, 8)
SMALL = _rect(3, 4, 6, 7)  # polygon corners (4,3)-(7,6): COCO pixel edges sit on integers
SIDE = _rect(2, 9, 8, 11)
CROWD = _rect(0, 0, 3, 4)


def _write(folder: Path, data: dict, images: dict[str, tuple[int, int]] | None = None) -> Path:
    image_dir = folder / "images"
    image_dir.mkdir(exist_ok=True)
    for name, (height, width) in (images or {"a.png": (HEIGHT, WIDTH)}).items():
        Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(image_dir / name)
    json_file = folder / "instances.json"
    json_file.write_text(json.dumps(data))
    return json_file


def _hand_made() -> dict:
    return {
        "images": [
            {"id": 4, "file_name": "a.png", "height": HEIGHT, "width": WIDTH},
            {"id": 9, "file_name": "b.png", "height": HEIGHT, "width": WIDTH},
        ],
        "categories": [{"id": 7, "name": "box"}, {"id": 3, "name": "square"}],
        "annotations": [
            {"id": 1, "image_id": 4, "category_id": 7, "segmentation": encode_rle(BIG[None])[0]},
            {"id": 2, "image_id": 4, "category_id": 3, "segmentation": [[4, 3, 7, 3, 7, 6, 4, 6]]},
            {"id": 3, "image_id": 4, "category_id": 3, "segmentation": uncompressed_rle(SIDE)},
            {
                "id": 4,
                "image_id": 4,
                "category_id": 7,
                "iscrowd": 1,
                "segmentation": uncompressed_rle(CROWD),
            },
        ],
    }


@pytest.fixture
def hand_made(tmp_path: Path) -> CocoInstanceDataset:
    json_file = _write(tmp_path, _hand_made(), {"a.png": (HEIGHT, WIDTH), "b.png": (HEIGHT, WIDTH)})
    return CocoInstanceDataset(json_file, tmp_path / "images")


def test_labels_are_categories_sorted_by_id(hand_made: CocoInstanceDataset) -> None:
    assert hand_made.category_ids == [3, 7]
    assert hand_made.id2label == {0: "square", 1: "box"}
    assert hand_made.thing_ids == [0, 1]
    assert hand_made.num_labels == 2
    assert len(hand_made) == 2


def test_targets_of_polygons_rle_overlap_and_crowd(hand_made: CocoInstanceDataset) -> None:
    sample = hand_made[0]
    masks, classes = sample["mask_labels"], sample["class_labels"]
    assert sample["image_id"] == "4"
    assert classes.tolist() == [1, 0, 0]  # box, square, square: annotation order, crowd left out
    crowd_only = CROWD & ~(BIG | SMALL | SIDE)
    # The small square is on top of the big box: the box loses those pixels.
    expected = [BIG & ~SMALL, SMALL, SIDE]
    for mask, want in zip(masks, expected):
        assert torch.equal(
            mask[torch.from_numpy(crowd_only)], torch.full((int(crowd_only.sum()),), 255.0)
        )
        assert torch.equal(
            mask[torch.from_numpy(~crowd_only)], torch.from_numpy(want[~crowd_only]).float()
        )
    # Crowd pixels under the box stay supervised (the box owns them).
    assert (masks[0][torch.from_numpy(CROWD & BIG)] == 1).all()


def test_image_without_annotations_has_no_targets(hand_made: CocoInstanceDataset) -> None:
    sample = hand_made[1]
    assert sample["mask_labels"].shape == (0, HEIGHT, WIDTH)
    assert sample["class_labels"].shape == (0,)


def test_smaller_object_on_top_whatever_the_order() -> None:
    big, small = BIG, SMALL
    for masks in (np.stack([big, small]), np.stack([small, big])):
        label_map, values = instance_label_map(masks, np.zeros_like(big), ignore_index=255)
        small_value = values[0] if masks[0].sum() < masks[1].sum() else values[1]
        assert (label_map[small] == int(small_value)).all()
        assert len(np.unique(label_map)) == 3  # two objects and the background value


def test_synthetic_export_reads_back(tmp_path: Path) -> None:
    json_file, image_dir = write_synthetic_coco(tmp_path, num_images=4, image_size=48)
    dataset = CocoInstanceDataset(json_file, image_dir)
    assert dataset.category_ids == sorted(SYNTHETIC_TO_CATEGORY.values())
    assert len(dataset) == 4
    source = SyntheticShapesDataset(4, image_size=48)
    for index in range(3):
        _, _, panoptic, segments = source.get_ground_truth(index)
        things = [s for s in segments if s["category_id"] in SYNTHETIC_TO_CATEGORY]
        sample = dataset[index]
        expected = [
            dataset.category_ids.index(SYNTHETIC_TO_CATEGORY[s["category_id"]]) for s in things
        ]
        assert sample["class_labels"].tolist() == expected
        # RLE objects (styles 1 and 2 of the rotation) hold exactly their visible pixels, and the
        # synthetic visible masks do not overlap, so a mask differs from its source only where a
        # smaller polygon hull (style 0) was painted over it, or in the crowd box.
        for mask, segment in zip(sample["mask_labels"], things):
            source_mask = torch.from_numpy(panoptic == segment["id"])
            assert (mask[source_mask] != 0).float().mean() > 0.6
    crowd = dataset[0]["mask_labels"]
    x, y, w, h = CROWD_BOX
    region = torch.zeros(crowd.shape[1:], dtype=torch.bool)
    region[y : y + h, x : x + w] = True
    assert ((crowd == 255).any(0) <= region).all()  # ignored pixels only inside the crowd box
    assert (crowd == 255).any()
    assert dataset[3]["mask_labels"].shape[0] == 0


def test_read_index_groups_annotations(tmp_path: Path) -> None:
    index = read_coco_instances(_write(tmp_path, _hand_made()))
    assert [len(index.annotations[i]) for i in (4, 9)] == [4, 0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("images"), "not a COCO instance json"),
        (
            lambda d: d["annotations"][0].update(segments_info=[]),
            "COCO panoptic json",
        ),
        (
            lambda d: d["annotations"][1].update(segmentation=[[1, 1, 5, 5]]),
            "annotation 2: a polygon needs at least 3 points",
        ),
        (lambda d: d["annotations"][2].update(category_id=8), "annotation 3 has category_id 8"),
        (lambda d: d["annotations"][0].update(image_id=55), "annotation 1 refers to image_id 55"),
        (lambda d: d["annotations"][0].update(segmentation=[]), "annotation 1: 'segmentation'"),
        (lambda d: d["categories"].append({"id": 3, "name": "x"}), "category id 3 appears twice"),
    ],
)
def test_bad_json_is_one_clear_error(tmp_path: Path, change, message: str) -> None:
    data = _hand_made()
    change(data)
    json_file = _write(tmp_path, data, {"a.png": (HEIGHT, WIDTH), "b.png": (HEIGHT, WIDTH)})
    with pytest.raises(ValueError, match=message) as error:
        CocoInstanceDataset(json_file, tmp_path / "images")
    assert str(json_file) in str(error.value)


def test_not_json_and_not_a_dict(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoInstanceDataset(bad, tmp_path / "images")
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a COCO instance json"):
        CocoInstanceDataset(bad, tmp_path / "images")


def test_missing_image_file_names_it(tmp_path: Path) -> None:
    json_file = _write(tmp_path, _hand_made())  # b.png is not written
    with pytest.raises(FileNotFoundError, match=r"image 9 .*b\.png"):
        CocoInstanceDataset(json_file, tmp_path / "images")


def test_rle_of_another_size_and_image_of_another_size(tmp_path: Path) -> None:
    data = _hand_made()
    data["annotations"][0]["segmentation"] = encode_rle(np.ones((1, 5, 5), dtype=bool))[0]
    json_file = _write(tmp_path, data, {"a.png": (HEIGHT, WIDTH), "b.png": (HEIGHT, WIDTH)})
    with pytest.raises(ValueError, match=r"instances\.json: annotation 1: RLE size \[5, 5\]"):
        CocoInstanceDataset(json_file, tmp_path / "images")
    del data["images"][0]["height"]  # no size in the json: checked against the image file
    json_file = _write(tmp_path, data, {"a.png": (HEIGHT, WIDTH), "b.png": (HEIGHT, WIDTH)})
    with pytest.raises(ValueError, match=r"annotation 1: RLE size \[5, 5\]"):
        CocoInstanceDataset(json_file, tmp_path / "images")[0]
    json_file = _write(tmp_path, _hand_made(), {"a.png": (HEIGHT, WIDTH), "b.png": (4, 4)})
    with pytest.raises(ValueError, match=r"b\.png is 4x4 pixels"):
        CocoInstanceDataset(json_file, tmp_path / "images")[1]


def test_original_category_ids_of_a_config() -> None:
    from maskformer import MaskFormerConfig

    config = MaskFormerConfig(id2label={0: "square", 1: "box"})
    assert original_category_ids(config) is None
    config.label_category_ids = [3, 7]
    assert original_category_ids(MaskFormerConfig.from_dict(config.to_diff_dict())) == [3, 7]
    config.label_category_ids = [3]
    with pytest.raises(ValueError, match="one category id per label"):
        original_category_ids(config)
