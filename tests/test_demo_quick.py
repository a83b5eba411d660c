"""`maskformer demo --quick`: the whole demo path end to end, in a few training steps."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from maskformer.cli import main
from maskformer.data.synthetic import SyntheticShapesDataset


def test_quick_demo_trains_evaluates_draws_and_saves_a_usable_model(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--output-dir", str(out), "--no-progress", "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "mIoU" in printed and "PQ" in printed and "contact_sheet.png" in printed

    figures = json.loads((out / "metrics.json").read_text())
    assert figures["steps"] == 6 and figures["held_out_images"] == 8
    for key in ("mIoU", "PQ", "pixel_accuracy"):
        assert 0.0 <= figures[key] <= 1.0
    assert set(figures["per_class_IoU"]) == {"background", "disc", "square", "triangle"}

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.mode == "RGB" and sheet.width > 4 * 256
    assert len(list((out / "overlays").glob("*_prediction.png"))) == 8

    # The saved model is a checkpoint folder `maskformer predict` takes.
    image = SyntheticShapesDataset(1, image_size=64, seed=5).get_image(0)
    image.save(tmp_path / "shapes.png")
    code = main(
        [
            "predict",
            "--model",
            str(out / "model"),
            "--task",
            "semantic",
            str(tmp_path / "shapes.png"),
            "--output-dir",
            str(tmp_path / "pred"),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    label = Image.open(tmp_path / "pred" / "semantic" / "shapes.png")
    assert label.size == (64, 64) and np.asarray(label).max() < 4
