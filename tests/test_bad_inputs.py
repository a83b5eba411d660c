"""Bad arguments, paths and files given to `maskformer predict|evaluate|demo`: each ends in one
line on stderr that names the thing, and exit status 2, with nothing written.

The command is called in-process (`maskformer.cli.main`); data and a tiny checkpoint are made
here, so nothing depends on downloads or the shared samples.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.cli import main
from maskformer.engine.evaluate import EvaluateOptions
from maskformer.engine.predict import PredictOptions

ID2LABEL = {0: "sky", 1: "person", 2: "car"}
CATEGORIES = [
    {"id": 1, "name": "sky", "isthing": 0},
    {"id": 2, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
]


def tiny_checkpoint(folder):
    """A random tiny-resnet MaskFormer (3 classes) that commits to classes, and its processor."""
    from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation
    from maskformer.presets import get_preset
    from maskformer.processing.image_processor import MaskFormerImageProcessor

    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", id2label=dict(ID2LABEL)))
    with torch.no_grad():
        model.class_predictor.bias[-1] = -4.0  # "no object" unlikely: segments are found
        model.class_predictor.bias[[1, 2]] += 6.0
    model.save_pretrained(folder)
    MaskFormerImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(folder)
    return folder


def photo(path, width=40, height=30, seed=0):
    """A small random RGB picture saved at ``path``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def run(argv, capsys):
    """Exit code, stdout and the non-empty stderr lines of `maskformer ARGV`."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def assert_one_line(code, lines, *names, exit_code=2):
    assert code == exit_code, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_model"))


def predict_argv(model_dir, inputs, out, *extra):
    return [
        "predict",
        "--model",
        model_dir,
        *inputs,
        "--output-dir",
        out,
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]


# ------------------------------------------------------------------------ numbers, at parse time
PREDICT = ["predict", "--model", "m", "x.png"]
EVALUATE = ["evaluate", "--model", "m", "--data", "d", "--format", "ade20k", "--task", "semantic"]


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        (PREDICT, "--threshold", "nan"),
        (PREDICT, "--threshold", "7"),
        (PREDICT, "--threshold", "inf"),
        (PREDICT, "--threshold", "half"),
        (PREDICT, "--mask-threshold", "-1"),
        (PREDICT, "--overlap-mask-area-threshold", "1.01"),
        (PREDICT, "--batch-size", "0"),
        (PREDICT, "--batch-size", "1.5"),
        (PREDICT, "--batch-size", "١٢"),  # Arabic-Indic digits: int() would take them
        (PREDICT, "--fuse-labels", "-3"),
        (PREDICT, "--task", "depth"),
        (EVALUATE, "--max-images", "-1"),
        (EVALUATE, "--max-images", "0"),
        (EVALUATE, "--num-labels", "0"),
        (EVALUATE, "--mask-threshold", "nan"),
        (["demo"], "--steps", "0"),
        (["demo"], "--learning-rate", "nan"),
        (["demo"], "--learning-rate", "-0.1"),
        (["demo"], "--threads", "-1"),
        (["demo"], "--held-out", "0"),
        (["demo"], "--seed", "-5"),
    ],
)
def test_numbers_and_choices_are_checked_when_parsing(argv, flag, value, capsys, tmp_path):
    code, _, lines = run([*argv, flag, value], capsys)
    assert_one_line(code, lines, flag, value)
    assert not (tmp_path / "predictions").exists()


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["predict", "x.png"], ["--model"]),  # a required flag missing
        ([*PREDICT, "--colour", "red"], ["--colour"]),  # an unknown flag
        (["evaluate", "--model", "m", "--data", "d", "--task", "semantic"], ["--format"]),
        (["segment", "x.png"], ["segment"]),  # an unknown command
    ],
)
def test_malformed_command_lines_are_one_line(argv, names, capsys):
    code, _, lines = run(argv, capsys)
    assert_one_line(code, lines, *names)


def test_api_options_check_the_same_ranges():
    for bad in (
        {"threshold": float("nan")},
        {"mask_threshold": -1},
        {"overlap_mask_area_threshold": 2},
        {"batch_size": 0},
        {"label_ids_to_fuse": {-1}},
    ):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            PredictOptions(**bad)
        if name != "label_ids_to_fuse":
            with pytest.raises(ValueError, match=name):
                EvaluateOptions(**bad)
    with pytest.raises(ValueError, match="max_images"):
        EvaluateOptions(max_images=-1)


# ----------------------------------------------------------------------------------- input paths
def test_bad_input_paths_are_one_line_naming_them(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    cases = []
    cases.append(([tmp_path / "missing.jpg"], ["missing.jpg"]))
    cases.append(([str(tmp_path / "*.webp")], ["*.webp"]))
    (tmp_path / "empty_folder").mkdir()
    cases.append(([tmp_path / "empty_folder"], ["empty_folder"]))
    photo(tmp_path / "one" / "same.png")
    photo(tmp_path / "two" / "same.jpg")
    cases.append(([tmp_path / "one", tmp_path / "two"], ["same.png", "same.jpg"]))
    # different stems, one COCO image id: 0123 and 123 are both image 123
    photo(tmp_path / "ids" / "0123.png")
    photo(tmp_path / "ids" / "123.png")
    cases.append(([tmp_path / "ids"], ["0123.png", "123.png", "image_id"]))
    if hasattr(os, "mkfifo"):  # neither a file nor a folder
        os.mkfifo(tmp_path / "pipe.png")
        cases.append(([tmp_path / "pipe.png"], ["pipe.png"]))
    for inputs, names in cases:
        code, _, lines = run(predict_argv(model_dir, inputs, out), capsys)
        assert_one_line(code, lines, *names)
    assert not out.exists()


def test_output_dir_that_is_a_file_is_one_line(model_dir, tmp_path, capsys):
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    code, _, lines = run(predict_argv(model_dir, [photo(tmp_path / "a.png")], blocker), capsys)
    assert_one_line(code, lines, str(blocker), "not a folder")
    assert blocker.read_text() == "a file, not a folder"
    # a file further up the path
    code, _, lines = run(predict_argv(model_dir, [tmp_path / "a.png"], blocker / "deeper"), capsys)
    assert_one_line(code, lines, str(blocker))


def test_a_subfolder_that_is_a_file_is_one_line(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlays").write_text("in the way")
    code, _, lines = run(predict_argv(model_dir, [photo(tmp_path / "a.png")], out), capsys)
    assert_one_line(code, lines, "overlays", "not a folder")
    assert not (out / "panoptic").exists()  # stopped before the model was loaded


def test_demo_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "demo_out"
    blocker.write_text("a file")
    code, _, lines = run(["demo", "--quick", "--output-dir", blocker, "--no-progress"], capsys)
    assert_one_line(code, lines, "demo_out", "not a folder")


def test_unwritable_output_dir_is_one_line(model_dir, tmp_path, capsys, monkeypatch):
    # A read-only folder, simulated so that it holds for root too: creating files there fails.
    from maskformer.engine import prediction_files

    out = tmp_path / "read_only"
    real_open = prediction_files.os.open

    def refuse_in_out(path, *args, **kwargs):
        if str(path).startswith(str(out)):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(prediction_files.os, "open", refuse_in_out)
    code, _, lines = run(predict_argv(model_dir, [photo(tmp_path / "a.png")], out), capsys)
    assert_one_line(code, lines, str(out), "Permission denied")


# --------------------------------------------------------------------------------------- models
def test_bad_models_and_devices_are_one_line(model_dir, tmp_path, capsys):
    image = photo(tmp_path / "a.png")
    out = tmp_path / "out"
    weights_file = tmp_path / "weights.safetensors"
    weights_file.write_bytes(b"not a folder")
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    wrong_shape, bad_processor, bad_weights = (
        shutil.copytree(model_dir, tmp_path / name)
        for name in ("wrong_shape", "bad_processor", "bad_weights")
    )
    (wrong_shape / "config.json").write_text("[]")  # json, but not a config
    (bad_processor / "preprocessor_config.json").write_text("{oops")
    (bad_weights / "model.safetensors").write_bytes(b"garbage")
    for model, name in (
        (tmp_path / "no_such_model", "no_such_model"),
        (weights_file, "weights.safetensors"),
        (broken, "broken_model"),
        (wrong_shape, "wrong_shape"),
        (bad_processor, "preprocessor_config.json"),
        (bad_weights, "bad_weights"),
    ):
        code, _, lines = run(predict_argv(model, [image], out), capsys)
        assert_one_line(code, lines, name)
    code, _, lines = run(predict_argv(model_dir, [image], out, "--device", "toaster"), capsys)
    assert_one_line(code, lines, "toaster")


# ----------------------------------------------------------------------------------- evaluation
def _coco_data(folder, *, annotations=None):
    """A one-image COCO panoptic data folder in the layout `evaluate` reads."""
    photo(folder / "images" / "x.png", 40, 30)
    ids = np.zeros((30, 40), dtype=np.int64)
    ids[:, :20], ids[10:20, 25:35] = 1, 2
    from maskformer.utils.coco import panoptic_ids_to_rgb

    (folder / "panoptic").mkdir(parents=True, exist_ok=True)
    Image.fromarray(panoptic_ids_to_rgb(ids)).save(folder / "panoptic" / "x.png")
    segments = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2, "iscrowd": 0}]
    if annotations is None:
        annotations = [{"image_id": 7, "file_name": "x.png", "segments_info": segments}]
    data = {
        "images": [{"id": 7, "file_name": "x.png", "height": 30, "width": 40}],
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    (folder / "panoptic.json").write_text(json.dumps(data))
    return folder


def _ade_data(folder, sizes):
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir(parents=True)
    for index, (width, height) in enumerate(sizes):
        photo(folder / "images" / f"im{index}.jpg", width, height, seed=index)
        labels = np.random.default_rng(index).integers(0, 4, (height, width), dtype=np.uint8)
        Image.fromarray(labels).save(folder / "annotations" / f"im{index}.png")
    return folder


def evaluate_argv(data, fmt, task, output, *extra):
    return [
        "evaluate",
        "--data",
        data,
        "--format",
        fmt,
        "--task",
        task,
        "--output",
        output,
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]


def test_evaluate_output_that_cannot_be_written_is_one_line(model_dir, tmp_path, capsys):
    data = _coco_data(tmp_path / "coco")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("file")
    for output, name in ((folder, "a_folder"), (blocker / "figures.json", "blocker")):
        argv = evaluate_argv(data, "coco-panoptic", "panoptic", output, "--model", model_dir)
        code, _, lines = run(argv, capsys)
        assert_one_line(code, lines, name)
    assert blocker.read_text() == "file"


def test_evaluate_empty_data_sets_are_errors_not_empty_figures(model_dir, tmp_path, capsys):
    output = tmp_path / "figures.json"
    ade = _ade_data(tmp_path / "ade", sizes=[])
    code, _, lines = run(
        evaluate_argv(ade, "ade20k", "semantic", output, "--model", model_dir), capsys
    )
    assert_one_line(code, lines, "images")
    coco = _coco_data(tmp_path / "coco", annotations=[])
    argv = evaluate_argv(coco, "coco-panoptic", "panoptic", output, "--model", model_dir)
    code, _, lines = run(argv, capsys)
    assert_one_line(code, lines, "panoptic.json", "no images")
    assert not output.exists()


@pytest.mark.parametrize(
    ("damage", "names"),
    [
        (lambda d: d["annotations"][0].pop("file_name"), ["annotations[0]", "'file_name'"]),
        (lambda d: d["annotations"][0].pop("image_id"), ["annotations[0]", "'image_id'"]),
        (
            lambda d: d["annotations"][0]["segments_info"][1].pop("category_id"),
            ["segments_info[1]", "'category_id'"],
        ),
        (
            lambda d: d["annotations"][0]["segments_info"][0].update(id="one"),
            ["segments_info[0]", "'id'"],
        ),
        (lambda d: d["categories"][0].pop("id"), ["categories[0]", "'id'"]),
        (lambda d: d.pop("annotations"), ["'annotations'"]),
    ],
)
def test_prediction_files_with_missing_fields_are_one_line(damage, names, tmp_path, capsys):
    data = _coco_data(tmp_path / "coco")
    predictions = tmp_path / "pred.json"
    payload = json.loads((data / "panoptic.json").read_text())
    damage(payload)
    predictions.write_text(json.dumps(payload))
    (tmp_path / "pred").mkdir()
    argv = evaluate_argv(data, "coco-panoptic", "panoptic", tmp_path / "f.json")
    code, _, lines = run([*argv, "--predictions", predictions], capsys)
    assert_one_line(code, lines, "pred.json", *names)


def test_prediction_file_that_is_not_json_is_one_line(tmp_path, capsys):
    data = _coco_data(tmp_path / "coco")
    predictions = tmp_path / "pred.json"
    predictions.write_bytes(b'{"annotations": [\xff')
    argv = evaluate_argv(data, "coco-panoptic", "panoptic", tmp_path / "f.json")
    code, _, lines = run([*argv, "--predictions", predictions], capsys)
    assert_one_line(code, lines, "pred.json")


def test_ground_truth_with_missing_fields_is_one_line(model_dir, tmp_path, capsys):
    annotations = [{"image_id": 7, "segments_info": []}]  # no file_name
    data = _coco_data(tmp_path / "coco", annotations=annotations)
    argv = evaluate_argv(data, "coco-panoptic", "panoptic", tmp_path / "f.json")
    code, _, lines = run([*argv, "--model", model_dir], capsys)
    assert_one_line(code, lines, "panoptic.json", "'file_name'")


def test_evaluate_skips_a_corrupt_image_and_says_so(model_dir, tmp_path, capsys):
    data = _ade_data(tmp_path / "ade", sizes=[(40, 30), (36, 28), (32, 32)])
    (data / "images" / "im1.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    output = tmp_path / "figures.json"
    argv = evaluate_argv(data, "ade20k", "semantic", output, "--model", model_dir)
    code, table, lines = run([*argv, "--num-labels", "3"], capsys)
    assert code == 1, lines
    skipped = [line for line in lines if line.startswith("skipped")]
    assert len(skipped) == 1 and "im1.jpg" in skipped[0]
    figures = json.loads(output.read_text())
    assert figures["num_images"] == 2 and len(figures["skipped"]) == 1
    assert "mIoU" in table


def test_evaluate_max_images_takes_exactly_that_many(model_dir, tmp_path, capsys):
    data = _ade_data(tmp_path / "ade", sizes=[(40, 30), (36, 28), (32, 32)])
    output = tmp_path / "figures.json"
    argv = evaluate_argv(data, "ade20k", "semantic", output, "--model", model_dir)
    code, _, lines = run([*argv, "--max-images", "2"], capsys)
    assert code == 0, lines
    assert json.loads(output.read_text())["num_images"] == 2


def test_a_closed_stdout_pipe_is_quiet(tmp_path, capsys, monkeypatch):
    # `maskformer evaluate ... | head -1`: the reader goes away while the table is printed.
    data = _ade_data(tmp_path / "ade", sizes=[(40, 30)])
    output = tmp_path / "figures.json"

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    argv = evaluate_argv(data, "ade20k", "semantic", output)
    argv += ["--predictions", data / "annotations", "--num-labels", "4", "--no-reduce-labels"]
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main([str(a) for a in argv])
    monkeypatch.undo()
    assert code == 0
    assert capsys.readouterr().err == ""
    # the labels scored against themselves: every IoU is n / n, exactly 1.0 in floating point
    assert json.loads(output.read_text())["mIoU"] == 1.0


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--port", "70000"), ("--port", "-1"), ("--max-batch", "0"), ("--max-upload-mb", "nan")],
)
def test_serve_numbers_are_checked_when_the_command_line_is_read(capsys, flag, value) -> None:
    from maskformer.cli import main

    assert main(["serve", "--model", "nowhere", flag, value]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0]


def test_onnx_backend_refuses_tta_in_one_line(capsys, tmp_path) -> None:
    """Before any file is read (the .onnx here does not exist): TTA rescales each image, an
    exported graph has one input size. (Its --sliding-window takes tiles of that size:
    tests/test_onnx_backend.py.)"""
    from maskformer.cli import main

    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(image)
    argv = ["predict", "--backend", "onnxruntime", "--model", str(tmp_path / "m.onnx"), str(image)]
    assert main([*argv, "--tta", "flip", "--output-dir", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--backend pytorch" in lines[0]
