"""Post-processing: parity with transformers 4.34.1, the documented fixes, and properties."""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from maskformer.processing import MaskFormerImageProcessor
from maskformer.processing.exact_resize import first_argmax, resize_candidates

PROCESSOR = MaskFormerImageProcessor()
# pycocotools' decode trips a numpy 2 deprecation inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def random_outputs(batch=2, queries=10, classes=7, height=12, width=15, scale=2.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(
        class_queries_logits=torch.randn(batch, queries, classes + 1, generator=generator) * scale,
        masks_queries_logits=torch.randn(batch, queries, height, width, generator=generator)
        * scale,
    )


def realistic_outputs(batch=2, queries=30, classes=20, height=40, width=56, objects=6, seed=0):
    """Trained-model-like logits: a few confident queries whose masks tile the image (with a
    soft border), the other queries predict "no object" with low masks."""
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(batch, queries, classes + 1, generator=generator)
    class_logits[..., classes] += 6
    mask_logits = torch.randn(batch, queries, height, width, generator=generator) - 6
    for b in range(batch):
        chosen = torch.randperm(queries, generator=generator)[:objects]
        labels = torch.randint(0, classes, (objects,), generator=generator)
        class_logits[b, chosen, labels] += 12
        class_logits[b, chosen, classes] -= 6
        field = torch.randn(1, objects, height // 8, width // 8, generator=generator)
        regions = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=False)[
            0
        ].argmax(0)
        for index, query in enumerate(chosen.tolist()):
            region = F.avg_pool2d((regions == index).float()[None, None], 5, 1, 2)[0, 0]
            mask_logits[b, query] = (region - 0.5) * 20 + torch.randn(
                height, width, generator=generator
            )
    return types.SimpleNamespace(
        class_queries_logits=class_logits, masks_queries_logits=mask_logits
    )


@pytest.fixture(scope="module")
def reference(hf):
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return hf.MaskFormerImageProcessor()


OUTPUTS = {
    "random": lambda: random_outputs(seed=1),
    "random_wide": lambda: random_outputs(
        queries=6, classes=30, height=9, width=11, scale=4.0, seed=2
    ),
    "realistic": lambda: realistic_outputs(seed=3),
}
TARGET_SIZES = [None, [(50, 70), (31, 23)], [(12, 15), (7, 9)]]


def _dedup_by_id(segments_info):
    seen, kept = set(), []
    for info in segments_info:
        if info["id"] not in seen:
            seen.add(info["id"])
            kept.append(info)
    return kept


# ---------------------------------------------------------------------------------------- semantic


@pytest.mark.parametrize("name", sorted(OUTPUTS))
@pytest.mark.parametrize("target_sizes", TARGET_SIZES)
def test_semantic_matches_reference(reference, name, target_sizes):
    outputs = OUTPUTS[name]()
    ours = PROCESSOR.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)
    theirs = reference.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype == torch.int64
        assert torch.equal(a, b)


def test_semantic_matches_reference_at_model_scale(reference):
    outputs = realistic_outputs(
        batch=1, queries=100, classes=150, height=50, width=68, objects=15, seed=4
    )
    target = [(120, 160)]
    ours = PROCESSOR.post_process_semantic_segmentation(outputs, target_sizes=target)[0]
    theirs = reference.post_process_semantic_segmentation(outputs, target_sizes=target)[0]
    assert torch.equal(ours, theirs)


def test_first_argmax_picks_the_first_maximum():
    maps = torch.zeros(5, 6, 7)
    maps[1:3] = 0.5  # 1 and 2 tie everywhere: argmax picks 1
    maps[3, 2:, 3:] = 0.75
    maps[4, 2:, 3:] = 0.75  # ties with 3 there
    assert torch.equal(first_argmax(maps), maps.argmax(0))
    assert torch.equal(first_argmax(torch.ones(4, 3, 3)), torch.zeros(3, 3, dtype=torch.int64))
    assert first_argmax(maps).dtype == torch.int64


def _full_argmax(maps, size, scale=None):
    full = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
    if scale is not None:
        full *= scale[:, None, None]
    return full, full.argmax(0)


def _candidates_argmax(maps, size, scale=None):
    resized, chosen = resize_candidates(maps, size, scale)
    winner = first_argmax(resized)
    return resized, chosen, (winner if chosen is None else chosen[winner])


def _region_maps(count, height, width, seed, duplicate=False):
    """Score-weighted mask probabilities like a trained model's: regions with soft, noisy
    borders; a few queries that never win (low masks)."""
    outputs = realistic_outputs(
        batch=1, queries=count + 4, height=height, width=width, objects=count, seed=seed
    )
    scores, labels = outputs.class_queries_logits[0].softmax(-1).max(-1)
    maps = outputs.masks_queries_logits[0].sigmoid()
    scale = scores.clone()
    if duplicate:  # exact ties between two maps everywhere
        winner = int(maps.amax((1, 2)).argmax())
        maps[winner + 1 if winner + 1 < len(maps) else 0] = maps[winner]
        scale[:] = scale[winner]
    return maps, scale


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("out_size", [(97, 131), (40, 56), (23, 17), (160, 224)])
@pytest.mark.parametrize("duplicate", [False, True])
def test_resized_candidates_give_the_full_resize_argmax(seed, out_size, duplicate):
    maps, scale = _region_maps(6, 40, 56, seed, duplicate)
    for weights in (None, scale):
        full, expected = _full_argmax(maps, out_size, weights)
        resized, chosen, winner = _candidates_argmax(maps, out_size, weights)
        assert torch.equal(winner, expected)
        if chosen is None:  # small or shrinking outputs: the whole stack, as the reference
            assert out_size[0] + out_size[1] <= 128 or out_size[0] * out_size[1] <= 40 * 56
            assert torch.equal(resized, full)
        else:  # a subset resizes to the very values of the whole stack (this CPU's kernel)
            assert 0 < len(chosen) <= len(maps)
            assert torch.equal(resized, full[chosen])


def test_resized_candidates_at_a_crossing_take_torch_values():
    """Two maps whose resized values cross inside cells: both stay candidates, the winner is
    torch's own comparison of the resized values."""
    ramp = torch.linspace(0, 1, 9)
    maps = torch.stack([ramp.expand(5, 9), 1 - ramp.expand(5, 9), torch.full((5, 9), 0.1)])
    _, expected = _full_argmax(maps, (100, 210))
    _, chosen, winner = _candidates_argmax(maps, (100, 210))
    assert chosen.tolist() == [0, 1]
    assert torch.equal(winner, expected)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 160),
    st.integers(1, 160),
    st.integers(0, 2**16),
)
def test_resized_candidates_equal_full_resize(maps_count, h, w, out_h, out_w, seed):
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(maps_count, h, w, generator=generator).round(decimals=1)  # many exact ties
    scale = torch.rand(maps_count, generator=generator)
    for weights in (None, scale):
        _, expected = _full_argmax(maps, (out_h, out_w), weights)
        assert torch.equal(_candidates_argmax(maps, (out_h, out_w), weights)[2], expected)


def test_near_ties_use_torch_values_of_the_whole_stack():
    """Below 128 output pixels of height + width torch's kernel vectorises across maps: a map
    resized alone can differ in the last bit from the same map resized with the others, which
    decides exact ties (0.375 vs 0.375). The whole stack is resized there."""
    generator = torch.Generator().manual_seed(1386)
    maps = torch.rand(8, 9, 12, generator=generator).round(decimals=1)
    scale = torch.tensor([0.4, 0.3, 0.6, 0.2, 0.6, 1.0, 0.3, 1.0])
    for size in ((30, 27), (300, 270)):
        _, expected = _full_argmax(maps, size, scale)
        assert torch.equal(_candidates_argmax(maps, size, scale)[2], expected)


@pytest.mark.parametrize("seed", range(3))
def test_panoptic_matches_reference_at_area_ratio_boundaries(reference, seed):
    """Overlap thresholds equal to the segments' own area ratios (those in [0, 1]): the strict
    comparison in float32 then decides, and the confident areas must be exact."""
    outputs = realistic_outputs(batch=1, seed=10 + seed)
    size = [(83, 117)]
    scores, labels = outputs.class_queries_logits[0].softmax(-1).max(-1)
    keep = (labels != outputs.class_queries_logits.shape[-1] - 1) & (scores > 0.5)
    probs = (
        F.interpolate(
            outputs.masks_queries_logits[0][keep].sigmoid()[None], size=size[0], mode="bilinear"
        )[0]
        * scores[keep][:, None, None]
    )
    won = torch.bincount(probs.argmax(0).flatten(), minlength=len(probs))
    confident = (probs >= 0.1).flatten(1).sum(1)  # mask_threshold=0.1: most ratios below 1
    ratios = (won / confident.clamp(min=1)).to(torch.float32).double()
    boundaries = sorted(set(ratios[(won > 0) & (ratios <= 1)].tolist()))
    assert boundaries
    for overlap in boundaries[:4]:
        ours = PROCESSOR.post_process_panoptic_segmentation(
            outputs, mask_threshold=0.1, overlap_mask_area_threshold=overlap, target_sizes=size
        )[0]
        theirs = reference.post_process_panoptic_segmentation(
            outputs,
            mask_threshold=0.1,
            overlap_mask_area_threshold=overlap,
            target_sizes=size,
            label_ids_to_fuse=set(),
        )[0]
        assert ours["segments_info"] == theirs["segments_info"]
        if theirs["segments_info"]:
            assert torch.equal(ours["segmentation"], theirs["segmentation"])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 40), st.integers(1, 40))
def test_semantic_values_are_valid_class_ids(seed, out_h, out_w):
    outputs = random_outputs(batch=1, classes=5, seed=seed)
    for segmentation in (
        PROCESSOR.post_process_semantic_segmentation(outputs)[0],
        PROCESSOR.post_process_semantic_segmentation(outputs, target_sizes=[(out_h, out_w)])[0],
    ):
        assert segmentation.min() >= 0 and segmentation.max() < 5


def test_semantic_rejects_wrong_number_of_target_sizes():
    with pytest.raises(ValueError, match="target_sizes"):
        PROCESSOR.post_process_semantic_segmentation(random_outputs(), target_sizes=[(4, 4)])


# ---------------------------------------------------------------------------------------- instance


@pytest.mark.parametrize("name", sorted(OUTPUTS))
@pytest.mark.parametrize("target_sizes", TARGET_SIZES)
@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.8])
def test_instance_matches_reference(reference, name, target_sizes, threshold):
    outputs = OUTPUTS[name]()
    kwargs = {"threshold": threshold, "target_sizes": target_sizes}
    ours = PROCESSOR.post_process_instance_segmentation(outputs, **kwargs)
    theirs = reference.post_process_instance_segmentation(outputs, **kwargs)
    binary_ours = PROCESSOR.post_process_instance_segmentation(
        outputs, return_binary_maps=True, **kwargs
    )
    binary_theirs = reference.post_process_instance_segmentation(
        outputs, return_binary_maps=True, **kwargs
    )
    for a, b, binary_a, binary_b in zip(ours, theirs, binary_ours, binary_theirs):
        assert a["segments_info"] == b["segments_info"]
        assert a["segmentation"].dtype == torch.float32
        assert torch.equal(a["segmentation"], b["segmentation"])
        if b["segments_info"]:
            assert torch.equal(binary_a["segmentation"], binary_b["segmentation"])
        else:  # fixed: an empty stack instead of the (H, W) map of -1
            assert binary_a["segmentation"].shape == (0, *b["segmentation"].shape)


def test_instance_coco_rle_decodes_to_each_segment_mask():
    mask_utils = pytest.importorskip("pycocotools.mask")
    outputs = realistic_outputs(seed=5)
    kwargs = {"threshold": 0.1, "target_sizes": [(45, 61), (20, 30)]}
    binary = PROCESSOR.post_process_instance_segmentation(
        outputs, return_binary_maps=True, **kwargs
    )
    coco = PROCESSOR.post_process_instance_segmentation(
        outputs, return_coco_annotation=True, **kwargs
    )
    for maps, rles in zip(binary, coco):
        assert (
            len(rles["segmentation"]) == len(rles["segments_info"]) == maps["segmentation"].shape[0]
        )
        for mask, rle in zip(maps["segmentation"], rles["segmentation"]):
            assert rle["size"] == list(mask.shape)
            np.testing.assert_array_equal(mask_utils.decode(rle), mask.numpy().astype(np.uint8))


def test_instance_nothing_found():
    outputs = random_outputs()
    result = PROCESSOR.post_process_instance_segmentation(outputs, threshold=1.0)[0]
    assert result["segments_info"] == [] and result["segmentation"].eq(-1).all()
    binary = PROCESSOR.post_process_instance_segmentation(
        outputs, threshold=1.0, return_binary_maps=True, target_sizes=[(5, 6)] * 2
    )[0]
    assert binary["segmentation"].shape == (0, 5, 6)
    assert (
        PROCESSOR.post_process_instance_segmentation(
            outputs, threshold=1.0, return_coco_annotation=True
        )[0]["segmentation"]
        == []
    )
    with pytest.raises(ValueError, match="return_coco_annotation"):
        PROCESSOR.post_process_instance_segmentation(
            outputs, return_coco_annotation=True, return_binary_maps=True
        )


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.0, 0.6))
def test_instance_rle_roundtrips_through_pycocotools(seed, threshold):
    mask_utils = pytest.importorskip("pycocotools.mask")
    outputs = random_outputs(batch=1, seed=seed)
    binary = PROCESSOR.post_process_instance_segmentation(
        outputs, threshold=threshold, return_binary_maps=True
    )[0]
    coco = PROCESSOR.post_process_instance_segmentation(
        outputs, threshold=threshold, return_coco_annotation=True
    )[0]
    for mask, rle in zip(binary["segmentation"], coco["segmentation"]):
        np.testing.assert_array_equal(mask_utils.decode(rle), mask.numpy().astype(np.uint8))


# ---------------------------------------------------------------------------------------- panoptic


@pytest.mark.parametrize("name", sorted(OUTPUTS))
@pytest.mark.parametrize("target_sizes", TARGET_SIZES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"threshold": 0.1, "mask_threshold": 0.3, "overlap_mask_area_threshold": 0.5},
        {"threshold": 0.2, "label_ids_to_fuse": {0, 1, 2, 3, 4, 5, 6}},
        {"threshold": 0.05, "mask_threshold": 0.0, "overlap_mask_area_threshold": 0.0},
    ],
)
def test_panoptic_matches_reference(reference, name, target_sizes, kwargs):
    outputs = OUTPUTS[name]()
    ours = PROCESSOR.post_process_panoptic_segmentation(
        outputs, target_sizes=target_sizes, **kwargs
    )
    theirs = reference.post_process_panoptic_segmentation(
        outputs, target_sizes=target_sizes, **{"label_ids_to_fuse": set(), **kwargs}
    )
    for a, b in zip(ours, theirs):
        assert a["segmentation"].dtype == torch.int32
        assert a["segments_info"] == _dedup_by_id(b["segments_info"])
        if b["segments_info"]:
            assert torch.equal(a["segmentation"], b["segmentation"])
        else:  # fixed: always an all-zero int32 map for "nothing found"
            assert a["segmentation"].shape == b["segmentation"].shape
            assert a["segmentation"].eq(0).all()


def test_panoptic_nothing_found_has_one_representation():
    outputs = random_outputs()
    for kwargs in (
        {"threshold": 1.0},
        {"threshold": 0.0, "overlap_mask_area_threshold": 1.0, "mask_threshold": 1.0},
    ):
        for result in PROCESSOR.post_process_panoptic_segmentation(
            outputs, target_sizes=[(9, 8)] * 2, **kwargs
        ):
            assert result["segments_info"] == []
            assert result["segmentation"].dtype == torch.int32 and result["segmentation"].shape == (
                9,
                8,
            )
            assert result["segmentation"].eq(0).all()


def test_panoptic_fused_classes_have_one_entry_per_id():
    outputs = realistic_outputs(seed=6, classes=3, objects=8)
    results = PROCESSOR.post_process_panoptic_segmentation(
        outputs, threshold=0.1, label_ids_to_fuse={0, 1, 2}
    )
    assert any(len(r["segments_info"]) for r in results)
    for result in results:
        ids = [info["id"] for info in result["segments_info"]]
        labels = [info["label_id"] for info in result["segments_info"]]
        assert len(ids) == len(set(ids)) and len(labels) == len(set(labels))
        assert all(info["was_fused"] for info in result["segments_info"])


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**16),
    st.floats(0.0, 0.6),
    st.floats(0.0, 0.9),
    st.floats(0.0, 1.0),
    st.sampled_from([None, (17, 29), (5, 4)]),
    st.sets(st.integers(0, 6), max_size=3),
)
def test_panoptic_segments_are_consistent(seed, threshold, mask_threshold, overlap, size, fuse):
    outputs = random_outputs(batch=1, seed=seed)
    result = PROCESSOR.post_process_panoptic_segmentation(
        outputs,
        threshold=threshold,
        mask_threshold=mask_threshold,
        overlap_mask_area_threshold=overlap,
        label_ids_to_fuse=fuse,
        target_sizes=None if size is None else [size],
    )[0]
    segmentation, infos = result["segmentation"], result["segments_info"]
    ids = [info["id"] for info in infos]
    assert len(ids) == len(set(ids)) and all(i >= 1 for i in ids)
    present = set(segmentation.unique().tolist()) - {0}
    assert present == set(ids)  # every segment is in the map, and the map has nothing else
    assert all(info["was_fused"] == (info["label_id"] in fuse) for info in infos)


def test_outputs_without_logits_raise():
    with pytest.raises(TypeError, match="class_queries_logits"):
        PROCESSOR.post_process_panoptic_segmentation(object())


def test_batches_with_two_threads_match_reference(reference, two_torch_threads):
    outputs = realistic_outputs(batch=3, seed=11, height=128, width=160)
    sizes = [(150, 210), (31, 23), (64, 90)]
    ours = PROCESSOR.post_process_panoptic_segmentation(outputs, target_sizes=sizes)
    theirs = reference.post_process_panoptic_segmentation(
        outputs, target_sizes=sizes, label_ids_to_fuse=set()
    )
    for a, b in zip(ours, theirs, strict=True):
        assert a["segments_info"] == _dedup_by_id(b["segments_info"])
        assert torch.equal(a["segmentation"], b["segmentation"])
    semantic = PROCESSOR.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    expected = reference.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    assert all(torch.equal(a, b) for a, b in zip(semantic, expected, strict=True))
    assert torch.get_num_threads() == 2  # the caller's setting is left alone


def test_post_processing_ignores_gradients():
    outputs = realistic_outputs(batch=2, seed=12, height=32, width=40)
    outputs.masks_queries_logits.requires_grad_(True)
    results = PROCESSOR.post_process_panoptic_segmentation(outputs, target_sizes=[(80, 100)] * 2)
    assert all(not r["segmentation"].requires_grad for r in results)
