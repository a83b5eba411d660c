"""Turn MaskFormer logits into semantic, instance and panoptic segmentations.

Functions of torch tensors. ``outputs`` is anything with ``class_queries_logits``
``(batch, queries, classes + 1)`` (the last class is "no object") and ``masks_queries_logits``
``(batch, queries, height, width)``. Everything runs on the logits' device; the host reads the
sizes of data-dependent selections and one batched ``.tolist()`` per image to build
``segments_info``. Half-precision logits are post-processed in float32.

Resizing to ``target_sizes`` is exact: the maps that can win somewhere are resized with
``F.interpolate`` as the reference resizes them, and the winner per pixel is the first maximum
(as ``argmax``); see ``exact_resize.py``.

The results equal transformers 4.34.1 on every input it handles correctly; the deliberate
differences are listed in the project README ("Differences from transformers 4.34.1").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from maskformer.processing.exact_resize import count_at_least, first_argmax, resize_candidates
from maskformer.processing.postprocess_checks import (
    TargetSizes,
    check_fraction,
    checked_logits,
    checked_target_sizes,
)
from maskformer.utils.coco import encode_rle

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
    class_logits, mask_logits = checked_logits(outputs)
    sizes = checked_target_sizes(target_sizes, class_logits.shape[0])
    scores = semantic_scores(class_logits, mask_logits)  # (batch, classes, h, w)
    results = []
    for image_scores, size in zip(scores, sizes):
        if size is None:
            results.append(first_argmax(image_scores))
            continue
        resized, chosen = resize_candidates(image_scores, size)
        winner = first_argmax(resized)
        results.append(winner if chosen is None else chosen[winner])
    return results


def post_process_segmentation(
    outputs: Any, target_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Deprecated: class scores ``(batch, classes, height, width)``, optionally resized."""
    class_logits, mask_logits = checked_logits(outputs)
    scores = semantic_scores(class_logits, mask_logits)
    if target_size is not None:
        scores = F.interpolate(scores, size=target_size, mode="bilinear", align_corners=False)
    return scores


# ----------------------------------------------------------------------------------------------
# Instance segmentation
# ----------------------------------------------------------------------------------------------


def binary_mask_to_coco_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """COCO compressed RLEs (``{"size": [h, w], "counts": str}``), one per mask of ``(n, h, w)``
    (``maskformer.utils.coco.encode_rle`` on the host copy)."""
    return encode_rle(masks.to(device="cpu", dtype=torch.uint8).numpy())


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


def _instance_segments(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    threshold: float,
    size: tuple[int, int] | None,
    want_masks: bool,
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """One image (``(queries, classes + 1)``, ``(queries, h, w)``): the id map ``(H, W)``, the
    kept masks ``(segments, H, W)`` (when ``want_masks``) and ``segments_info``."""
    num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    device = mask_logits.device
    class_probs = class_logits.softmax(dim=-1)[:, :-1]
    top_scores, top_indices = class_probs.flatten(0, 1).topk(num_queries, sorted=False)
    labels = top_indices % num_classes
    queries = torch.div(top_indices, num_classes, rounding_mode="floor")

    # score = class prob * mean mask prob <= class prob: only pairs whose class prob reaches the
    # threshold can be kept, so masks are scored for those alone.
    candidates = (top_scores >= threshold).nonzero()[:, 0]
    chosen = mask_logits.index_select(0, queries[candidates])  # (candidates, h, w)
    binary = (chosen > 0).float()
    mask_area = binary.flatten(1).sum(1)
    mask_scores = (chosen.sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (mask_area + 1e-6)
    scores = top_scores[candidates] * mask_scores
    passing = (scores >= threshold).nonzero()[:, 0]
    passing_masks = binary[passing]  # (passing, h, w)

    # Nearest resizing samples one source pixel per output pixel: the id map and the emptiness
    # test are computed at mask resolution through the sampled rows and columns.
    if size is None:
        rows = torch.arange(binary.shape[-2], device=device)
        cols = torch.arange(binary.shape[-1], device=device)
    else:
        rows, cols = _nearest_sources(binary.shape[-2:], size, device)
    sampled = passing_masks[:, rows.unique()][:, :, cols.unique()]
    non_empty = sampled.flatten(1).gt(0).any(dim=1)
    kept_masks = passing_masks[non_empty]  # (segments, h, w)
    segment_ids = torch.arange(kept_masks.shape[0], device=device, dtype=torch.float32)
    if kept_masks.shape[0]:  # later segments drawn over earlier ones
        low_res = torch.where(kept_masks.bool(), segment_ids[:, None, None], -1.0).amax(dim=0)
    else:
        low_res = kept_masks.new_full(binary.shape[-2:], -1.0)
    if size is None:
        segmentation = low_res
    else:  # nearest sampling commutes with the per-pixel maximum
        segmentation = F.interpolate(low_res[None, None], size=size, mode="nearest")[0, 0]
        if want_masks and kept_masks.shape[0]:  # (segments, H, W)
            kept_masks = F.interpolate(kept_masks[None], size=size, mode="nearest")[0]
        elif want_masks:
            kept_masks = kept_masks.new_zeros((0, *size))

    kept = passing[non_empty]
    info = torch.stack([labels[candidates][kept].double(), scores[kept].double()]).cpu().tolist()
    segments_info = [
        {"id": i, "label_id": int(label), "was_fused": False, "score": round(score, 6)}
        for i, (label, score) in enumerate(zip(*info))
    ]
    return segmentation, kept_masks, segments_info


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
    checked to lie in [0, 1] but unused), a pair is kept when its mask is not empty and
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
    threshold = check_fraction("threshold", threshold)
    check_fraction("mask_threshold", mask_threshold)
    check_fraction("overlap_mask_area_threshold", overlap_mask_area_threshold)
    class_logits, mask_logits = checked_logits(outputs)
    sizes = checked_target_sizes(target_sizes, class_logits.shape[0])
    want_masks = bool(return_coco_annotation or return_binary_maps)
    results = []
    for image_class_logits, image_mask_logits, size in zip(class_logits, mask_logits, sizes):
        segmentation, masks, segments_info = _instance_segments(
            image_class_logits, image_mask_logits, threshold, size, want_masks
        )
        if return_coco_annotation:
            segmentation = binary_mask_to_coco_rle(masks)
        elif return_binary_maps:
            segmentation = masks
        results.append({"segmentation": segmentation, "segments_info": segments_info})
    return results


# ----------------------------------------------------------------------------------------------
# Panoptic segmentation
# ----------------------------------------------------------------------------------------------


def _passes_area_checks(
    won_area: torch.Tensor, confident_area: torch.Tensor, overlap_mask_area_threshold: float
) -> torch.Tensor:
    """Whether each query keeps its segment: it wins pixels, has confident pixels, and the ratio
    of the two is above the threshold (float32, as in the reference, compared in float64)."""
    ratio = (won_area / confident_area.clamp(min=1)).to(torch.float32).double()
    return (won_area > 0) & (confident_area > 0) & (ratio > overlap_mask_area_threshold)


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


def _panoptic_segments(
    probs: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    size: tuple[int, int],
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    fuse: list[int],
) -> dict[str, Any]:
    """One image's kept queries: mask probabilities ``(kept, h, w)`` (kept >= 1), class scores
    and labels ``(kept,)``; ``size`` None keeps the mask resolution."""
    count, device = probs.shape[0], probs.device
    if size is None:
        weighted, chosen = probs * scores[:, None, None], None
    else:  # the reference resizes the probabilities, then weights them
        weighted, chosen = resize_candidates(probs, size, scores)  # (n, H, W)
    winner = first_argmax(weighted)  # (H, W) into the resized maps
    won = torch.bincount(winner.flatten(), minlength=weighted.shape[0])
    # A query that wins no pixel fails the checks whatever its confident area.
    winners = won.nonzero()[:, 0]
    confident = torch.zeros_like(won).index_copy_(
        0, winners, count_at_least(weighted, mask_threshold, winners)
    )
    if chosen is not None:  # a skipped query wins nothing, so it fails the checks anyway
        won = torch.zeros(count, dtype=won.dtype, device=device).index_copy_(0, chosen, won)
        confident = torch.zeros_like(won).index_copy_(0, chosen, confident)
    valid = _passes_area_checks(won, confident, overlap_mask_area_threshold)
    if fuse:
        fused = torch.isin(labels, torch.tensor(fuse, dtype=labels.dtype, device=device))
    else:
        fused = torch.zeros_like(valid)
    ids, opens = _panoptic_segment_ids(labels, valid, fused)
    ids = ids.to(torch.int32)
    segmentation = (ids if chosen is None else ids[chosen])[winner]

    info = torch.stack([ids.double(), labels.double(), scores.double()])[:, opens]
    fuse_set = set(fuse)
    segments_info = [
        {
            "id": int(segment_id),
            "label_id": int(label),
            "was_fused": int(label) in fuse_set,
            "score": round(score, 6),
        }
        for segment_id, label, score in zip(*info.cpu().tolist())
    ]
    return {"segmentation": segmentation, "segments_info": segments_info}


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
    threshold = check_fraction("threshold", threshold)
    mask_threshold = check_fraction("mask_threshold", mask_threshold)
    overlap_mask_area_threshold = check_fraction(
        "overlap_mask_area_threshold", overlap_mask_area_threshold
    )
    class_logits, mask_logits = checked_logits(outputs)
    num_classes = class_logits.shape[-1] - 1
    sizes = checked_target_sizes(target_sizes, class_logits.shape[0])
    fuse = sorted(set(label_ids_to_fuse or ()))
    class_scores, class_labels = class_logits.softmax(dim=-1).max(dim=-1)  # (batch, queries)

    results = []
    for image_logits, scores, labels, size in zip(mask_logits, class_scores, class_labels, sizes):
        kept = ((labels != num_classes) & (scores > threshold)).nonzero()[:, 0]
        if kept.numel() == 0:
            shape = size if size is not None else image_logits.shape[-2:]
            segmentation = torch.zeros(shape, dtype=torch.int32, device=image_logits.device)
            results.append({"segmentation": segmentation, "segments_info": []})
            continue
        probs = image_logits.index_select(0, kept).sigmoid()  # (kept, h, w)
        results.append(
            _panoptic_segments(
                probs,
                scores[kept],
                labels[kept],
                size,
                mask_threshold,
                overlap_mask_area_threshold,
                fuse,
            )
        )
    return results
