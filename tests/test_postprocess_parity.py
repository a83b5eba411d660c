"""Post-processing parity with transformers 4.34.1 where the exact shortcuts are active (outputs
above 128 pixels of height + width, upsampled): ties, smooth model-like logits, a real model."""

from __future__ import annotations

import logging
import types

import pytest
import torch
import torch.nn.functional as F

from maskformer.processing import MaskFormerImageProcessor
from maskformer.processing.exact_resize import may_win
from maskformer.processing.postprocess import semantic_scores
from tests.conftest import SHARED_DATA, requires_shared_data

PROCESSOR = MaskFormerImageProcessor()
PHOTO = SHARED_DATA / "ade20k_sample" / "images" / "ADE_val_00000001.jpg"


@pytest.fixture(scope="module")
def reference(hf):
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return hf.MaskFormerImageProcessor()


def assert_same_results(reference, outputs, target_sizes, **kwargs):
    """Semantic, instance and panoptic results equal to the reference's."""
    for ours, theirs in zip(
        PROCESSOR.post_process_semantic_segmentation(outputs, target_sizes=target_sizes),
        reference.post_process_semantic_segmentation(outputs, target_sizes=target_sizes),
        strict=True,
    ):
        assert torch.equal(ours, theirs)
    for ours, theirs in zip(
        PROCESSOR.post_process_instance_segmentation(outputs, target_sizes=target_sizes, **kwargs),
        reference.post_process_instance_segmentation(outputs, target_sizes=target_sizes, **kwargs),
        strict=True,
    ):
        assert ours["segments_info"] == theirs["segments_info"]
        assert torch.equal(ours["segmentation"], theirs["segmentation"])
    found = 0
    for ours, theirs in zip(
        PROCESSOR.post_process_panoptic_segmentation(outputs, target_sizes=target_sizes, **kwargs),
        reference.post_process_panoptic_segmentation(
            outputs, target_sizes=target_sizes, label_ids_to_fuse=set(), **kwargs
        ),
        strict=True,
    ):
        assert ours["segments_info"] == theirs["segments_info"]
        if theirs["segments_info"]:
            found += 1
            assert torch.equal(ours["segmentation"], theirs["segmentation"])
    return found


def smooth_outputs(batch=2, queries=20, classes=30, height=24, width=32, seed=0):
    """Model-like logits: class logits with a confident few, mask logits that are smooth fields
    (bicubic upsampling of a coarse grid) with trained-model spread."""
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(batch, queries, classes + 1, generator=generator) * 3
    coarse = torch.randn(batch, queries, height // 6, width // 6, generator=generator)
    masks = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return types.SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=masks * 9)


@pytest.mark.parametrize("seed", range(3))
def test_smooth_logits_match_reference(reference, seed):
    outputs = smooth_outputs(seed=seed)
    sizes = [(150, 190), (97, 131)]
    scores = semantic_scores(outputs.class_queries_logits, outputs.masks_queries_logits)[0]
    assert len(may_win(scores, sizes[0])) < scores.shape[0]  # the shortcut skips classes
    kwargs = {"threshold": 0.3, "overlap_mask_area_threshold": 0.3}
    assert assert_same_results(reference, outputs, sizes, **kwargs) > 0


@pytest.mark.parametrize("sizes", [[(150, 190), (64, 70)], [(30, 40), (20, 25)]])
def test_exact_ties_pick_the_first_index_like_the_reference(reference, sizes):
    """Two classes with equal logits tie everywhere in the semantic scores; two identical
    queries tie everywhere in the panoptic competition: the first one wins, as with argmax."""
    outputs = smooth_outputs(seed=5)
    outputs.class_queries_logits[..., 1] = outputs.class_queries_logits[..., 0]
    outputs.class_queries_logits[:, :, 0] += 4  # classes 0 and 1 dominate, tied
    outputs.class_queries_logits[:, :, 1] += 4
    outputs.class_queries_logits[:, 3] = outputs.class_queries_logits[:, 2]
    outputs.masks_queries_logits[:, 3] = outputs.masks_queries_logits[:, 2]
    semantic = PROCESSOR.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    assert all(not bool(s.eq(1).any()) for s in semantic)  # class 1 never beats class 0
    kwargs = {"threshold": 0.2, "overlap_mask_area_threshold": 0.3}
    assert assert_same_results(reference, outputs, sizes, **kwargs) > 0


def _tiny_model_outputs(scaled: bool):
    from PIL import Image

    from maskformer import MaskFormerForInstanceSegmentation
    from maskformer.presets import get_preset

    image = Image.open(PHOTO).convert("RGB")
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(get_preset("tiny-resnet")).eval()
    inputs = MaskFormerImageProcessor(size={"height": 128, "width": 160})(
        image, return_tensors="pt"
    )
    with torch.inference_mode():
        outputs = model(pixel_values=inputs["pixel_values"])
    class_logits, mask_logits = outputs.class_queries_logits, outputs.masks_queries_logits
    if scaled:  # as benchmarks/processing.py: the queries' differences, at trained spread
        class_logits = class_logits - class_logits.mean(1, keepdim=True)
        class_logits = class_logits / class_logits.std() * 3
        mask_logits = mask_logits - mask_logits.mean(1, keepdim=True)
        mask_logits = mask_logits / mask_logits.std() * 9.4
    return types.SimpleNamespace(
        class_queries_logits=class_logits, masks_queries_logits=mask_logits
    ), [image.size[::-1]]


@requires_shared_data
@pytest.mark.parametrize("scaled", [False, True])
def test_a_real_models_outputs_match_reference(reference, scaled):
    """A random-weight tiny model on a real photo, post-processed to the photo's size: raw (its
    queries are nearly identical: near ties everywhere) and scaled like a trained model's."""
    outputs, sizes = _tiny_model_outputs(scaled)
    kwargs = {"threshold": 0.5 if scaled else 0.05, "overlap_mask_area_threshold": 0.3}
    if not scaled:  # scores of 0.14: weighted probabilities stay below 0.14
        kwargs.update(mask_threshold=0.05, overlap_mask_area_threshold=0.0)
    assert assert_same_results(reference, outputs, sizes, **kwargs) == 1
