"""`maskformer predict --backend onnxruntime`: the same files as the PyTorch backend on the real
photos, and the checks of an .onnx file against its processor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data
from PIL import Image
from test_cli_export import save_decisive_checkpoint

from maskformer.cli import main

pytest.importorskip("onnxruntime", reason="the onnx extra (onnx, onnxruntime) is not installed")
pytestmark = requires_shared_data

PHOTOS = SHARED_DATA / "ade20k_sample" / "images"
SIZE = (96, 128)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint folder, .onnx exported from it by the command line at ``SIZE``)."""
    # 150 classes, as in the ADE20K sample, so `evaluate` can score it there.
    folder = save_decisive_checkpoint(tmp_path_factory.mktemp("checkpoint"), num_labels=150)
    output = tmp_path_factory.mktemp("onnx") / "model.onnx"
    photos = [str(p) for p in sorted(PHOTOS.glob("*.jpg"))]
    code = main(
        ["export", "--model", str(folder), "--output", str(output), "--height", "96"]
        + ["--width", "128", "--check-images", *photos]
    )
    assert code == 0 and output.is_file()
    return folder, output


def _predict(model, processor, output_dir: Path, task: str) -> None:
    from maskformer.engine.predict import PredictOptions, predict_images

    paths = sorted(PHOTOS.glob("*.jpg"))
    options = PredictOptions(task=task, output_dir=output_dir, progress=False, overlay=False)
    predict_images(model, processor, paths, options)


def test_onnxruntime_predict_writes_the_pytorch_backends_label_pngs(exported, tmp_path) -> None:
    from maskformer.engine.loading import load_model, load_processor

    folder, onnx_file = exported
    code = main(
        ["predict", "--backend", "onnxruntime", "--model", str(onnx_file), "--task", "semantic"]
        + ["--output-dir", str(tmp_path / "onnx"), "--no-progress", "--no-overlay", str(PHOTOS)]
    )
    assert code == 0
    # The PyTorch backend at the same fixed-size preparation: a model with an `input_size`
    # attribute gets its images fitted into that size and padded, like the exported one.
    model = load_model(folder)
    model.input_size = SIZE
    _predict(model, load_processor(folder), tmp_path / "torch", "semantic")
    shares, classes = [], set()
    for photo in sorted(PHOTOS.glob("*.jpg")):
        ours = np.asarray(Image.open(tmp_path / "onnx" / "semantic" / f"{photo.stem}.png"))
        theirs = np.asarray(Image.open(tmp_path / "torch" / "semantic" / f"{photo.stem}.png"))
        assert ours.shape == theirs.shape == Image.open(photo).size[::-1]
        shares.append(float((ours == theirs).mean()))
        classes |= set(np.unique(theirs).tolist())
    assert len(classes) >= 2  # the label maps are not one class painted everywhere
    # Same float32 graph in two runtimes: the logits differ by at most 1e-4 of their scale (the
    # export check measured it), so a pixel can change its class only where two classes' scores
    # tie within that. On this decisive model that set is empty (100% identical measured); a
    # handful of tie pixels on another CPU's summation order must not fail the test.
    assert min(shares) >= 0.999, shares


def test_onnxruntime_panoptic_matches_pytorch(exported, tmp_path) -> None:
    from maskformer.engine.loading import load_model, load_processor
    from maskformer.onnx_backend import OnnxRuntimeModel

    folder, onnx_file = exported
    runtime = OnnxRuntimeModel(onnx_file, threads=1)
    _predict(runtime, runtime.processor(), tmp_path / "onnx", "panoptic")
    model = load_model(folder)
    model.input_size = SIZE
    _predict(model, load_processor(folder), tmp_path / "torch", "panoptic")
    for photo in sorted(PHOTOS.glob("*.jpg")):
        ours = np.asarray(Image.open(tmp_path / "onnx" / "panoptic" / f"{photo.stem}.png"))
        theirs = np.asarray(Image.open(tmp_path / "torch" / "panoptic" / f"{photo.stem}.png"))
        # As above: ties within 1e-4 of the logits' scale are the only pixels that may differ.
        assert (ours == theirs).all(-1).mean() >= 0.999


def test_onnxruntime_evaluate_scores_what_pytorch_scores(exported, tmp_path) -> None:
    import json

    from maskformer.engine.evaluate import EvaluateOptions, evaluate_model
    from maskformer.engine.loading import load_model, load_processor

    folder, onnx_file = exported
    output = tmp_path / "figures.json"
    code = main(
        ["evaluate", "--backend", "onnxruntime", "--model", str(onnx_file), "--data"]
        + [str(PHOTOS.parent), "--format", "ade20k", "--task", "semantic", "--output"]
        + [str(output), "--no-progress"]
    )
    assert code == 0
    figures = json.loads(output.read_text())
    model = load_model(folder)
    model.input_size = SIZE  # the same fixed-size preparation
    options = EvaluateOptions(task="semantic", data_format="ade20k", progress=False)
    expected = evaluate_model(model, load_processor(folder), PHOTOS.parent, options)
    # Label maps agree to tie pixels (see above); each such pixel moves an IoU by under
    # 1 / (pixels of the class) < 1e-3 on these photos.
    assert abs(figures["mIoU"] - expected["mIoU"]) < 1e-3


def test_runtime_model_splits_a_batch_for_a_batch_one_file(exported) -> None:
    from maskformer.export import fixed_size_inputs
    from maskformer.onnx_backend import OnnxRuntimeModel

    _, onnx_file = exported
    runtime = OnnxRuntimeModel(onnx_file, threads=1)
    assert runtime.fixed_batch == 1 and runtime.input_size == SIZE
    photos = [Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*.jpg"))[:2]]
    pixel_values, _ = fixed_size_inputs(runtime.processor(), photos, SIZE)
    both = runtime(pixel_values=pixel_values)
    second = runtime(pixel_values=pixel_values[1:])
    assert both.class_queries_logits.shape == (2, 16, 151)
    # One image run alone or as the second of two goes through the same session call.
    assert torch.equal(both.masks_queries_logits[1:], second.masks_queries_logits)
    with pytest.raises(ValueError, match=r"exported at \(96, 128\)"):
        runtime(pixel_values=torch.zeros(1, 3, 64, 64))


def test_an_onnx_file_whose_inputs_do_not_match_its_processor_is_one_line(
    exported, tmp_path, capsys
) -> None:
    import json

    import onnx

    from maskformer.export import METADATA_KEY

    _, onnx_file = exported
    proto = onnx.load(str(onnx_file))
    entry = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    metadata = json.loads(entry.value)
    metadata["input_size"] = [128, 128]  # the graph itself takes 96 x 128
    entry.value = json.dumps(metadata)
    bad = tmp_path / "bad.onnx"
    onnx.save_model(proto, str(bad))
    code = main(
        ["predict", "--backend", "onnxruntime", "--model", str(bad), "--output-dir"]
        + [str(tmp_path / "out"), "--no-progress", str(PHOTOS)]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1
    assert "bad.onnx" in error[0] and "do not match its processor" in error[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dtype", "bfloat16"], "leave --dtype"),
        ([], "needs an .onnx file"),
    ],
)
def test_onnxruntime_backend_refuses_what_it_cannot_run(
    exported, tmp_path, capsys, extra, message
) -> None:
    folder, onnx_file = exported
    model = str(onnx_file) if extra else str(folder)
    code = main(
        ["predict", "--backend", "onnxruntime", "--model", model, "--output-dir"]
        + [str(tmp_path / "out"), "--no-progress", *extra, str(PHOTOS)]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0]


def test_onnxruntime_sliding_window_writes_the_pytorch_backends_files(exported, tmp_path) -> None:
    """Tiles of the exported size through ONNX Runtime give the PyTorch backend's label PNGs at
    the same window (same float32 graph: only ties within 1e-4 of the logits' scale may move a
    pixel, as above)."""
    folder, onnx_file = exported
    common = ["--task", "semantic", "--sliding-window", "--no-progress", "--no-overlay"]
    onnx_run = ["predict", "--backend", "onnxruntime", "--model", str(onnx_file), *common]
    assert main([*onnx_run, "--output-dir", str(tmp_path / "onnx"), str(PHOTOS)]) == 0
    torch_run = ["predict", "--model", str(folder), *common, "--window", *map(str, SIZE)]
    assert main([*torch_run, "--output-dir", str(tmp_path / "torch"), str(PHOTOS)]) == 0
    for photo in sorted(PHOTOS.glob("*.jpg")):
        ours = np.asarray(Image.open(tmp_path / "onnx" / "semantic" / f"{photo.stem}.png"))
        theirs = np.asarray(Image.open(tmp_path / "torch" / "semantic" / f"{photo.stem}.png"))
        assert ours.shape == theirs.shape == Image.open(photo).size[::-1]
        assert (ours == theirs).mean() >= 0.999


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sliding-window", "--window", "64", "64"], "differs from"),
        (["--tta", "flip"], "--tta rescales"),
    ],
)
def test_onnxruntime_takes_tiles_of_its_size_only(exported, tmp_path, capsys, extra, message):
    _, onnx_file = exported
    code = main(
        ["predict", "--backend", "onnxruntime", "--model", str(onnx_file), "--output-dir"]
        + [str(tmp_path / "out"), "--no-progress", str(PHOTOS), *extra]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0], error


def test_predict_images_refuses_another_window_for_an_exported_model(exported, tmp_path) -> None:
    from maskformer.engine.predict import PredictOptions, predict_images
    from maskformer.onnx_backend import OnnxRuntimeModel

    runtime = OnnxRuntimeModel(exported[1], threads=1)
    options = PredictOptions(
        task="semantic", output_dir=tmp_path, progress=False, sliding_window=((64, 64), 0.25)
    )
    with pytest.raises(ValueError, match="fixed input size 96 128"):
        predict_images(runtime, runtime.processor(), sorted(PHOTOS.glob("*.jpg")), options)
