"""Augmentations: deterministic per (seed, epoch, index), correct geometry, label padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from torch.utils.data import DataLoader

from maskformer.data.ade20k import ADE20KDataset
from maskformer.data.coco_panoptic import CocoPanopticDataset
from maskformer.data.collate import collate_batch
from maskformer.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    PhotometricJitter,
    TrainTransform,
)


def ade(**kwargs) -> ADE20KDataset:
    transform = TrainTransform(crop_size=(96, 128), base_size=96, **kwargs)
    return ADE20KDataset(SHARED_DATA / "ade20k_sample", transform=transform)


def same_sample(a: dict, b: dict) -> bool:
    return (
        torch.equal(a["pixel_values"], b["pixel_values"])
        and torch.equal(a["mask_labels"], b["mask_labels"])
        and torch.equal(a["class_labels"], b["class_labels"])
    )


@requires_shared_data
def test_augmentation_is_deterministic_per_seed_epoch_index():
    dataset = ade()
    first = dataset[1]
    assert same_sample(first, ade()[1])  # a fresh dataset, same seed/epoch/index
    assert first["pixel_values"].shape == (3, 96, 128)
    assert first["mask_labels"].shape[1:] == (96, 128)
    dataset.set_epoch(1)
    assert not same_sample(first, dataset[1])
    dataset.set_epoch(0)
    assert same_sample(first, dataset[1])
    assert not same_sample(
        first, ADE20KDataset(SHARED_DATA / "ade20k_sample", transform=dataset.transform, seed=1)[1]
    )


@requires_shared_data
def test_samples_do_not_depend_on_dataloader_workers():
    dataset = ade()
    dataset.set_epoch(3)
    loaders = [
        DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=collate_batch)
        for workers in (0, 2)
    ]
    batches = [list(loader) for loader in loaders]
    for serial, parallel in zip(*batches):
        assert torch.equal(serial["pixel_values"], parallel["pixel_values"])
        for a, b in zip(serial["mask_labels"], parallel["mask_labels"]):
            assert torch.equal(a, b)


@requires_shared_data
def test_panoptic_augmentation_keeps_segments_consistent():
    transform = TrainTransform(crop_size=128, base_size=128)
    coco = SHARED_DATA / "coco_panoptic_sample"
    dataset = CocoPanopticDataset(
        coco / "panoptic_examples.json", coco / "images", coco / "panoptic", transform=transform
    )
    for epoch in range(3):
        dataset.set_epoch(epoch)
        sample = dataset[1]
        masks = sample["mask_labels"]
        assert masks.shape[1:] == (128, 128)
        assert len(masks) == len(sample["class_labels"]) > 0
        # Segments are disjoint and each kept segment has pixels.
        assert (masks == 1).sum(0).max() <= 1
        assert (masks == 1).flatten(1).any(1).all()
        # The ignored region is shared by all masks.
        assert torch.equal((masks == 255).all(0), (masks == 255).any(0))


def column_image(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose red channel and label both encode the column index."""
    columns = np.tile(np.arange(width, dtype=np.int64), (height, 1))
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = columns * 10
    return image, columns


def test_flip_moves_image_and_labels_together():
    image, labels = column_image(8, 12)
    transform = TrainTransform(
        crop_size=(8, 12), base_size=8, scale_range=(1.0, 1.0), flip_prob=1.0, jitter=False
    )
    pixels, out = transform(image, labels, torch.Generator().manual_seed(0))
    assert torch.equal(out[0], torch.arange(11, -1, -1))
    red = pixels[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    torch.testing.assert_close(red[0] * 255, out[0].float() * 10, rtol=0, atol=1e-3)


def test_small_images_are_padded_with_ignore_and_zero():
    image, labels = column_image(10, 10)
    transform = TrainTransform(
        crop_size=(32, 24), base_size=10, scale_range=(1.0, 1.0), flip_prob=0.0, ignore_index=7
    )
    pixels, out = transform(image, labels % 5, torch.Generator().manual_seed(0))
    assert pixels.shape == (3, 32, 24) and out.shape == (32, 24)
    assert out[10:].eq(7).all() and out[:, 10:].eq(7).all()
    assert pixels[:, 10:].eq(0).all() and pixels[:, :, 10:].eq(0).all()
    assert out[:10, :10].lt(5).all()


def test_random_scale_stays_in_range():
    image, labels = column_image(40, 60)
    transform = TrainTransform(crop_size=1000, base_size=20, flip_prob=0.0, jitter=False)
    short_sides = set()
    for seed in range(20):
        _, out = transform(image, labels, torch.Generator().manual_seed(seed))
        valid = out != 255
        short_sides.add(int(valid.any(1).sum()))  # rows of real pixels = the resized short side
    assert min(short_sides) >= 10 and max(short_sides) <= 40 and len(short_sides) > 5


def test_photometric_jitter_changes_colours_within_range():
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    jitter = PhotometricJitter()
    outputs = [jitter(image, torch.Generator().manual_seed(seed)) for seed in range(8)]
    assert all(out.min() >= 0 and out.max() <= 255 for out in outputs)
    assert sum(not torch.allclose(out, image) for out in outputs) >= 6
    assert torch.equal(outputs[3], jitter(image, torch.Generator().manual_seed(3)))


def test_eval_transform_normalises_only():
    image, labels = column_image(5, 7)
    pixels, out = EvalTransform()(image, labels)
    assert pixels.shape == (3, 5, 7) and torch.equal(out, torch.from_numpy(labels))
    torch.testing.assert_close(pixels[1], torch.full((5, 7), -IMAGENET_MEAN[1] / IMAGENET_STD[1]))
    resized, out = EvalTransform(short_side=10)(image, labels)
    assert resized.shape == (3, 10, 14) and out.shape == (10, 14)


@requires_shared_data
def test_transform_ignore_index_must_match_dataset():
    with pytest.raises(ValueError, match="ignore_index"):
        ADE20KDataset(
            SHARED_DATA / "ade20k_sample",
            transform=TrainTransform(ignore_index=0),
            ignore_index=255,
        )
