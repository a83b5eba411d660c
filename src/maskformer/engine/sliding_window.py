"""Sliding-window inference for images larger than the model's training scale.

The image is cut into overlapping tiles of ``window`` pixels at its own resolution (no resizing:
each tile is normalised by the processor with ``do_resize=False``), the model runs on batches of
tiles, and the tiles' predictions are put back together:

* **semantic**: each tile's per-pixel class scores (the semantic post-processor's
  ``softmax(class) · sigmoid(mask)`` at mask resolution, 1/4 of the tile) are blended with weights
  that fall off linearly towards a tile edge *where a neighbouring tile overlaps it* (an edge on
  the image border keeps weight 1, so an image covered by one tile gives exactly whole-image
  inference). The blended scores are resized to full resolution (bilinear, as the post-processor
  does) and reduced to class ids band by band, so memory holds one row of tiles at 1/4
  resolution and a few full-resolution rows, never the whole image's class scores.
* **panoptic / instance**: each tile is post-processed on its own (the processor's thresholds).
  Every output pixel takes its segment from the tile whose centre region it lies in (tiles split
  each overlap in the middle). A segment cut by a tile border becomes one segment: two segments of
  neighbouring tiles with the same class are merged when their masks overlap in the shared band
  with an intersection over union of at least ``merge_iou`` (default 0.5); merging is transitive
  (union-find), and the merged segment's score is the area-weighted mean of its parts' scores.

Tile starts are multiples of 4 (the mask stride) with the last tile flush with the image's end;
the image must be at least as large as the window in each dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maskformer.engine.tiles import (  # noqa: F401 - check_window etc. re-exported
    MASK_STRIDE,
    check_window,
    edge_ramp,
    run_tiles,
    tile_grid,
    tile_starts,
    tile_weights,
)

_EMIT_ROWS = 8  # mask-resolution rows resized and reduced at a time (bounds the full-size scores)


# ---------------------------------------------------------------------------------- semantic
def sliding_window_semantic(
    model: torch.nn.Module,
    processor: Any,
    image: Image.Image,
    window: Sequence[int] = (512, 512),
    overlap: float = 1 / 3,
    batch_size: int = 4,
) -> torch.Tensor:
    """Semantic class ids ``(height, width)`` int64 of a large ``image`` by sliding window."""
    array, rows, columns, padded_h, padded_w = tile_grid(image, window, overlap)
    win_h, win_w = window
    quarter_w = padded_w // MASK_STRIDE
    column_weights = [tile_weights(columns, j, win_w) for j in range(len(columns))]
    output = torch.empty(padded_h, padded_w, dtype=torch.int64)
    band_top = 0  # mask-resolution row of band[:, 0]
    band: torch.Tensor | None = None  # (classes, rows, quarter_w) weighted score sums
    band_weight: torch.Tensor | None = None  # (rows, quarter_w)
    ready: list[torch.Tensor] = []  # finished normalised rows, not yet written, in order
    ready_top = 0  # mask-resolution row of the first ready row
    halo_above: torch.Tensor | None = None  # the last row written, for the resize

    def emit(final: bool) -> None:
        nonlocal ready, ready_top, halo_above
        rows_ready = torch.cat(ready, dim=1) if ready else None
        if rows_ready is None:
            return
        count = rows_ready.shape[1] if final else rows_ready.shape[1] - 1  # keep a halo below
        start = 0
        while start < count:
            stop = min(start + _EMIT_ROWS, count)
            pieces, offset = [], 0
            if ready_top + start > 0:
                above = halo_above if start == 0 else rows_ready[:, start - 1 : start]
                pieces.append(above)
                offset = 1
            pieces.append(rows_ready[:, start:stop])
            if stop < rows_ready.shape[1]:
                pieces.append(rows_ready[:, stop : stop + 1])
            chunk = torch.cat(pieces, dim=1)
            full = F.interpolate(
                chunk[None],
                size=(chunk.shape[1] * MASK_STRIDE, padded_w),
                mode="bilinear",
                align_corners=False,
            )[0]
            top = offset * MASK_STRIDE
            labels = full[:, top : top + (stop - start) * MASK_STRIDE].argmax(dim=0)
            first = (ready_top + start) * MASK_STRIDE
            output[first : first + labels.shape[0]] = labels
            start = stop
        halo_above = rows_ready[:, count - 1 : count]
        ready = [rows_ready[:, count:]] if count < rows_ready.shape[1] else []
        ready_top += count

    for i, top in enumerate(rows):
        row_weights = tile_weights(rows, i, win_h)
        tiles = [array[top : top + win_h, left : left + win_w] for left in columns]
        scores_per_tile = []
        for start in range(0, len(tiles), batch_size):
            class_logits, mask_logits = run_tiles(
                model, processor, tiles[start : start + batch_size]
            )
            class_probs = class_logits.softmax(dim=-1)[..., :-1]
            scores_per_tile.append(
                torch.einsum("bqc,bqhw->bchw", class_probs, mask_logits.sigmoid()).cpu()
            )
        scores = torch.cat(scores_per_tile)  # (tiles, classes, win_h/4, win_w/4)
        top_q = top // MASK_STRIDE
        tile_rows = win_h // MASK_STRIDE
        if band is None:
            band = scores.new_zeros(scores.shape[1], tile_rows, quarter_w)
            band_weight = scores.new_zeros(tile_rows, quarter_w)
            band_top = top_q
        else:
            # rows above this tile row are final: normalise them and hand them to emit()
            done = top_q - band_top
            ready.append(band[:, :done] / band_weight[:done])
            keep = band.shape[1] - done
            new_band = band.new_zeros(band.shape[0], tile_rows, quarter_w)
            new_weight = band_weight.new_zeros(tile_rows, quarter_w)
            new_band[:, :keep] = band[:, done:]
            new_weight[:keep] = band_weight[done:]
            band, band_weight, band_top = new_band, new_weight, top_q
            emit(final=False)
        for j, left in enumerate(columns):
            weights = row_weights[:, None] * column_weights[j][None, :]
            left_q = left // MASK_STRIDE
            span = slice(left_q, left_q + win_w // MASK_STRIDE)
            band[:, :, span] += scores[j] * weights
            band_weight[:, span] += weights
    ready.append(band / band_weight)
    emit(final=True)
    return output[: image.height, : image.width].clone()


# -------------------------------------------------------------------------- panoptic, instance
class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def _cut_points(starts: list[int], window: int, length: int) -> list[int]:
    """Ownership boundaries: tile ``i`` owns ``[cuts[i], cuts[i + 1])`` (overlaps split in the middle)."""
    cuts = [0]
    for i in range(1, len(starts)):
        cuts.append((starts[i] + starts[i - 1] + window) // 2)
    cuts.append(length)
    return cuts


def _merge_pairs(
    first: np.ndarray, second: np.ndarray, labels: dict[int, int], merge_iou: float
) -> list[tuple[int, int]]:
    """Pairs of segment ids (globally unique) with one class that overlap with IoU ≥ merge_iou in
    a band seen by both tiles (``first`` and ``second`` are that band's id maps, 0 = none)."""
    valid = (first > 0) & (second > 0)
    if not valid.any():
        return []
    pairs, counts = np.unique(np.stack([first[valid], second[valid]]), axis=1, return_counts=True)
    area_first = dict(zip(*np.unique(first[first > 0], return_counts=True)))
    area_second = dict(zip(*np.unique(second[second > 0], return_counts=True)))
    merged = []
    for (a, b), shared in zip(pairs.T.tolist(), counts.tolist()):
        if labels[a] != labels[b]:
            continue
        union = area_first[a] + area_second[b] - shared
        if shared / union >= merge_iou:
            merged.append((a, b))
    return merged


def sliding_window_segments(
    model: torch.nn.Module,
    processor: Any,
    image: Image.Image,
    task: str = "panoptic",
    window: Sequence[int] = (512, 512),
    overlap: float = 1 / 3,
    batch_size: int = 4,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: set[int] | None = None,
    merge_iou: float = 0.5,
) -> dict[str, Any]:
    """Panoptic or instance segments of a large ``image`` by sliding window.

    Returns ``{"segmentation": (height, width) int32 ids (0 = none), "segments_info": [{"id",
    "label_id", "was_fused", "score"}]}`` (the panoptic post-processor's form; for ``"instance"``
    the segments are the instance post-processor's, without overlaps).
    """
    if task not in ("panoptic", "instance"):
        raise ValueError(f"task must be 'panoptic' or 'instance' here, got {task!r}")
    if not 0.0 < merge_iou <= 1.0:
        raise ValueError(f"merge_iou must lie in (0, 1], got {merge_iou}")
    array, rows, columns, padded_h, padded_w = tile_grid(image, window, overlap)
    win_h, win_w = window
    grid = [(top, left) for top in rows for left in columns]
    tile_maps: dict[tuple[int, int], np.ndarray] = {}
    labels: dict[int, int] = {}
    scores: dict[int, float] = {}
    fused: dict[int, bool] = {}
    next_id = 1
    for start in range(0, len(grid), batch_size):
        batch = grid[start : start + batch_size]
        tiles = [array[t : t + win_h, left : left + win_w] for t, left in batch]
        class_logits, mask_logits = run_tiles(model, processor, tiles)
        for index, (top, left) in enumerate(batch):
            single = SimpleNamespace(
                class_queries_logits=class_logits[index : index + 1],
                masks_queries_logits=mask_logits[index : index + 1],
            )
            result = _post_process(
                processor,
                single,
                task,
                (win_h, win_w),
                threshold,
                mask_threshold,
                overlap_mask_area_threshold,
                label_ids_to_fuse,
            )
            local = result["segmentation"].cpu().numpy().astype(np.int64)
            remap = np.zeros(int(local.max(initial=0)) + 1, dtype=np.int64)
            for info in result["segments_info"]:
                remap[int(info["id"])] = next_id
                labels[next_id] = int(info["label_id"])
                scores[next_id] = float(info["score"])
                fused[next_id] = bool(info.get("was_fused", False))
                next_id += 1
            tile_maps[(top, left)] = remap[np.clip(local, 0, None)]

    union = _UnionFind()
    for (top, left), ids in tile_maps.items():
        for neighbour in (
            (top, columns[columns.index(left) + 1]) if left != columns[-1] else None,
            (rows[rows.index(top) + 1], left) if top != rows[-1] else None,
        ):
            if neighbour is None:
                continue
            other = tile_maps[neighbour]
            n_top, n_left = neighbour
            y0, y1 = max(top, n_top), min(top + win_h, n_top + win_h)
            x0, x1 = max(left, n_left), min(left + win_w, n_left + win_w)
            if y1 <= y0 or x1 <= x0:
                continue
            band_first = ids[y0 - top : y1 - top, x0 - left : x1 - left]
            band_second = other[y0 - n_top : y1 - n_top, x0 - n_left : x1 - n_left]
            for a, b in _merge_pairs(band_first, band_second, labels, merge_iou):
                union.union(a, b)

    row_cuts = _cut_points(rows, win_h, padded_h)
    column_cuts = _cut_points(columns, win_w, padded_w)
    canvas = np.zeros((padded_h, padded_w), dtype=np.int64)
    for i, top in enumerate(rows):
        for j, left in enumerate(columns):
            ys = slice(row_cuts[i], row_cuts[i + 1])
            xs = slice(column_cuts[j], column_cuts[j + 1])
            ids = tile_maps[(top, left)]
            canvas[ys, xs] = ids[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left]
    canvas = canvas[: image.height, : image.width]
    present, areas = np.unique(canvas[canvas > 0], return_counts=True)
    groups: dict[int, list[tuple[int, int]]] = {}
    for segment, area in zip(present.tolist(), areas.tolist()):
        groups.setdefault(union.find(segment), []).append((segment, area))
    lookup = np.zeros(next_id, dtype=np.int32)
    segments_info = []
    for new_id, (_, members) in enumerate(sorted(groups.items()), start=1):
        total = sum(area for _, area in members)
        for segment, _ in members:
            lookup[segment] = new_id
        segments_info.append(
            {
                "id": new_id,
                "label_id": labels[members[0][0]],
                "was_fused": any(fused[s] for s, _ in members),
                "score": round(sum(scores[s] * a for s, a in members) / total, 6),
            }
        )
    return {"segmentation": torch.from_numpy(lookup[canvas]), "segments_info": segments_info}


def _post_process(
    processor: Any,
    outputs: Any,
    task: str,
    size: tuple[int, int],
    threshold: float,
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    label_ids_to_fuse: set[int] | None,
) -> dict[str, Any]:
    """One tile's segments as an id map ``(h, w)`` (0 = none) and their ``segments_info``."""
    if task == "panoptic":
        from maskformer.engine.segment import post_process

        return post_process(
            processor, outputs, task, size, threshold, mask_threshold,
            overlap_mask_area_threshold, label_ids_to_fuse,
        )  # fmt: skip
    result = processor.post_process_instance_segmentation(
        outputs,
        threshold=threshold,
        mask_threshold=mask_threshold,
        overlap_mask_area_threshold=overlap_mask_area_threshold,
        target_sizes=[size],
    )[0]
    ids = result["segmentation"].to(torch.int64) + 1  # instance maps use -1 for background
    infos = [dict(info, id=int(info["id"]) + 1) for info in result["segments_info"]]
    return {"segmentation": ids, "segments_info": infos}
