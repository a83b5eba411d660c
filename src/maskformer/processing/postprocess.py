"""Turn MaskFormer logits into semantic, instance and panoptic segmentations.

Functions of torch tensors. ``outputs`` is anything with ``class_queries_logits``
``(batch, queries, classes + 1)`` (the last class is "no object") and ``masks_queries_logits``
``(batch, queries, height, width)``. Everything runs on the logits' device; the host reads one
batched ``.tolist()`` per image to build ``segments_info`` (and the RLE encoding, host-side by
nature), plus the sizes of data-dependent selections. On CPU, images can run two at a time on a
small thread pool, and large scratch tensors are kept per thread for the next call (see
``_map_images`` and ``_Scratch``).

The results equal transformers 4.34.1 on every input it handles correctly; the deliberate
differences are listed in the project README ("Differences from transformers 4.34.1").
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from maskformer.processing.bilinear_select import ResizedMaps, resized_argmax

TargetSizes = Sequence[tuple[int, int]] | torch.Tensor | None

# Images are post-processed two at a time on CPU (see ``_map_images``): the pool, and the
# torch thread count it was made for.
_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()
# Below this many logits per image, handing images to the pool costs more than it saves.
_POOL_MIN_ELEMENTS = 2**18


# Large scratch tensors are reused between calls, per thread: fresh memory costs a page fault
# per 4 KiB at first touch, which otherwise dominates these passes (and varies with the state of
# the C allocator). Up to this many bytes are kept per thread.
_SCRATCH_LIMIT = 64 * 2**20


class _Scratch(threading.local):
    """This thread's reusable scratch tensors, by name (an ``Allocator`` for ``ResizedMaps``)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def __call__(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        numel = math.prod(shape)
        if device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < numel:
            self.buffers.pop(name, None)
            held = sum(kept.numel() * kept.element_size() for kept in self.buffers.values())
            if held + numel * dtype.itemsize > _SCRATCH_LIMIT:
                return torch.empty(shape, dtype=dtype)
            buffer = self.buffers[name] = torch.empty(numel, dtype=dtype)
        return buffer[:numel].view(shape)


_SCRATCH = _Scratch()


def release_scratch_memory() -> None:
    """Free the scratch memory that post-processing keeps for reuse (this thread's, and the
    worker threads', whose pool is shut down; the next call starts a new one)."""
    global _POOL
    _SCRATCH.buffers.clear()
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL[1].shutdown(wait=True)
            _POOL = None


def _forget_pool() -> None:
    """A forked child has the pool object but none of its threads: start a new one there."""
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def _use_threads(threads: int) -> None:
    """Give the calling (new) thread ``threads`` torch threads. torch sets a thread's count
    lazily, from the process default, at its first query: query first, then set."""
    torch.get_num_threads()
    torch.set_num_threads(threads)


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """Two workers sharing the caller's ``threads`` torch threads (half each).

    ``torch.set_num_threads`` in a worker sets that thread's own count, and also the default
    for threads started later, so the caller's setting is put back once both workers run."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != threads:
            if _POOL is not None:
                _POOL[1].shutdown(wait=False)
            pool = ThreadPoolExecutor(
                max_workers=2,
                thread_name_prefix="maskformer-postprocess",
                initializer=_use_threads,
                initargs=(max(1, threads // 2),),
            )
            started = threading.Barrier(3)
            for _ in range(2):
                pool.submit(started.wait)
            started.wait()
            torch.set_num_threads(threads)
            _POOL = (threads, pool)
        return _POOL[1]


def _map_images(
    function: Callable[..., Any], device: torch.device, *columns: Sequence[Any]
) -> list[Any]:
    """``[function(*row) for row in zip(*columns)]``; ``columns[0]`` holds each image's logits.

    On CPU with more than one torch thread, two images run at a time on a small shared thread
    pool, each with half of the threads: torch kernels release the GIL, and the work of one
    image is mostly mid-sized operations that it cannot spread over the cores."""
    rows = list(zip(*columns))
    threads = torch.get_num_threads()
    if (
        len(rows) < 2
        or device.type != "cpu"
        or threads < 2
        or rows[0][0].numel() < _POOL_MIN_ELEMENTS
    ):
        return [function(*row) for row in rows]
    return list(_thread_pool(threads).map(lambda row: function(*row), rows))


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _logits(outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Fetch and validate ``(class_queries_logits, masks_queries_logits)`` from ``outputs``."""
    try:
        class_logits = outputs.class_queries_logits
        mask_logits = outputs.masks_queries_logits
    except AttributeError as error:
        raise TypeError(
            "`outputs` must have `class_queries_logits` and `masks_queries_logits` attributes "
            f"(got {type(outputs).__name__})"
        ) from error
    if not isinstance(class_logits, torch.Tensor) or class_logits.dim() != 3:
        raise ValueError(
            "`outputs.class_queries_logits` must be a tensor of shape (batch, queries, classes + 1)"
        )
    if not isinstance(mask_logits, torch.Tensor) or mask_logits.dim() != 4:
        raise ValueError(
            "`outputs.masks_queries_logits` must be a tensor of shape (batch, queries, height, width)"
        )
    if class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            "`outputs.class_queries_logits` and `outputs.masks_queries_logits` disagree on "
            f"(batch, queries): {tuple(class_logits.shape[:2])} vs {tuple(mask_logits.shape[:2])}"
        )
    # Post-processing never needs gradients (and worker threads do not share grad mode).
    return class_logits.detach(), mask_logits.detach()


def _target_sizes(target_sizes: TargetSizes, batch_size: int) -> list[tuple[int, int] | None]:
    """One ``(height, width)`` or None per image."""
    if target_sizes is None:
        return [None] * batch_size
    if isinstance(target_sizes, torch.Tensor):
        target_sizes = target_sizes.tolist()
    if len(target_sizes) != batch_size:
        raise ValueError(
            "Make sure that you pass in as many target sizes as the batch dimension of the logits: "
            f"`target_sizes` has {len(target_sizes)} entries for a batch of {batch_size}"
        )
    sizes = []
    for size in target_sizes:
        if len(size) != 2 or any(int(s) <= 0 for s in size):
            raise ValueError(
                f"each entry of `target_sizes` must be (height, width) > 0, got {size}"
            )
        sizes.append((int(size[0]), int(size[1])))
    return sizes


# ----------------------------------------------------------------------------------------------
# Semantic segmentation
# ----------------------------------------------------------------------------------------------


def semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Per-class scores ``(batch, classes, height, width)`` = sum over queries of
    ``softmax(class)[..., :-1] * sigmoid(mask)``."""
    class_probs = class_logits.softmax(dim=-1)[..., :-1]
    mask_probs = mask_logits.sigmoid()
    return torch.einsum("bqc,bqhw->bchw", class_probs, mask_probs)


def post_process_semantic_segmentation(
    outputs: Any, target_sizes: TargetSizes = None
) -> list[torch.Tensor]:
    """Semantic maps, one int64 ``(height, width)`` tensor of class ids per image.

    Without ``target_sizes`` the maps are at mask resolution; otherwise image ``i`` is resized
    (bilinear on the class scores) to ``target_sizes[i]``.
    """
    class_logits, mask_logits = _logits(outputs)
    sizes = _target_sizes(target_sizes, class_logits.shape[0])
    scores = semantic_scores(class_logits, mask_logits)
    if target_sizes is None:
        return list(scores.argmax(dim=1))
    return _map_images(resized_argmax, scores.device, scores, sizes)


def post_process_segmentation(
    outputs: Any, target_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Deprecated: class scores ``(batch, classes, height, width)``, optionally resized."""
    class_logits, mask_logits = _logits(outputs)
    scores = semantic_scores(class_logits, mask_logits)
    if target_size is not None:
        scores = F.interpolate(scores, size=target_size, mode="bilinear", align_corners=False)
    return scores


# ----------------------------------------------------------------------------------------------
# Instance segmentation
# ----------------------------------------------------------------------------------------------


def binary_mask_to_coco_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """COCO compressed RLEs (``{"size": [h, w], "counts": str}``), one per mask of ``(n, h, w)``.

    Column-major as COCO defines it; ``pycocotools.mask.decode`` gives back each mask exactly.
    """
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    host = masks.to(device="cpu", dtype=torch.uint8).numpy()
    encoded = mask_utils.encode(np.asfortranarray(host.transpose(1, 2, 0)))
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("ascii")
    return encoded


def _nearest_sources(
    in_size: tuple[int, int], out_size: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source row ``(H,)`` and column ``(W,)`` of every output pixel of
    ``interpolate(mode="nearest")``, read off torch itself by resizing index ramps."""
    ramps = []
    for length, out_length in zip(in_size, out_size):
        ramp = torch.arange(length, dtype=torch.float32, device=device)[None, None, :, None]
        sampled = F.interpolate(ramp, size=(out_length, 1), mode="nearest")
        ramps.append(sampled.flatten().long())
    return ramps[0], ramps[1]


def post_process_instance_segmentation(
    outputs: Any,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    target_sizes: TargetSizes = None,
    return_coco_annotation: bool | None = False,
    return_binary_maps: bool | None = False,
) -> list[dict[str, Any]]:
    """Instance segments per image: ``{"segmentation", "segments_info"}``.

    As in the reference, the ``queries`` best (query, class) pairs are taken (unsorted top-k),
    masks are binarised at logit 0 (``mask_threshold`` and ``overlap_mask_area_threshold`` are
    accepted but unused), a pair is kept when its mask is not empty and
    ``class_prob * mean_mask_prob >= threshold``, and ids count the kept pairs from 0.

    ``segmentation``: float32 ``(height, width)`` of ids, -1 = background, later segments drawn
    over earlier ones; with ``return_binary_maps`` a float32 ``(segments, height, width)`` stack
    (``(0, height, width)`` when nothing is found); with ``return_coco_annotation`` a list of COCO
    RLE dicts, one per segment in ``segments_info`` order (each segment's own mask).
    """
    if return_coco_annotation and return_binary_maps:
        raise ValueError(
            "`return_coco_annotation` and `return_binary_maps` can not be both set to True."
        )
    class_logits, mask_logits = _logits(outputs)
    batch_size, num_queries, num_classes = class_logits.shape
    num_classes -= 1
    sizes = _target_sizes(target_sizes, batch_size)
    device = mask_logits.device

    results = []
    for image_class_logits, image_mask_logits, size in zip(class_logits, mask_logits, sizes):
        class_probs = image_class_logits.softmax(dim=-1)[:, :-1]
        top_scores, top_indices = class_probs.flatten(0, 1).topk(num_queries, sorted=False)
        labels = top_indices % num_classes
        queries = torch.div(top_indices, num_classes, rounding_mode="floor")

        # score = class prob * mean mask prob <= class prob: only pairs whose class prob reaches
        # the threshold can be kept, so masks are scored for those alone.
        candidates = (top_scores >= threshold).nonzero()[:, 0]
        shape = (candidates.numel(), *image_mask_logits.shape[1:])
        chosen = _SCRATCH("chosen", shape, image_mask_logits.dtype, device)
        torch.index_select(image_mask_logits, 0, queries[candidates], out=chosen)  # (cand., h, w)
        binary = torch.gt(chosen, 0, out=_SCRATCH("binary", shape, torch.float32, device))
        mask_area = binary.flatten(1).sum(1)
        product_dtype = torch.promote_types(chosen.dtype, binary.dtype)
        weighted = _SCRATCH("weighted", shape, product_dtype, device)
        torch.mul(chosen.sigmoid_(), binary, out=weighted)
        mask_scores = weighted.flatten(1).sum(1) / (mask_area + 1e-6)
        scores = top_scores[candidates] * mask_scores
        passing = (scores >= threshold).nonzero()[:, 0]
        passing_masks = binary[passing]  # (passing, h, w)

        # Nearest resizing samples one source pixel per output pixel: the id map and the
        # emptiness test can be computed at mask resolution through the sampled rows / columns.
        if size is None:
            rows = torch.arange(binary.shape[-2], device=device)
            cols = torch.arange(binary.shape[-1], device=device)
        else:
            rows, cols = _nearest_sources(binary.shape[-2:], size, device)
        sampled = passing_masks[:, rows.unique()][:, :, cols.unique()]
        non_empty = sampled.flatten(1).gt(0).any(dim=1)
        kept_masks = passing_masks[non_empty]  # (segments, h, w)
        segment_ids = torch.arange(kept_masks.shape[0], device=device, dtype=torch.float32)
        low_res = torch.where(kept_masks.bool(), segment_ids[:, None, None], -1.0)
        low_res = (
            low_res.amax(dim=0)
            if kept_masks.shape[0]
            else kept_masks.new_full(binary.shape[-2:], -1.0)
        )
        segmentation = low_res  # ids, later segments drawn over earlier ones
        if size is not None:
            segmentation = low_res[rows][:, cols]  # (H, W)
            if return_binary_maps or return_coco_annotation:
                kept_masks = kept_masks[:, rows][:, :, cols]  # (segments, H, W)
        labels, kept_in_candidates = labels[candidates], passing[non_empty]
        kept_labels, kept_scores = (
            torch.stack(
                [
                    labels[kept_in_candidates].to(torch.float64),
                    scores[kept_in_candidates].to(torch.float64),
                ]
            )
            .cpu()
            .tolist()
        )
        segments_info = [
            {"id": i, "label_id": int(label), "was_fused": False, "score": round(score, 6)}
            for i, (label, score) in enumerate(zip(kept_labels, kept_scores))
        ]
        if return_coco_annotation:
            segmentation = binary_mask_to_coco_rle(kept_masks)
        elif return_binary_maps:
            segmentation = kept_masks
        results.append({"segmentation": segmentation, "segments_info": segments_info})
    return results


# ----------------------------------------------------------------------------------------------
# Panoptic segmentation
# ----------------------------------------------------------------------------------------------


def _passes_area_checks(
    won_area: torch.Tensor, confident_area: torch.Tensor, overlap_mask_area_threshold: float
) -> torch.Tensor:
    """Whether each query keeps its segment: it wins pixels, has confident pixels, and the ratio
    of the two is above the threshold (float32, as in the reference, compared in float64).

    For fixed ``won_area`` and ``confident_area >= 1`` the outcome only changes from True to
    False as ``confident_area`` grows (float32 division rounds monotonically), so bounds of it
    settle most queries.
    """
    ratio = (won_area / confident_area.clamp(min=1)).to(torch.float32).double()
    return (won_area > 0) & (confident_area > 0) & (ratio > overlap_mask_area_threshold)


def _area_checks_from_bounds(
    won_area: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    overlap_mask_area_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_passes_area_checks`` for confident areas known only as ``lower <= area <= upper``:
    the outcome where the bounds settle it, and which queries they leave open."""
    checks = _passes_area_checks(won_area, torch.stack([upper, lower]), overlap_mask_area_threshold)
    valid = checks[0]
    # Monotone in the confident area from 1 pixel on; 0 pixels always fails.
    open_maps = (valid != checks[1]) | ((lower == 0) & (upper > 0) & (won_area > 0))
    return valid, open_maps


def _panoptic_segment_ids(
    labels: torch.Tensor, valid: torch.Tensor, fused: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment id per kept query (0 = dropped) and whether the query opened a new segment.

    Valid queries get ids 1, 2, ... in query order; a valid query of a fused class reuses the id of
    the first valid query of that class. All inputs and outputs are ``(kept,)``.
    """
    count = labels.shape[0]
    same_label = labels[:, None] == labels[None, :]
    earlier = torch.ones(count, count, dtype=torch.bool, device=labels.device).tril(-1)
    has_earlier_twin = (same_label & earlier & valid[None, :]).any(dim=1)
    opens = valid & ~(fused & has_earlier_twin)
    new_ids = torch.cumsum(opens.long(), dim=0)
    # The first valid query of the same label (itself when it opens a segment).
    first_twin = (same_label & valid[None, :]).long().argmax(dim=1)
    ids = torch.where(opens, new_ids, new_ids[first_twin])
    return torch.where(valid, ids, 0), opens


def post_process_panoptic_segmentation(
    outputs: Any,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: set[int] | None = None,
    target_sizes: TargetSizes = None,
) -> list[dict[str, Any]]:
    """Panoptic segments per image: ``{"segmentation", "segments_info"}``.

    ``segmentation`` is int32 ``(height, width)`` on the logits' device, 0 = no segment and ids
    from 1. Queries whose best class is not "no object" and whose probability is above
    ``threshold`` compete per pixel on ``score * mask_prob`` (probabilities resized bilinearly to
    ``target_sizes[i]`` first). A query becomes a segment when it wins pixels, has pixels with
    ``score * mask_prob >= mask_threshold`` (the reference's score weighting, kept) and the ratio
    of the two areas is above ``overlap_mask_area_threshold``. Queries of a class in
    ``label_ids_to_fuse`` share one id; ``segments_info`` has one entry per id, carrying the score
    of the query that opened it.
    """
    class_logits, mask_logits = _logits(outputs)
    batch_size, _, num_classes = class_logits.shape
    num_classes -= 1
    sizes = _target_sizes(target_sizes, batch_size)
    fuse = sorted(set(label_ids_to_fuse or ()))
    device = mask_logits.device

    class_scores, class_labels = class_logits.softmax(dim=-1).max(dim=-1)

    def segment(
        image_logits: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, size: Any
    ) -> dict[str, Any]:
        """One image: ``image_logits`` ``(queries, h, w)``, ``scores`` / ``labels``
        ``(queries,)``."""
        height, width = size if size is not None else image_logits.shape[-2:]
        keep = (labels != num_classes) & (scores > threshold)
        kept = keep.nonzero()[:, 0]
        probs_shape = (kept.numel(), *image_logits.shape[1:])
        kept_probs = _SCRATCH("probs", probs_shape, image_logits.dtype, device)
        torch.index_select(image_logits, 0, kept, out=kept_probs).sigmoid_()  # (kept, h, w)
        kept_scores, kept_labels = scores[kept], labels[kept]
        count = kept_probs.shape[0]
        if count == 0:
            segmentation = torch.zeros((height, width), dtype=torch.int32, device=device)
            return {"segmentation": segmentation, "segments_info": []}
        if size is None:
            weighted = kept_probs * kept_scores[:, None, None]
            winner = weighted.argmax(dim=0)  # (h, w)
            confident_area = (weighted >= mask_threshold).flatten(1).sum(dim=1)
            won_area = torch.bincount(winner.flatten(), minlength=count)
            valid = _passes_area_checks(won_area, confident_area, overlap_mask_area_threshold)
        else:  # same as resizing the probabilities first, without resizing them all
            resized = ResizedMaps(kept_probs, size, kept_scores, allocate=_SCRATCH)
            winner = resized.argmax_parts(threshold=mask_threshold)  # compact (H, W) argmax
            won_area = winner.won_counts
            # The area checks need exact confident areas only where bounds leave them open:
            # first the cheap ones (cells won whole above the threshold; cells that may reach
            # it), then the cell bounds of every map, then exact counts.
            lower, upper = winner.confident_lower, winner.confident_upper
            valid, open_maps = _area_checks_from_bounds(
                won_area, lower, upper, overlap_mask_area_threshold
            )
            if bool(open_maps.any()):
                lower, upper = resized.threshold_count_bounds(mask_threshold)
                valid, open_maps = _area_checks_from_bounds(
                    won_area, lower, upper, overlap_mask_area_threshold
                )
            if bool(open_maps.any()):
                confident_area = resized.threshold_counts(mask_threshold, maps=open_maps)
                valid = _passes_area_checks(won_area, confident_area, overlap_mask_area_threshold)
        if fuse:
            fused = torch.isin(
                kept_labels, torch.tensor(fuse, dtype=kept_labels.dtype, device=device)
            )
        else:
            fused = torch.zeros_like(valid)
        ids, opens = _panoptic_segment_ids(kept_labels, valid, fused)
        ids = ids.to(torch.int32)
        if size is None:
            segmentation = ids[winner]
        else:
            cell_ids = ids.index_select(0, winner.cell_leader.flatten())
            segmentation = resized.grid.expand(cell_ids.view(winner.cell_leader.shape))
            for pixels, leader in zip(winner.pixels, winner.pixel_leader):
                segmentation.view(-1).scatter_(0, pixels, ids.index_select(0, leader))

        info = torch.stack(
            [ids.to(torch.float64), kept_labels.to(torch.float64), kept_scores.to(torch.float64)]
        )[:, opens]
        segment_ids, segment_labels, segment_scores = info.cpu().tolist()
        fuse_set = set(fuse)
        segments_info = [
            {
                "id": int(segment_id),
                "label_id": int(label),
                "was_fused": int(label) in fuse_set,
                "score": round(score, 6),
            }
            for segment_id, label, score in zip(segment_ids, segment_labels, segment_scores)
        ]
        return {"segmentation": segmentation, "segments_info": segments_info}

    return _map_images(segment, device, mask_logits, class_scores, class_labels, sizes)
