"""Target encoding: label maps to per-image binary ``mask_labels`` and ``class_labels``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from maskformer.processing.inputs import label_map_to_array

_SMALL_IDS = 1 << 20  # below this, tables indexed by id are cheaper than sorting


def _reduced(ids: np.ndarray, reduce_labels: bool, ignore_index: int | None) -> np.ndarray:
    """``ids`` as int64; with ``reduce_labels`` 0 becomes ``ignore_index`` and k becomes k - 1."""
    ids = ids.astype(np.int64, copy=False)
    return np.where(ids == 0, ignore_index, ids - 1) if reduce_labels else ids


def present_ids(ids: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Sorted distinct values of a non-negative int64 map, ``ignore_index`` left out."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    largest = int(ids.max())
    if largest < _SMALL_IDS:
        labels = np.flatnonzero(np.bincount(ids.ravel(), minlength=largest + 1)).astype(np.int64)
    else:
        labels = np.unique(ids)
    return labels if ignore_index is None else labels[labels != ignore_index]


def label_positions(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Position of each pixel's id in the sorted, non-empty ``labels`` (-1 where absent), same
    shape as ``ids``."""
    largest = int(labels[-1])
    if largest < _SMALL_IDS:
        index_of_label = np.full(largest + 2, -1, dtype=np.int64)
        index_of_label[labels] = np.arange(labels.size)
        return index_of_label[np.minimum(ids, largest + 1)]
    positions = np.minimum(np.searchsorted(labels, ids), labels.size - 1)
    return np.where(labels[positions] == ids, positions, -1)


def classes_of(
    labels: np.ndarray, mapping: dict[int, int] | None, reduce_labels: bool
) -> np.ndarray:
    """Class id ``(n,)`` int64 of each label: the label itself, or ``mapping[label]`` (an
    instance-to-class dict over the *unreduced* ids)."""
    if mapping is None:
        return labels.astype(np.int64)
    shift = 1 if reduce_labels else 0
    try:
        classes = [mapping[int(label) + shift] - shift for label in labels]
    except KeyError as error:
        raise KeyError(
            f"instance id {error.args[0]} of `segmentation_maps` is missing from "
            "`instance_id_to_semantic_id`"
        ) from None
    return np.asarray(classes, dtype=np.int64)


def convert_segmentation_map_to_binary_masks(
    segmentation_map: Any,
    instance_id_to_semantic_id: dict[int, int] | None = None,
    ignore_index: int | None = None,
    reduce_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary masks ``(n, H, W)`` float32 and class ids ``(n,)`` int64, one per label present.

    With ``reduce_labels`` 0 becomes ``ignore_index`` and every other id k becomes k - 1. Labels
    are taken in ascending order, ``ignore_index`` left out; an empty or all-ignored map gives
    ``(0, H, W)`` and ``(0,)``. ``instance_id_to_semantic_id`` maps instance ids to classes.
    """
    if reduce_labels and ignore_index is None:
        raise ValueError("`reduce_labels=True` needs an `ignore_index`")
    ids = _reduced(label_map_to_array(segmentation_map), reduce_labels, ignore_index)
    labels = present_ids(ids, ignore_index)
    masks = (ids[None] == labels[:, None, None]).astype(np.float32)
    return masks, classes_of(labels, instance_id_to_semantic_id, reduce_labels)


def _one_hot_padded(
    ids: np.ndarray, labels: np.ndarray, padded: tuple[int, int], fill: float
) -> np.ndarray:
    """``(n, *padded)`` float32: 1 where ``ids`` (top-left ``(h, w)``) equals ``labels[k]``, 0
    elsewhere in the image, ``fill`` in the padding strips."""
    pad_h, pad_w = padded
    h, w = ids.shape
    # One-hot by scatter into zeroed (lazily allocated) memory: one write per labelled pixel.
    masks = np.zeros((labels.size, pad_h, pad_w), dtype=np.float32)
    if fill:
        masks[:, h:, :] = fill
        masks[:, :h, w:] = fill
    if labels.size:
        label_index = label_positions(ids, labels)  # (h, w), -1 = ignored
        pixel = (np.arange(h) * pad_w)[:, None] + np.arange(w)
        flat = label_index * (pad_h * pad_w) + pixel
        np.put(masks, flat[label_index >= 0], 1.0)
    return masks


def encode_labels(
    label_maps: list[np.ndarray],
    instance_id_to_semantic_id: dict[int, int] | list[dict[int, int]] | None,
    ignore_index: int | None,
    reduce_labels: bool,
    padded: tuple[int, int],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-image ``mask_labels`` (float32 ``(n_i, *padded)``; the padding holds
    ``ignore_index``, or 0 when it is None) and ``class_labels`` (int64 ``(n_i,)``) of 2-D
    integer ``label_maps``, each the size of its image."""
    if reduce_labels and ignore_index is None:
        raise ValueError("`do_reduce_labels=True` needs an `ignore_index`")
    if isinstance(instance_id_to_semantic_id, (list, tuple)):
        if len(instance_id_to_semantic_id) != len(label_maps):
            raise ValueError(
                f"`instance_id_to_semantic_id` has {len(instance_id_to_semantic_id)} entries "
                f"for {len(label_maps)} segmentation maps"
            )
        mappings = list(instance_id_to_semantic_id)
    else:
        mappings = [instance_id_to_semantic_id] * len(label_maps)
    fill = 0 if ignore_index is None else ignore_index
    mask_labels, class_labels = [], []
    for label_map, mapping in zip(label_maps, mappings):
        ids = _reduced(label_map, reduce_labels, ignore_index)
        labels = present_ids(ids, ignore_index)
        mask_labels.append(torch.from_numpy(_one_hot_padded(ids, labels, padded, fill)))
        class_labels.append(torch.from_numpy(classes_of(labels, mapping, reduce_labels)))
    return mask_labels, class_labels
