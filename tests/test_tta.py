"""Test-time augmentation: option parsing, combination rules, identity cases."""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from maskformer.engine.tta import (
    TestTimeAugmentation,
    combine_queries,
    run_views,
    tta_outputs,
    tta_semantic,
)
from maskformer.presets import get_preset


@pytest.fixture(scope="module")
def tiny_model() -> MaskFormerForInstanceSegmentation:
    torch.manual_seed(0)
    return MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", num_labels=5)).eval()


def _photo() -> Image.Image:
    path = SHARED_DATA / "ade20k_sample" / "images" / "ADE_val_00000003.jpg"
    return Image.open(path).convert("RGB")


def test_parse_scales_and_flip() -> None:
    tta = TestTimeAugmentation.parse(["scales=0.5,1.0,1.5", "flip"])
    assert tta.scales == (0.5, 1.0, 1.5) and tta.flip
    assert tta.views()[0] == (0.5, False) and len(tta.views()) == 6
    assert TestTimeAugmentation.parse("flip").views() == [(1.0, False), (1.0, True)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [(["rotate"], "unknown"), (["scales=a,b"], "comma-separated"), (["scales=0"], r"\[0.1, 4\]")],
)
def test_bad_options_name_the_option(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        TestTimeAugmentation.parse(spec)


@requires_shared_data
def test_one_view_equals_the_plain_semantic_path(tiny_model) -> None:
    processor = MaskFormerImageProcessor(size={"shortest_edge": 128, "longest_edge": 256})
    image = _photo()
    ours = tta_semantic(tiny_model, processor, image, TestTimeAugmentation())
    inputs = processor(images=[image], return_tensors="pt")
    with torch.inference_mode():
        outputs = tiny_model(pixel_values=inputs["pixel_values"])
    plain = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[(image.height, image.width)]
    )[0]
    assert torch.equal(ours, plain)


@requires_shared_data
def test_flip_of_a_mirrored_image_mirrors_the_semantic_map(tiny_model) -> None:
    """Views {plain, flip} of an image and of its mirror image are the same two inputs, so the
    averaged scores are mirror images (sums of the same two terms in swapped order: identical
    values, floating-point addition being commutative)."""
    processor = MaskFormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 192})
    image = _photo()
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    tta = TestTimeAugmentation(flip=True)
    assert torch.equal(
        tta_semantic(tiny_model, processor, image, tta),
        tta_semantic(tiny_model, processor, mirrored, tta).flip(-1),
    )


@requires_shared_data
def test_identical_views_average_to_the_single_prediction(tiny_model) -> None:
    """Two identical views match query i to query i (zero cost on the diagonal) and average to
    the same probabilities; back to logits through log / logit, within float32 rounding of
    those round trips (a few ulp of the probabilities, amplified by 1 / (p (1 - p)) ≤ 1e6 at
    the clamp: bounded here by comparing the probabilities, not the logits)."""
    processor = MaskFormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 192})
    image = _photo()
    single = tta_outputs(tiny_model, processor, image, TestTimeAugmentation())
    twice = TestTimeAugmentation(scales=(1.0, 1.0))  # tta_outputs would run one of them
    double = combine_queries(run_views(tiny_model, processor, image, twice), twice)
    assert double.masks_queries_logits.shape == single.masks_queries_logits.shape
    torch.testing.assert_close(
        double.class_queries_logits.softmax(-1),
        single.class_queries_logits.softmax(-1),
        rtol=0,
        atol=1e-6,
    )
    torch.testing.assert_close(
        double.masks_queries_logits.sigmoid(),
        single.masks_queries_logits.sigmoid(),
        rtol=0,
        atol=1e-6,
    )
    result = processor.post_process_panoptic_segmentation(
        double, target_sizes=[(image.height, image.width)]
    )[0]
    assert result["segmentation"].shape == (image.height, image.width)


def test_queries_are_matched_to_the_unmirrored_view_nearest_scale_one() -> None:
    from maskformer.engine.tta import reference_view

    tta = TestTimeAugmentation.parse(["scales=0.5,0.75,1.0,1.25,1.5", "flip"])
    assert tta.views()[reference_view(tta)] == (1.0, False)
    # 0.8 and 1.25 are equally far from 1 on a log scale: the larger (finer masks) wins
    assert TestTimeAugmentation(scales=(0.8, 1.25)).views()[
        reference_view(TestTimeAugmentation(scales=(0.8, 1.25)))
    ] == (1.25, False)


@requires_shared_data
def test_panoptic_tta_averages_only_the_views_at_the_reference_scale(tiny_model) -> None:
    """Scales 0.5, 1.0 with flip: the queries come from the two views at scale 1 (plain and
    mirrored), computed from those two views alone; the other scale is not even run."""
    processor = MaskFormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 192})
    image = _photo()
    tta = TestTimeAugmentation(scales=(0.5, 1.0), flip=True)
    pair = TestTimeAugmentation(scales=(1.0,), flip=True)
    ours = tta_outputs(tiny_model, processor, image, tta)
    expected = combine_queries(run_views(tiny_model, processor, image, pair), pair)
    assert torch.equal(ours.masks_queries_logits, expected.masks_queries_logits)
    every = combine_queries(run_views(tiny_model, processor, image, tta), tta)
    assert torch.equal(every.class_queries_logits, expected.class_queries_logits)
    mixed = combine_queries(run_views(tiny_model, processor, image, tta), tta, all_scales=True)
    assert not torch.equal(mixed.masks_queries_logits, expected.masks_queries_logits)
