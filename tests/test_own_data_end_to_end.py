"""Your own data, end to end: a COCO instance export (polygons, RLE, a crowd region,
non-contiguous category ids), a saved demo-sized checkpoint fine-tuned onto its new label set with
validation every 50 steps, the validation AP rising, ``best/`` holding the best step, and the same
run killed (SIGKILL) and resumed giving the same ``best/``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _coco_instances_support import SYNTHETIC_TO_CATEGORY, write_synthetic_coco
from safetensors.torch import load_file

from maskformer import MaskFormerForInstanceSegmentation
from maskformer.demo import demo_config

STEPS, EVERY = 300, 50


@pytest.fixture(scope="module")
def own_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("own")
    train_json, train_images = write_synthetic_coco(root / "train", num_images=96, seed=1)
    val_json, val_images = write_synthetic_coco(root / "val", num_images=16, seed=2)
    torch.manual_seed(0)
    checkpoint = root / "checkpoint"
    MaskFormerForInstanceSegmentation(demo_config()).save_pretrained(checkpoint)  # 4 classes
    return {
        "root": root,
        "train_json": train_json,
        "train_images": train_images,
        "val_json": val_json,
        "val_images": val_images,
        "checkpoint": checkpoint,
    }


def _command(data: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "maskformer.cli", "train",
        "--model", str(data["checkpoint"]), "--ignore-mismatched-sizes",
        "--data-format", "coco-instances",
        "--coco-json", str(data["train_json"]), "--image-dir", str(data["train_images"]),
        "--val-coco-json", str(data["val_json"]), "--val-image-dir", str(data["val_images"]),
        "--eval-every", str(EVERY), "--save-every", str(EVERY), "--max-steps", str(STEPS),
        "--batch-size", "8", "--crop-size", "64", "--learning-rate", "1e-3",
        "--backbone-lr-multiplier", "1.0", "--warmup-steps", "20", "--max-grad-norm", "1.0",
        "--num-workers", "0", "--no-progress", "--output-dir", str(output), *extra,
    ]  # fmt: skip


def _environment() -> dict[str, str]:
    source = Path(__file__).resolve().parents[1] / "src"
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # one thread in both runs: bit-identical training
    }


def _evaluations(output: Path) -> list[dict]:
    lines = (output / "log.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "eval" in record]


@pytest.mark.slow
def test_fine_tune_on_coco_instances_keeps_the_best_and_survives_a_kill(own_data, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(_command(own_data, straight), env=_environment(), check=True, timeout=1200)

    evaluations = _evaluations(straight)
    assert [r["step"] for r in evaluations] == list(range(EVERY, STEPS + 1, EVERY))
    ap = [r["eval"]["ap"] for r in evaluations]
    assert max(ap[-2:]) > ap[0] + 0.05, ap  # the validation AP rises as the model learns
    best = json.loads((straight / "best" / "best.json").read_text())
    best_step = evaluations[max(range(len(ap)), key=lambda i: (ap[i], -i))]["step"]
    assert best == {"metric": "ap", "value": max(ap), "step": best_step}
    config = json.loads((straight / "best" / "config.json").read_text())
    assert config["id2label"] == {"0": "triangle", "1": "disc", "2": "square"}  # new label set
    assert config["label_category_ids"] == sorted(SYNTHETIC_TO_CATEGORY.values())

    # The same run, killed without warning once its step-150 checkpoint exists, then resumed.
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _command(own_data, killed), env=_environment(), stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 1200
    marker = killed / "checkpoints" / "step-00000150.pt"
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists()
    subprocess.run(
        _command(own_data, killed, "--resume", "auto"),
        env=_environment(),
        check=True,
        timeout=1200,
    )
    assert json.loads((killed / "best" / "best.json").read_text()) == best
    ours = load_file(killed / "best" / "model.safetensors")
    reference = load_file(straight / "best" / "model.safetensors")
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
