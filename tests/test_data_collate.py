"""collate_batch: padded shapes, padding values, pixel_mask."""

from __future__ import annotations

import pytest
import torch

from maskformer.data.collate import collate_batch


def sample(height: int, width: int, count: int, name: str) -> dict:
    masks = torch.zeros(count, height, width)
    if count:
        masks[0, 0, 0] = 1
        masks[:, -1, -1] = 255
    return {
        "pixel_values": torch.ones(3, height, width),
        "mask_labels": masks,
        "class_labels": torch.arange(count),
        "image_id": name,
    }


def test_pads_to_the_largest_sample():
    batch = collate_batch([sample(4, 6, 2, "a"), sample(5, 3, 0, "b")])
    assert batch["pixel_values"].shape == (2, 3, 5, 6)
    assert batch["pixel_mask"].dtype == torch.int64 and batch["pixel_mask"].shape == (2, 5, 6)
    assert batch["image_ids"] == ["a", "b"]
    assert [m.shape for m in batch["mask_labels"]] == [(2, 5, 6), (0, 5, 6)]
    assert [c.tolist() for c in batch["class_labels"]] == [[0, 1], []]

    first = batch["pixel_values"][0]
    assert first[:, :4, :6].eq(1).all() and first[:, 4:].eq(0).all()
    assert batch["pixel_mask"][0, :4].eq(1).all() and batch["pixel_mask"][0, 4:].eq(0).all()
    assert batch["pixel_mask"][1, :, :3].eq(1).all() and batch["pixel_mask"][1, :, 3:].eq(0).all()

    masks = batch["mask_labels"][0]
    assert masks[:, 4:].eq(255).all()  # padding is ignored
    assert masks[0, 0, 0] == 1 and masks[:, 3, 5].eq(255).all() and masks[1, 0, 0] == 0


def test_mismatched_sample_is_named():
    bad = sample(4, 4, 1, "broken")
    bad["mask_labels"] = torch.zeros(1, 3, 4)
    with pytest.raises(ValueError, match="broken"):
        collate_batch([sample(4, 4, 1, "ok"), bad])


def test_empty_batch_rejected():
    with pytest.raises(ValueError, match="at least one"):
        collate_batch([])
