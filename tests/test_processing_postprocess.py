"""Post-processing: parity with transformers 4.34.1, the documented fixes, and properties."""

from __future__ import annotations

import logging
import os
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from maskformer.processing import MaskFormerImageProcessor, bilinear_select
from maskformer.processing.bilinear_select import (
    ResizedMaps,
    resized_argmax,
    resized_threshold_counts,
)

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


def test_resized_argmax_breaks_exact_ties_like_argmax():
    maps = torch.zeros(4, 5, 6)
    maps[1:3] = 0.5  # 1 and 2 tie everywhere: argmax picks 1
    maps[3, 2:, 3:] = 0.75
    expected = F.interpolate(maps[None], size=(11, 13), mode="bilinear", align_corners=False)[
        0
    ].argmax(0)
    assert torch.equal(resized_argmax(maps, (11, 13)), expected)


def _region_maps(count, height, width, seed, duplicate=False):
    """Score-weighted mask probabilities like a trained model's: regions with soft, noisy
    borders, so most cells are decided and the contested ones sit between two maps."""
    outputs = realistic_outputs(
        batch=1, queries=count + 4, height=height, width=width, objects=count, seed=seed
    )
    scores, labels = outputs.class_queries_logits[0].softmax(-1).max(-1)
    keep = labels != outputs.class_queries_logits.shape[-1] - 1
    maps = outputs.masks_queries_logits[0][keep].sigmoid()
    scale = scores[keep]
    if duplicate and maps.shape[0] > 1:  # exact ties between two maps everywhere
        maps[1], scale[1] = maps[0], scale[0]
    return maps, scale


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("out_size", [(97, 131), (40, 56), (23, 17), (160, 224)])
@pytest.mark.parametrize("duplicate", [False, True])
def test_resized_selections_on_region_maps_equal_full_resize(
    monkeypatch, seed, out_size, duplicate
):
    calls = {"two maps": 0, "general": 0}
    for method, name in [("_pair_argmax", "two maps"), ("_table_argmax", "general")]:
        original = getattr(ResizedMaps, method)

        def spy(self, *args, _original=original, _name=name):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(ResizedMaps, method, spy)
    maps, scale = _region_maps(6, 40, 56, seed, duplicate)
    full = F.interpolate(maps[None], size=out_size, mode="bilinear", align_corners=False)[0]
    weighted = full * scale[:, None, None]
    resized = ResizedMaps(maps, out_size, scale)
    assert torch.equal(resized.argmax(), weighted.argmax(0))
    parts = resized.argmax_parts()
    assert torch.equal(
        parts.won_counts, torch.bincount(weighted.argmax(0).flatten(), minlength=len(maps))
    )
    for threshold in (0.5, 0.9, float(weighted[0, 3, 5])):  # the last one hits a sample exactly
        exact = (weighted >= threshold).flatten(1).sum(1)
        assert torch.equal(resized.threshold_counts(threshold), exact)
        lower, upper = resized.threshold_count_bounds(threshold)
        assert bool((lower <= exact).all()) and bool((exact <= upper).all())
        some = torch.arange(len(maps)) % 2 == 0
        partial = resized.threshold_counts(threshold, maps=some)
        assert torch.equal(partial[some], exact[some])
        assert bool((partial[~some] <= exact[~some]).all())
    if out_size[0] > 40:  # upsampling: contested cells take both paths
        assert calls["two maps"] > 0 and calls["general"] > 0


def test_resized_argmax_with_many_maps_and_wide_candidate_tables():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(300, 6, 7, generator=generator).round(decimals=2)  # many candidates per cell
    full = F.interpolate(maps[None], size=(13, 11), mode="bilinear", align_corners=False)[0]
    assert torch.equal(resized_argmax(maps, (13, 11)), full.argmax(0))
    parts = ResizedMaps(maps, (13, 11)).argmax_parts()
    assert torch.equal(parts.won_counts, torch.bincount(full.argmax(0).flatten(), minlength=300))


def test_pair_cells_take_exact_values_near_a_crossing(monkeypatch):
    """Two maps whose resized values cross inside cells: slots within the rounding margin of
    the crossing go to torch's own interpolation, the others follow the corner differences."""
    exact_calls = []
    original = bilinear_select._exact

    def spy(*args):
        exact_calls.append(args[-1].numel())
        return original(*args)

    monkeypatch.setattr(bilinear_select, "_exact", spy)
    ramp = torch.linspace(0, 1, 9)
    maps = torch.stack([ramp.expand(5, 9), 1 - ramp.expand(5, 9)])  # equal at the centre column
    full = F.interpolate(maps[None], size=(10, 21), mode="bilinear", align_corners=False)[0]
    assert torch.equal(resized_argmax(maps, (10, 21)), full.argmax(0))
    assert exact_calls  # the crossing column is a near tie


@pytest.mark.parametrize("seed", range(3))
def test_panoptic_matches_reference_at_area_ratio_boundaries(reference, seed):
    """Overlap thresholds equal to the segments' own area ratios: bounds of the confident area
    cannot settle those queries, which then take the exact count."""
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
    confident = (probs >= 0.5).flatten(1).sum(1)
    ratios = (won / confident.clamp(min=1)).to(torch.float32).double()
    for overlap in sorted(set(ratios[won > 0].tolist()))[:4]:
        ours = PROCESSOR.post_process_panoptic_segmentation(
            outputs, overlap_mask_area_threshold=overlap, target_sizes=size
        )[0]
        theirs = reference.post_process_panoptic_segmentation(
            outputs, overlap_mask_area_threshold=overlap, target_sizes=size, label_ids_to_fuse=set()
        )[0]
        assert ours["segments_info"] == theirs["segments_info"]
        if theirs["segments_info"]:
            assert torch.equal(ours["segmentation"], theirs["segmentation"])


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 25),
    st.integers(1, 25),
    st.integers(0, 2**16),
    st.floats(0.0, 1.0),
)
def test_resized_selections_equal_full_resize(maps_count, h, w, out_h, out_w, seed, threshold):
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(maps_count, h, w, generator=generator).round(decimals=1)  # many exact ties
    scale = torch.rand(maps_count, generator=generator)
    full = F.interpolate(maps[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
    weighted = full * scale[:, None, None]
    assert torch.equal(resized_argmax(maps, (out_h, out_w)), full.argmax(0))
    assert torch.equal(resized_argmax(maps, (out_h, out_w), scale), weighted.argmax(0))
    counts = resized_threshold_counts(maps, (out_h, out_w), scale, threshold)
    assert torch.equal(counts, (weighted >= threshold).flatten(1).sum(1))


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
    result = PROCESSOR.post_process_instance_segmentation(outputs, threshold=1.1)[0]
    assert result["segments_info"] == [] and result["segmentation"].eq(-1).all()
    binary = PROCESSOR.post_process_instance_segmentation(
        outputs, threshold=1.1, return_binary_maps=True, target_sizes=[(5, 6)] * 2
    )[0]
    assert binary["segmentation"].shape == (0, 5, 6)
    assert (
        PROCESSOR.post_process_instance_segmentation(
            outputs, threshold=1.1, return_coco_annotation=True
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
    for kwargs in ({"threshold": 1.1}, {"threshold": 0.0, "overlap_mask_area_threshold": 1.1}):
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


# ------------------------------------------------------------------------ images on a thread pool


def test_images_on_the_thread_pool_match_reference(reference, two_torch_threads):
    outputs = realistic_outputs(batch=3, seed=11, height=128, width=160)  # pool-sized
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


def test_post_processing_ignores_gradients(two_torch_threads):
    outputs = realistic_outputs(batch=2, seed=12, height=128, width=160)
    outputs.masks_queries_logits.requires_grad_(True)
    with torch.no_grad():  # grad mode is per thread: the pool must not depend on it
        results = PROCESSOR.post_process_panoptic_segmentation(outputs, target_sizes=[(20, 30)] * 2)
    assert all(not r["segmentation"].requires_grad for r in results)


def test_forked_child_starts_its_own_thread_pool(two_torch_threads):
    """A forked process inherits the pool object but none of its threads."""
    from maskformer.processing import postprocess

    outputs = realistic_outputs(batch=2, seed=13, height=128, width=160)
    PROCESSOR.post_process_semantic_segmentation(outputs, target_sizes=[(20, 30)] * 2)
    assert postprocess._POOL is not None
    pid = os.fork()
    if pid == 0:  # child: no torch kernels here (OpenMP itself is not fork-safe)
        os._exit(0 if postprocess._POOL is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_near_ties_use_torch_values_of_the_whole_stack():
    """torch vectorises its resize across maps: a map resized alone can differ in the last bit
    from the same map resized with the others, which decides exact ties (0.375 vs 0.375)."""
    generator = torch.Generator().manual_seed(1386)
    maps = torch.rand(8, 9, 12, generator=generator).round(decimals=1)
    scale = torch.tensor([0.4, 0.3, 0.6, 0.2, 0.6, 1.0, 0.3, 1.0])
    full = F.interpolate(maps[None], size=(30, 27), mode="bilinear", align_corners=False)[0]
    weighted = full * scale[:, None, None]
    assert torch.equal(resized_argmax(maps, (30, 27), scale), weighted.argmax(0))


def test_thread_pool_leaves_the_callers_thread_count(two_torch_threads, monkeypatch):
    """The workers use half of the threads each; the caller, and threads started later, keep
    the caller's setting."""
    import threading

    from maskformer.processing import postprocess

    monkeypatch.setattr(postprocess, "_POOL", None)
    outputs = realistic_outputs(batch=2, seed=14, height=128, width=160)
    PROCESSOR.post_process_panoptic_segmentation(outputs, target_sizes=[(30, 40)] * 2)
    pool = postprocess._POOL[1]
    assert torch.get_num_threads() == 2
    assert pool.submit(torch.get_num_threads).result() == 1
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [2]
    pool.shutdown()


def test_scratch_memory_is_reused_within_a_limit_and_released(reference, monkeypatch):
    from maskformer.processing import postprocess

    outputs = realistic_outputs(batch=2, seed=15)
    sizes = [(50, 70), (31, 23)]
    expected = reference.post_process_panoptic_segmentation(
        outputs, target_sizes=sizes, label_ids_to_fuse=set()
    )
    for limit in (64 * 2**20, 1000):  # reused, and too small to keep anything
        monkeypatch.setattr(postprocess, "_SCRATCH_LIMIT", limit)
        postprocess.release_scratch_memory()
        for _ in range(2):  # the second call reuses what the first one kept
            ours = PROCESSOR.post_process_panoptic_segmentation(outputs, target_sizes=sizes)
            for a, b in zip(ours, expected, strict=True):
                assert a["segments_info"] == _dedup_by_id(b["segments_info"])
                assert torch.equal(a["segmentation"], b["segmentation"])
        held = postprocess._SCRATCH.buffers
        assert (set(held) == {"probs", "work", "bounds"}) == (limit > 1000)
        assert sum(t.numel() * t.element_size() for t in held.values()) <= limit
    postprocess.release_scratch_memory()
    assert postprocess._SCRATCH.buffers == {} and postprocess._POOL is None
