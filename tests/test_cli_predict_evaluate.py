"""`maskformer predict` / `evaluate` on tiny random checkpoints over the real sample photos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from maskformer.cli import main
from tests.conftest import SHARED_DATA, requires_shared_data

ADE = SHARED_DATA / "ade20k_sample"
COCO = SHARED_DATA / "coco_panoptic_sample"
pytestmark = requires_shared_data


def _save_tiny_checkpoint(folder, id2label, favoured):
    import torch

    from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation
    from maskformer.presets import get_preset
    from maskformer.processing.image_processor import MaskFormerImageProcessor

    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", id2label=id2label))
    with torch.no_grad():
        # Random weights that still commit: a few favoured classes, "no object" unlikely. (An
        # undecided model makes every pixel a near-tie, the slowest case for post-processing.)
        model.class_predictor.bias[-1] = -4.0
        model.class_predictor.bias[list(favoured)] += 6.0
    model.save_pretrained(folder)
    processor = MaskFormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ade_model(tmp_path_factory):
    names = [
        line.split(",")[-1].split(";")[0]
        for line in (ADE / "objectInfo150.csv").read_text().splitlines()[1:]
    ]
    return _save_tiny_checkpoint(
        tmp_path_factory.mktemp("ade_model"), dict(enumerate(names)), favoured=(0, 2, 12)
    )


@pytest.fixture(scope="module")
def coco_categories():
    return json.loads((COCO / "panoptic_coco_categories.json").read_text())


@pytest.fixture(scope="module")
def coco_model(tmp_path_factory, coco_categories):
    id2label = {index: c["name"] for index, c in enumerate(coco_categories)}
    # person and car (things), wall-other-merged (stuff)
    return _save_tiny_checkpoint(
        tmp_path_factory.mktemp("coco_model"), id2label, favoured=(0, 2, 131)
    )


PANOPTIC_THRESHOLDS = [
    "--threshold",
    "0.0",
    "--mask-threshold",
    "0.0",
    "--overlap-mask-area-threshold",
    "0.0",
]


def _run(argv, capsys=None):
    code = main([*argv, "--no-progress", "--device", "cpu"])
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def ade_predictions(ade_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ade_predictions")
    code, _, _ = _run(
        [
            "predict",
            "--model",
            str(ade_model),
            "--task",
            "semantic",
            str(ADE / "images"),
            "--output-dir",
            str(out),
            "--batch-size",
            "2",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def coco_panoptic_predictions(coco_model, coco_categories, tmp_path_factory):
    """Panoptic predictions of both COCO photos, stuff classes fused (as `evaluate` does)."""
    out = tmp_path_factory.mktemp("coco_predictions")
    stuff = [str(i) for i, c in enumerate(coco_categories) if not c["isthing"]]
    code, _, _ = _run(
        [
            "predict",
            "--model",
            str(coco_model),
            "--task",
            "panoptic",
            str(COCO / "images" / "*.jpg"),
            "--output-dir",
            str(out),
            *PANOPTIC_THRESHOLDS,
            "--fuse-labels",
            *stuff,
        ]
    )
    assert code == 0
    return out


def test_predict_semantic_writes_label_pngs_of_the_input_sizes(ade_predictions):
    photos = sorted((ADE / "images").glob("*.jpg"))
    for photo in photos:
        size = Image.open(photo).size
        label = Image.open(ade_predictions / "semantic" / f"{photo.stem}.png")
        assert label.mode == "L" and label.size == size
        assert np.asarray(label).max() < 150
        overlay = Image.open(ade_predictions / "overlays" / f"{photo.stem}.png")
        assert overlay.mode == "RGB" and overlay.width > size[0] and overlay.height >= size[1]


def test_predict_panoptic_png_ids_match_the_json(coco_panoptic_predictions, coco_categories):
    out = coco_panoptic_predictions
    data = json.loads((out / "panoptic.json").read_text())
    assert {a["image_id"] for a in data["annotations"]} == {142238, 439180}
    found_segments = 0
    for annotation in data["annotations"]:
        png = Image.open(out / "panoptic" / annotation["file_name"])
        photo = Image.open(COCO / "images" / f"{annotation['file_name'][:-4]}.jpg")
        assert png.mode == "RGB" and png.size == photo.size
        rgb = np.asarray(png).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        listed = [s["id"] for s in annotation["segments_info"]]
        assert len(listed) == len(set(listed))
        assert set(np.unique(ids).tolist()) - {0} == set(listed)
        for segment in annotation["segments_info"]:
            assert 0 <= segment["category_id"] < len(coco_categories)
            assert 0.0 <= segment["score"] <= 1.0
        found_segments += len(listed)
        assert (out / "overlays" / annotation["file_name"]).is_file()
    assert found_segments > 0


def test_predict_instance_rle_decodes_with_pycocotools(coco_model, tmp_path, capsys):
    from pycocotools import mask as mask_utils

    out = tmp_path / "out"
    photo = COCO / "images" / "000000439180.jpg"
    code, _, err = _run(
        [
            "predict",
            "--model",
            str(coco_model),
            "--task",
            "instance",
            str(photo),
            "--output-dir",
            str(out),
            "--threshold",
            "0.0",
        ],
        capsys,
    )
    assert code == 0, err
    results = json.loads((out / "instances.json").read_text())
    assert results, "random weights with threshold 0 give detections"
    width, height = Image.open(photo).size
    for entry in results:
        assert entry["image_id"] == 439180
        assert isinstance(entry["segmentation"]["counts"], str)
        assert entry["segmentation"]["size"] == [height, width]
        decoded = mask_utils.decode(entry["segmentation"])
        assert decoded.shape == (height, width) and decoded.any()
        assert 0.0 <= entry["score"] <= 1.0
    assert (out / "overlays" / "000000439180.png").is_file()


def test_corrupt_file_is_skipped_and_the_exit_code_says_so(ade_model, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(ADE / "images" / "ADE_val_00000003.jpg", inputs / "good.jpg")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out = tmp_path / "out"
    code, _, err = _run(
        [
            "predict",
            "--model",
            str(ade_model),
            "--task",
            "semantic",
            str(inputs),
            "--output-dir",
            str(out),
        ],
        capsys,
    )
    assert code == 1
    assert "broken.jpg" in err
    assert (out / "semantic" / "good.png").is_file()
    assert not (out / "semantic" / "broken.png").exists()


def test_existing_outputs_are_kept_without_overwrite(ade_model, tmp_path, capsys):
    out = tmp_path / "out"
    photo = str(ADE / "images" / "ADE_val_00000003.jpg")
    argv = [
        "predict",
        "--model",
        str(ade_model),
        "--task",
        "semantic",
        photo,
        "--output-dir",
        str(out),
    ]
    assert _run(argv, capsys)[0] == 0
    label = out / "semantic" / "ADE_val_00000003.png"
    label.write_bytes(b"keep me")
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert "ADE_val_00000003.png" in err and "--overwrite" in err
    assert label.read_bytes() == b"keep me"
    assert _run([*argv, "--overwrite"], capsys)[0] == 0
    assert Image.open(label).mode == "L"


def test_missing_model_folder_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    code, out, err = _run(
        ["predict", "--model", str(missing), str(ADE / "images"), "--output-dir", str(tmp_path)],
        capsys,
    )
    assert code == 2
    assert err.strip().count("\n") == 0 and "no_such_model" in err and "Traceback" not in err


def test_command_line_entry_point_reports_missing_data_folder(ade_model, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskformer",
            "evaluate",
            "--model",
            str(ade_model),
            "--data",
            str(tmp_path / "nowhere"),
            "--format",
            "ade20k",
            "--task",
            "semantic",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr


def test_hub_id_while_offline_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    code, _, err = _run(
        [
            "predict",
            "--model",
            "someone/not-a-cached-model",
            str(ADE / "images"),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2
    assert err.strip().count("\n") == 0 and "offline" in err


def test_evaluate_semantic_model_and_prediction_files_agree(
    ade_model, ade_predictions, tmp_path, capsys
):
    from_model = tmp_path / "model.json"
    code, table, err = _run(
        [
            "evaluate",
            "--model",
            str(ade_model),
            "--data",
            str(ADE),
            "--format",
            "ade20k",
            "--task",
            "semantic",
            "--output",
            str(from_model),
        ],
        capsys,
    )
    assert code == 0, err
    assert "mIoU" in table and "pixel_accuracy" in table
    from_files = tmp_path / "files.json"
    from_files_argv = [
        "evaluate",
        "--predictions",
        str(ade_predictions),
        "--data",
        str(ADE),
        "--format",
        "ade20k",
        "--task",
        "semantic",
        "--output",
        str(from_files),
    ]
    code, _, err = _run(from_files_argv, capsys)
    assert code == 0, err
    model_figures = json.loads(from_model.read_text())
    file_figures = json.loads(from_files.read_text())
    assert 0.0 <= model_figures["mIoU"] <= 1.0 and model_figures["num_images"] == 3
    # Same images in the same batches of 2, same process and thread count -> the same label maps,
    # so the integer counts are equal and the float64 figures agree to a few ulps (approx: 1e-6).
    assert model_figures["mIoU"] == pytest.approx(file_figures["mIoU"])
    assert model_figures["pixel_accuracy"] == pytest.approx(file_figures["pixel_accuracy"])
    code, _, err = _run(from_files_argv, capsys)
    assert code == 2 and "already exists" in err


def test_evaluate_panoptic_model_and_prediction_files_agree(
    coco_model, coco_panoptic_predictions, tmp_path, capsys
):
    from_model = tmp_path / "model.json"
    code, table, err = _run(
        [
            "evaluate",
            "--model",
            str(coco_model),
            "--data",
            str(COCO),
            "--format",
            "coco-panoptic",
            "--task",
            "panoptic",
            *PANOPTIC_THRESHOLDS,
            "--output",
            str(from_model),
        ],
        capsys,
    )
    assert code == 0, err
    assert "Things" in table and "Stuff" in table
    from_files = tmp_path / "files.json"
    code, _, err = _run(
        [
            "evaluate",
            "--predictions",
            str(coco_panoptic_predictions / "panoptic.json"),
            "--data",
            str(COCO),
            "--format",
            "coco-panoptic",
            "--task",
            "panoptic",
            "--output",
            str(from_files),
        ],
        capsys,
    )
    assert code == 0, err
    model_figures = json.loads(from_model.read_text())
    file_figures = json.loads(from_files.read_text())
    assert model_figures["num_images"] == file_figures["num_images"] == 2
    assert model_figures["per_class"] == file_figures["per_class"]
    counted = [v for v in model_figures["per_class"].values() if v["TP"] + v["FP"] + v["FN"]]
    assert counted, "the random model predicted segments, so some category was scored"


def test_evaluate_instance_reports_mask_ap(coco_model, tmp_path, capsys):
    output = tmp_path / "instance.json"
    code, table, err = _run(
        [
            "evaluate",
            "--model",
            str(coco_model),
            "--data",
            str(COCO),
            "--format",
            "coco-panoptic",
            "--task",
            "instance",
            "--threshold",
            "0.0",
            "--output",
            str(output),
        ],
        capsys,
    )
    assert code == 0, err
    assert "AP50" in table
    figures = json.loads(output.read_text())
    assert figures["num_images"] == 2
    assert figures["AP"] is None or 0.0 <= figures["AP"] <= 1.0


def test_evaluate_rejects_a_task_the_format_cannot_score(ade_model, tmp_path, capsys):
    code, _, err = _run(
        [
            "evaluate",
            "--model",
            str(ade_model),
            "--data",
            str(ADE),
            "--format",
            "ade20k",
            "--task",
            "panoptic",
            "--output",
            str(tmp_path / "x.json"),
        ],
        capsys,
    )
    assert code == 2 and "coco-panoptic" in err
