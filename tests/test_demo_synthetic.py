"""The synthetic shapes data set: deterministic, well-formed labels, consistent views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskformer.data.synthetic import SyntheticShapesDataset
from maskformer.data.transforms import EvalTransform, TrainTransform


def test_same_index_gives_same_sample_and_different_indices_differ():
    first = SyntheticShapesDataset(8, image_size=64, seed=3)
    second = SyntheticShapesDataset(8, image_size=64, seed=3)
    a, b = first[5], second[5]
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.equal(a["mask_labels"], b["mask_labels"])
    assert not torch.equal(first[4]["pixel_values"], a["pixel_values"])
    other_seed = SyntheticShapesDataset(8, image_size=64, seed=4)
    assert not torch.equal(other_seed[5]["pixel_values"], a["pixel_values"])


def test_sample_follows_the_training_contract():
    dataset = SyntheticShapesDataset(4, image_size=72)
    sample = dataset[1]
    assert sample["pixel_values"].shape == (3, 72, 72)
    assert sample["pixel_values"].dtype == torch.float32
    masks, classes = sample["mask_labels"], sample["class_labels"]
    assert masks.dtype == torch.float32 and classes.dtype == torch.int64
    assert masks.shape[0] == classes.shape[0] >= 2
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    # Segments partition the image: every pixel in exactly one mask.
    assert torch.equal(masks.sum(0), torch.ones(72, 72))
    assert classes[0] == 0 and bool((classes[1:] >= 1).all() and (classes <= 3).all())
    assert sample["image_id"] == "synthetic_0_000001"
    # Normalised with the ImageNet statistics: values leave [0, 1].
    assert sample["pixel_values"].min() < 0


def test_ground_truth_views_agree():
    dataset = SyntheticShapesDataset(20, image_size=64, seed=1)
    for index in range(20):
        image, semantic, panoptic, segments_info = dataset.get_ground_truth(index)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert semantic.dtype == np.uint8 and panoptic.dtype == np.int32
        ids = sorted(info["id"] for info in segments_info)
        assert ids == sorted(np.unique(panoptic).tolist())
        for info in segments_info:
            region = panoptic == info["id"]
            assert np.all(semantic[region] == info["category_id"])
            assert info["area"] == int(region.sum()) >= 16
            assert info["isthing"] == int(info["category_id"] != 0)
        assert len(dataset[index]["class_labels"]) == len(segments_info)


def test_overlapping_instances_of_one_class_stay_separate():
    """Some images hold two touching instances of the same class, with separate ids."""
    dataset = SyntheticShapesDataset(60, image_size=64)
    found = False
    for index in range(60):
        _, semantic, panoptic, segments_info = dataset.get_ground_truth(index)
        for info in segments_info[1:]:
            region = panoptic == info["id"]
            grown = region.copy()
            grown[1:] |= region[:-1]
            grown[:-1] |= region[1:]
            neighbours = set(np.unique(panoptic[grown & ~region]).tolist()) - {info["id"], 1}
            same_class = [
                other
                for other in segments_info
                if other["id"] in neighbours and other["category_id"] == info["category_id"]
            ]
            found |= bool(same_class)
    assert found


def test_transform_uses_epoch_and_marks_ignored_pixels():
    normalise = EvalTransform()

    def drop_left_column(image, label_map, generator):
        pixels, labels = normalise(image, label_map, generator)
        labels[:, 0] = 255
        return pixels, labels

    dataset = SyntheticShapesDataset(4, image_size=64, transform=drop_left_column)
    masks = dataset[0]["mask_labels"]
    assert bool((masks[:, :, 0] == 255).all()) and set(masks[:, :, 1:].unique().tolist()) <= {0, 1}

    flip = TrainTransform(crop_size=64, base_size=64, scale_range=(1.0, 1.0), jitter=False)
    flipped = SyntheticShapesDataset(16, image_size=64, transform=flip)
    plain = SyntheticShapesDataset(16, image_size=64)
    per_epoch = []
    for epoch in (0, 1):
        flipped.set_epoch(epoch)
        per_epoch.append(
            [torch.equal(flipped[i]["pixel_values"], plain[i]["pixel_values"]) for i in range(16)]
        )
    assert per_epoch[0] != per_epoch[1]  # the flip decision depends on the epoch
    assert not all(per_epoch[0]) and any(per_epoch[0])


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapesDataset(4, image_size=8)
    with pytest.raises(IndexError):
        SyntheticShapesDataset(4)[4]
