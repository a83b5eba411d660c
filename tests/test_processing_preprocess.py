"""MaskFormerImageProcessor preprocessing: parity with transformers 4.34.1, fixes, errors, I/O."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.processing import (
    BatchFeature,
    MaskFormerFeatureExtractor,
    MaskFormerImageProcessor,
)
from tests.conftest import SHARED_DATA, requires_shared_data

ADE = SHARED_DATA / "ade20k_sample"
COCO = SHARED_DATA / "coco_panoptic_sample"


def _reference(hf, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf.MaskFormerImageProcessor(**kwargs)


def assert_same_batch(ours, theirs) -> None:
    assert set(ours) == set(theirs)
    for key in ("pixel_values", "pixel_mask"):
        a, b = np.asarray(ours[key]), np.asarray(theirs[key])
        assert a.shape == b.shape and a.dtype == b.dtype, key
        if key == "pixel_values":
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        else:
            np.testing.assert_array_equal(a, b)
    for key in ("mask_labels", "class_labels"):
        if key in theirs:
            assert len(ours[key]) == len(theirs[key])
            for a, b in zip(ours[key], theirs[key]):
                assert a.dtype == b.dtype and torch.equal(a, b), key


def _ade_sample():
    images = sorted((ADE / "images").glob("*.jpg"))
    photos = [Image.open(path).convert("RGB") for path in images]
    maps = [Image.open(ADE / "annotations" / f"{path.stem}.png") for path in images]
    return photos, maps


def _coco_sample():
    """Photos, int64 segment-id maps (R + 256 G + 256^2 B) and per-image id -> category dicts."""
    annotations = json.loads((COCO / "panoptic_examples.json").read_text())["annotations"]
    photos, id_maps, mappings = [], [], []
    for annotation in annotations:
        name = annotation["file_name"]
        photos.append(Image.open(COCO / "images" / name.replace(".png", ".jpg")).convert("RGB"))
        rgb = np.asarray(Image.open(COCO / "panoptic" / name).convert("RGB")).astype(np.int64)
        id_maps.append(rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2])
        mappings.append({s["id"]: s["category_id"] for s in annotation["segments_info"]})
    return photos, id_maps, mappings


@requires_shared_data
def test_ade20k_sample_matches_reference(hf):
    photos, maps = _ade_sample()
    kwargs = {"do_reduce_labels": True, "ignore_index": 255}
    ours = MaskFormerImageProcessor(**kwargs)(photos, maps, return_tensors="pt")
    theirs = _reference(hf, **kwargs)(photos, maps, return_tensors="pt")
    assert_same_batch(ours, theirs)
    assert ours["pixel_values"].shape == (3, 3, 800, 1120)


@requires_shared_data
def test_coco_panoptic_sample_matches_reference(hf):
    photos, id_maps, mappings = _coco_sample()
    # The reference only takes ids <= 255: give it the same maps with ids renumbered 0..n-1.
    small_maps, small_mappings = [], []
    for id_map, mapping in zip(id_maps, mappings):
        ids, inverse = np.unique(id_map, return_inverse=True)
        small_maps.append(inverse.reshape(id_map.shape).astype(np.uint8))
        small_mappings.append({i: mapping[v] for i, v in enumerate(ids.tolist()) if v in mapping})
    for small_mapping in small_mappings:
        small_mapping.setdefault(0, 0)  # the void id 0 when present: mapped then ignored below
    ours = MaskFormerImageProcessor(ignore_index=255)(
        photos, small_maps, instance_id_to_semantic_id=small_mappings, return_tensors="pt"
    )
    theirs = _reference(hf, ignore_index=255)(
        photos, small_maps, instance_id_to_semantic_id=small_mappings, return_tensors="pt"
    )
    assert_same_batch(ours, theirs)
    # The raw 24-bit ids (our fix) give the same masks and classes once void (0) is ignored.
    raw = MaskFormerImageProcessor(ignore_index=0)(
        photos, id_maps, instance_id_to_semantic_id=mappings, return_tensors="pt"
    )
    renumbered = MaskFormerImageProcessor(ignore_index=0)(
        photos, small_maps, instance_id_to_semantic_id=small_mappings, return_tensors="pt"
    )
    for key in ("mask_labels", "class_labels"):
        for a, b in zip(raw[key], renumbered[key]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("do_resize", [True, False])
@pytest.mark.parametrize("return_tensors", [None, "np", "pt"])
def test_random_images_match_reference(hf, do_resize, return_tensors):
    rng = np.random.default_rng(int(do_resize) + len(str(return_tensors)))
    images, maps = [], []
    for _ in range(3):
        h, w = rng.integers(17, 90, size=2)
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        maps.append(rng.integers(0, 7, (h, w)).astype(np.uint8))
    kwargs = {
        "do_resize": do_resize,
        "ignore_index": 255,
        "size": {"shortest_edge": 64, "longest_edge": 100},
    }
    ours = MaskFormerImageProcessor(**kwargs)(images, maps, return_tensors=return_tensors)
    theirs = _reference(hf, **kwargs)(images, maps, return_tensors=return_tensors)
    assert type(ours["pixel_values"]) is type(theirs["pixel_values"])
    assert_same_batch(ours, theirs)


def test_input_kinds_match_reference(hf):
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    inputs = [
        Image.fromarray(hwc),
        hwc.transpose(2, 0, 1).copy(),
        torch.from_numpy(hwc.transpose(2, 0, 1).copy()),
        hwc.astype(np.float32) / 255.0,
    ]
    reference = _reference(hf)
    ours = MaskFormerImageProcessor()
    for image in inputs:
        assert_same_batch(ours(image, return_tensors="np"), reference(image, return_tensors="np"))
    batch = np.stack([hwc, hwc[::-1].copy()])
    assert_same_batch(ours(batch, return_tensors="np"), reference(batch, return_tensors="np"))


def test_size_forms_match_reference(hf):
    image = np.random.default_rng(1).integers(0, 256, (100, 2000, 3), dtype=np.uint8)
    for kwargs in (
        {},
        {"size": 64, "max_size": 90},
        {"size": {"height": 40, "width": 50}},
        {"size_divisor": 0},
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            ours = MaskFormerImageProcessor(**kwargs)
        theirs = _reference(hf, **kwargs)
        assert_same_batch(ours(image, return_tensors="np"), theirs(image, return_tensors="np"))
    assert MaskFormerImageProcessor()(image, return_tensors="pt")["pixel_values"].shape[-2:] == (
        96,
        1344,
    )


def test_label_ids_above_255_resize_like_pil_nearest():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 200, (37, 53)).astype(np.uint8)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    processor = MaskFormerImageProcessor(
        ignore_index=None, size={"shortest_edge": 90, "longest_edge": 200}
    )
    wide = small.astype(np.int32) * 1000 + 70000
    for dtype in (np.int32, np.uint16 if wide.max() < 65536 else np.int64):
        a = processor(image, small, return_tensors="pt")
        b = processor(image, wide.astype(dtype), return_tensors="pt")
        assert torch.equal(a["mask_labels"][0], b["mask_labels"][0])
        assert torch.equal(b["class_labels"][0], a["class_labels"][0] * 1000 + 70000)


def test_label_map_kinds():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ids = rng.integers(0, 4, (20, 30)).astype(np.uint8)
    processor = MaskFormerImageProcessor(do_resize=False, ignore_index=255)
    expected = processor(image, ids, return_tensors="pt")
    palette = Image.fromarray(ids, mode="L").convert("P")
    for label_map in (
        Image.fromarray(ids),
        palette,
        Image.fromarray(ids.astype(np.int32), mode="I"),
        Image.fromarray(ids.astype(np.uint16)),
        torch.from_numpy(ids),
        ids.astype(np.int32),
    ):
        got = processor(image, label_map, return_tensors="pt")
        assert torch.equal(got["mask_labels"][0], expected["mask_labels"][0])
        assert torch.equal(got["class_labels"][0], expected["class_labels"][0])


def test_empty_and_all_ignored_maps_give_no_masks():
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    processor = MaskFormerImageProcessor(do_resize=False, ignore_index=255, do_reduce_labels=True)
    out = processor([image, image], [np.zeros((10, 12), np.uint8), np.full((10, 12), 3, np.uint8)])
    assert out["mask_labels"][0].shape == (0, 10, 12)
    assert out["class_labels"][0].shape == (0,)
    assert out["class_labels"][1].tolist() == [2]


def test_ignore_index_none_pads_with_zero():
    images = [np.zeros((10, 12, 3), np.uint8), np.zeros((6, 8, 3), np.uint8)]
    maps = [np.ones((10, 12), np.uint8), np.full((6, 8), 2, np.uint8)]
    out = MaskFormerImageProcessor(do_resize=False)(images, maps, return_tensors="pt")
    assert out["mask_labels"][1].shape == (1, 10, 12)
    assert out["mask_labels"][1][0, :6, :8].eq(1).all() and out["mask_labels"][1][0, 6:].eq(0).all()
    assert out["class_labels"][0].tolist() == [1]


def test_reduce_labels_argument_of_preprocess_is_honoured():
    image = np.zeros((4, 5, 3), np.uint8)
    label_map = np.array([[0, 1, 2, 3, 3]] * 4, np.uint8)
    processor = MaskFormerImageProcessor(do_resize=False, ignore_index=255)
    with pytest.warns(FutureWarning):
        out = processor(image, label_map, reduce_labels=True)
    assert out["class_labels"][0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="reduce_labels"), pytest.warns(FutureWarning):
        processor(image, label_map, reduce_labels=True, do_reduce_labels=True)


def test_instance_maps_with_global_and_per_image_dicts():
    image = np.zeros((4, 3, 3), np.uint8)
    instance_map = np.array([[1, 2, 3]] * 4, np.uint8)
    processor = MaskFormerImageProcessor(do_resize=False, ignore_index=255)
    out = processor(
        [image, image], [instance_map, instance_map], instance_id_to_semantic_id={1: 5, 2: 5, 3: 9}
    )
    assert [c.tolist() for c in out["class_labels"]] == [[5, 5, 9], [5, 5, 9]]
    per_image = [{1: 5, 2: 5, 3: 9}, {1: 1, 2: 2, 3: 3}]
    out = processor(
        [image, image], [instance_map, instance_map], instance_id_to_semantic_id=per_image
    )
    assert [c.tolist() for c in out["class_labels"]] == [[5, 5, 9], [1, 2, 3]]
    out = processor(
        image, instance_map, instance_id_to_semantic_id={1: 5, 2: 5, 3: 9}, do_reduce_labels=True
    )
    assert out["class_labels"][0].tolist() == [4, 4, 8]
    with pytest.raises(KeyError, match="instance_id_to_semantic_id"):
        processor(image, instance_map, instance_id_to_semantic_id={1: 5})


def test_channels_last_input_gives_correct_pixel_mask():
    images = [np.zeros((10, 12, 3), np.uint8), np.zeros((6, 8, 3), np.uint8)]
    out = MaskFormerImageProcessor(do_resize=False)(
        images, input_data_format="channels_last", return_tensors="pt"
    )
    assert out["pixel_values"].shape == (2, 3, 10, 12)
    assert out["pixel_mask"].shape == (2, 10, 12)
    assert out["pixel_mask"][1].sum() == 48


def test_grayscale_and_pil_rgba_become_rgb():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    processor = MaskFormerImageProcessor(size={"shortest_edge": 32, "longest_edge": 64})
    expected = processor(rgb, return_tensors="np")["pixel_values"]
    rgba = np.concatenate([rgb, np.full((20, 24, 1), 7, np.uint8)], axis=-1)
    for image in (gray, Image.fromarray(gray), Image.fromarray(rgba)):
        got = processor(image, return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(got, expected)
    # Only a PIL image says it has alpha: a 4-channel array keeps its 4 channels, so the
    # 3-value default statistics do not fit it.
    with pytest.raises(ValueError, match="image_mean.*4 channels"):
        processor(rgba)
    palette = Image.fromarray((gray // 16).astype(np.uint8), mode="P")
    palette.putpalette([v for i in range(256) for v in (i * 16 % 256, i, 255 - i)])
    np.testing.assert_array_equal(
        processor(palette, return_tensors="np")["pixel_values"],
        processor(np.asarray(palette.convert("RGB")), return_tensors="np")["pixel_values"],
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p, i, m: p(i, np.zeros((5, 5), np.uint8)), "segmentation_maps"),
        (lambda p, i, m: p([i, i], [m]), "same length"),
        (lambda p, i, m: p(i, -m.astype(np.int32) - 1), "negative"),
        (lambda p, i, m: p(np.full((8, 9, 3), np.nan, np.float32)), "NaN"),
        (lambda p, i, m: p(i, return_tensors="tf"), "return_tensors"),
        (lambda p, i, m: p(np.zeros((2, 2, 8, 9, 3), np.uint8)), "images"),
        (lambda p, i, m: p(i, np.zeros((2, 2, 8, 9), np.uint8)), "segmentation_maps"),
        (lambda p, i, m: p("not an image"), "images"),
        (lambda p, i, m: p(i, m.astype(np.float32) + 0.5), "segmentation_maps"),
        (lambda p, i, m: p([], []), "`images` is empty"),
        (lambda p, i, m: p([i], []), "`segmentation_maps` is empty"),
        # Raised by the label encoding.
        (
            lambda p, i, m: MaskFormerImageProcessor()(i, m, do_reduce_labels=True),
            "ignore_index",
        ),
        (lambda p, i, m: p(i, m, instance_id_to_semantic_id=[{}, {}]), "instance_id"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, match):
    image = np.zeros((8, 9, 3), np.uint8)
    label_map = np.ones((8, 9), np.uint8)
    with pytest.raises(ValueError, match=match):
        call(MaskFormerImageProcessor(ignore_index=255), image, label_map)


def test_batch_feature_access_and_to():
    out = MaskFormerImageProcessor(do_resize=False, ignore_index=255)(
        np.zeros((4, 5, 3), np.uint8), np.ones((4, 5), np.uint8), return_tensors="pt"
    )
    assert isinstance(out, BatchFeature)
    assert out.pixel_values is out["pixel_values"]
    moved = out.to(torch.float64)
    assert moved["pixel_values"].dtype == torch.float64 and moved["pixel_mask"].dtype == torch.int64
    assert moved["mask_labels"][0].dtype == torch.float64


def test_save_and_load_roundtrip(tmp_path, hf):
    processor = MaskFormerImageProcessor(ignore_index=255, do_reduce_labels=True, size_divisor=16)
    processor.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "preprocessor_config.json").read_text())
    theirs = _reference(hf, ignore_index=255, do_reduce_labels=True, size_divisor=16).to_dict()
    theirs = json.loads(
        json.dumps({k: v for k, v in theirs.items() if k != "_processor_class"}, default=int)
    )
    assert stored == theirs
    loaded = MaskFormerImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    reference_loaded = hf.MaskFormerImageProcessor.from_pretrained(tmp_path)
    assert reference_loaded.size_divisor == 16 and reference_loaded.do_reduce_labels


def test_legacy_hub_config_keys():
    legacy = {
        "size": 512,
        "max_size": 2048,
        "size_divisibility": 32,
        "reduce_labels": True,
        "ignore_index": 255,
        "num_labels": 150,
        "feature_extractor_type": "MaskFormerFeatureExtractor",
    }
    processor = MaskFormerImageProcessor.from_dict(legacy)
    assert processor.size == {"shortest_edge": 512, "longest_edge": 2048}
    assert (
        processor.size_divisor == 32 and processor.do_reduce_labels and processor.num_labels == 150
    )
    assert legacy["size"] == 512  # the caller's dict is untouched
    with pytest.warns(FutureWarning):
        MaskFormerImageProcessor(max_size=1000)


def test_missing_config_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        MaskFormerImageProcessor.from_pretrained(tmp_path)


def test_feature_extractor_is_deprecated():
    with pytest.warns(FutureWarning, match="MaskFormerFeatureExtractor"):
        extractor = MaskFormerFeatureExtractor()
    assert isinstance(extractor, MaskFormerImageProcessor)


def test_encode_inputs_pads_processed_images(hf):
    rng = np.random.default_rng(2)
    images = [
        rng.standard_normal((3, 10, 12)).astype(np.float32),
        rng.standard_normal((3, 7, 15)).astype(np.float32),
    ]
    maps = [
        rng.integers(0, 4, (10, 12)).astype(np.uint8),
        rng.integers(0, 4, (7, 15)).astype(np.uint8),
    ]
    ours = MaskFormerImageProcessor().encode_inputs(
        images, maps, ignore_index=255, return_tensors="pt"
    )
    theirs = _reference(hf).encode_inputs(images, maps, ignore_index=255, return_tensors="pt")
    assert_same_batch(ours, theirs)


def test_resize_rescale_normalize_methods_match_reference(hf):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (3, 37, 53), dtype=np.uint8)
    ours, theirs = MaskFormerImageProcessor(), _reference(hf)
    size = {"shortest_edge": 64, "longest_edge": 128}
    resized = ours.resize(image, size=size, size_divisor=32)
    np.testing.assert_array_equal(resized, theirs.resize(image, size=size, size_divisor=32))
    assert resized.shape == (3, 64, 96)
    rescaled = ours.rescale(resized, 1 / 255)
    np.testing.assert_array_equal(rescaled, theirs.rescale(resized, 1 / 255))
    np.testing.assert_array_equal(
        ours.normalize(rescaled, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]),
        theirs.normalize(rescaled, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]),
    )
    masks, classes = ours.convert_segmentation_map_to_binary_masks(
        np.array([[0, 3], [7, 3]], np.uint8), ignore_index=255, reduce_labels=True
    )
    assert classes.tolist() == [2, 6] and masks.shape == (2, 2, 2) and masks.dtype == np.float32


def test_missing_local_path_raises_without_touching_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError):
        MaskFormerImageProcessor.from_pretrained(tmp_path / "nowhere" / "else")
    with pytest.raises(FileNotFoundError):
        MaskFormerImageProcessor.from_pretrained("./not-here")


def test_label_encoding_with_two_torch_threads_matches_reference(hf, two_torch_threads):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(30, 40), (44, 28)]]
    maps = [rng.integers(0, 6, image.shape[:2]).astype(np.uint8) for image in images]
    for kwargs in ({"ignore_index": 255}, {"ignore_index": 255, "do_reduce_labels": True}):
        ours = MaskFormerImageProcessor(size=64)(images, maps, return_tensors="pt", **kwargs)
        theirs = _reference(hf, size=64)(images, maps, return_tensors="pt", **kwargs)
        assert_same_batch(ours, theirs)


def test_label_encoding_with_two_torch_threads_raises_naming_the_argument(two_torch_threads):
    image, label_map = np.zeros((8, 9, 3), np.uint8), np.ones((8, 9), np.uint8)
    with pytest.raises(ValueError, match="ignore_index"):
        MaskFormerImageProcessor()(image, label_map, do_reduce_labels=True)
    with pytest.raises(ValueError, match="instance_id"):
        MaskFormerImageProcessor()(image, label_map, instance_id_to_semantic_id=[{}, {}])
