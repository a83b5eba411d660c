"""ADE20K-style folders: targets consistent with the label maps, clear errors for bad folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from PIL import Image

from maskformer.data.ade20k import ADE20KDataset

ADE_ROOT = SHARED_DATA / "ade20k_sample"


@requires_shared_data
def test_sample_targets_match_the_label_map():
    dataset = ADE20KDataset(ADE_ROOT)
    assert len(dataset) == 3 and dataset.num_labels == 150
    assert dataset.id2label[0] == "wall" and dataset.id2label[2] == "sky"
    sample = dataset[0]
    raw = torch.from_numpy(np.array(Image.open(ADE_ROOT / "annotations" / "ADE_val_00000001.png")))
    raw = raw.to(torch.int64)
    assert sample["image_id"] == "ADE_val_00000001"
    assert sample["pixel_values"].shape == (3, 512, 683)
    assert sample["pixel_values"].dtype == torch.float32
    masks, classes = sample["mask_labels"], sample["class_labels"]
    assert masks.shape[1:] == (512, 683) and masks.dtype == torch.float32
    assert classes.dtype == torch.int64
    # reduce labels: 0 -> ignored, k -> k - 1; one mask per class present, in increasing order.
    expected_classes = torch.unique(raw[raw > 0]) - 1
    assert torch.equal(classes, expected_classes)
    for mask, label in zip(masks, classes):
        assert torch.equal(mask == 1, raw == label + 1)
        assert torch.equal(mask == 255, raw == 0)
    assert set(masks.unique().tolist()) <= {0.0, 1.0, 255.0}


@requires_shared_data
def test_without_reduce_labels_class_zero_is_a_class():
    dataset = ADE20KDataset(ADE_ROOT, reduce_labels=False, num_labels=151)
    assert dataset.id2label[0] == "other" and dataset.id2label[1] == "wall"
    sample = dataset[0]
    assert 0 in sample["class_labels"].tolist()
    assert not (sample["mask_labels"] == 255).any()


@requires_shared_data
def test_labels_beyond_num_labels_name_the_file():
    dataset = ADE20KDataset(ADE_ROOT, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    with pytest.raises(ValueError, match=r"ADE_val_00000001\.png.*num_labels=3"):
        dataset[0]


@pytest.fixture
def small_folder(tmp_path):
    """A two-image ADE20K folder built in tmp_path."""
    root = tmp_path / "ade"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for stem, value in (("a", 1), ("b", 2)):
        Image.fromarray(np.full((6, 8, 3), 100, dtype=np.uint8)).save(
            root / "images" / f"{stem}.jpg"
        )
        label = np.zeros((6, 8), dtype=np.uint8)
        label[2:, 3:] = value
        Image.fromarray(label).save(root / "annotations" / f"{stem}.png")
    return root


def test_small_folder_reads(small_folder):
    dataset = ADE20KDataset(small_folder, num_labels=4)
    assert dataset.id2label == {0: "0", 1: "1", 2: "2", 3: "3"}
    sample = dataset[1]
    assert sample["class_labels"].tolist() == [1]
    assert sample["mask_labels"].shape == (1, 6, 8)
    assert sample["mask_labels"][0, 2:, 3:].eq(1).all()
    assert sample["mask_labels"][0, :2].eq(255).all()


def test_missing_folder_is_named(small_folder):
    shutil.rmtree(small_folder / "annotations")
    with pytest.raises(FileNotFoundError, match="annotations"):
        ADE20KDataset(small_folder)


def test_image_without_map_is_named(small_folder):
    (small_folder / "annotations" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.jpg"):
        ADE20KDataset(small_folder)


def test_map_without_image_is_named(small_folder):
    (small_folder / "images" / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.png"):
        ADE20KDataset(small_folder)


def test_empty_images_folder(small_folder):
    for path in (small_folder / "images").iterdir():
        path.unlink()
    for path in (small_folder / "annotations").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match="no images"):
        ADE20KDataset(small_folder)


def test_map_of_another_size_is_named(small_folder):
    Image.fromarray(np.ones((5, 8), dtype=np.uint8)).save(small_folder / "annotations" / "b.png")
    dataset = ADE20KDataset(small_folder, num_labels=4)  # sizes are checked lazily
    dataset[0]
    with pytest.raises(ValueError, match=r"b\.png.*size"):
        dataset[1]


def test_rgb_map_is_rejected(small_folder):
    Image.fromarray(np.ones((6, 8, 3), dtype=np.uint8)).save(small_folder / "annotations" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png.*single-channel"):
        ADE20KDataset(small_folder, num_labels=4)[0]


def test_index_out_of_range(small_folder):
    with pytest.raises(IndexError):
        ADE20KDataset(small_folder, num_labels=4)[2]
