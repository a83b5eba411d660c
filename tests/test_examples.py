"""The scripts in examples/ run end to end on a tiny random checkpoint and a real photo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from maskformer.presets import get_preset
from tests.conftest import REPO_ROOT, SHARED_DATA, requires_shared_data

EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-checkpoint")
    MaskFormerForInstanceSegmentation(get_preset("tiny-resnet")).save_pretrained(folder)
    MaskFormerImageProcessor(size={"shortest_edge": 128, "longest_edge": 256}).save_pretrained(
        folder
    )
    return folder


@requires_shared_data
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("semantic_segmentation.py", "_semantic.png"),
        ("instance_segmentation.py", "instances"),
        ("panoptic_segmentation.py", "_panoptic.png"),
    ],
)
def test_example_runs(script: str, expected: str, checkpoint: Path, tmp_path: Path) -> None:
    photo = SHARED_DATA / "ade20k_sample" / "images" / "ADE_val_00000001.jpg"
    command = [sys.executable, str(EXAMPLES / script), "--model", str(checkpoint), str(photo)]
    if script != "instance_segmentation.py":
        command += ["--output-dir", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout
    written = list(tmp_path.glob("*.png"))
    if script == "instance_segmentation.py":
        assert not written
    else:
        (png,) = written
        with Image.open(png) as image, Image.open(photo) as source:
            assert image.size[0] >= source.size[0] and image.size[1] >= source.size[1]
