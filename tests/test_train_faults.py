"""Training faults end in one readable line (exit status 2 from the CLI) and leave the run intact:
a NaN loss, a full disk, a corrupt image, a class the model does not have, resuming with another
architecture; files are written with the umask's permissions."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_support import quick_args, synthetic_dataset
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation
from maskformer.cli import main
from maskformer.engine import checkpointing
from maskformer.engine.train import DatasetItemError, train
from maskformer.presets import get_preset


def synthetic_cli(out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "tiny-resnet",
        "--data-format",
        "synthetic",
        "--synthetic-images",
        "8",
        "--synthetic-size",
        "32",
        "--num-workers",
        "0",
        "--no-progress",
        "--log-every",
        "1",
        "--output-dir",
        str(out),
        *extra,
    ]


def error_line(err: str) -> str:
    """The one error line of a failed command (progress messages may come before it)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("maskformer")]
    assert len(errors) == 1, err
    assert err.rstrip().splitlines()[-1] == errors[0]
    return errors[0]


def test_a_nan_loss_is_one_line_naming_step_and_terms_checkpoint_intact(tmp_path, capsys):
    # No clipping and a learning rate of 1e30: AdamW's first step moves every weight by ~1e30,
    # so the second forward pass overflows float32 and the loss is inf/NaN at step 2.
    argv = synthetic_cli(tmp_path, "--lr", "1e30", "--max-grad-norm", "0", "--save-every", "1")
    assert main([*argv, "--max-steps", "5"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "NaN or infinite at step 2 (loss" in line, line
    assert "step-00000001.pt" in line, line
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path)] == [1]
    checkpointing.load_checkpoint(checkpointing.checkpoint_path(tmp_path, 1))  # intact


def _limit_file_size() -> None:
    # Writes past 2 MB fail with EFBIG ("File too large"), as a full disk fails with ENOSPC;
    # SIGXFSZ would otherwise kill the process instead of failing the write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))


def test_a_failing_checkpoint_write_is_one_line_and_keeps_the_last_good_one(tmp_path):
    argv = synthetic_cli(tmp_path, "--save-every", "2")
    assert main([*argv, "--max-steps", "2"]) == 0
    first = checkpointing.checkpoint_path(tmp_path, 2)
    before = first.read_bytes()
    assert len(before) > 2_000_000  # the limit below really stops the next checkpoint

    command = [sys.executable, "-m", "maskformer.cli", *argv, "--max-steps", "4", "--resume"]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    line = error_line(completed.stderr)
    assert "step-00000004.pt" in line and "File too large" in line, line
    assert first.read_bytes() == before
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path)] == [2]
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")], "temporary left"


def _ade_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for index in range(4):
        pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"img_{index}.jpg")
        labels = np.zeros((40, 48), np.uint8)
        labels[:20] = 1 + index % 3
        Image.fromarray(labels).save(root / "annotations" / f"img_{index}.png")


def test_a_corrupt_training_image_is_named(tmp_path, capsys):
    _ade_folder(tmp_path / "ade")
    broken = tmp_path / "ade" / "images" / "img_2.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated JPEG
    argv = [
        "train",
        "--model",
        "tiny-resnet",
        "--num-labels",
        "3",
        "--data-format",
        "ade20k",
        "--data-dir",
        str(tmp_path / "ade"),
        "--crop-size",
        "32",
        "--num-workers",
        "0",
        "--no-progress",
        "--max-steps",
        "4",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert str(broken) in line, line


class _Relabelled(torch.utils.data.Dataset):
    """Synthetic samples whose classes are shifted past the model's 4 labels."""

    def __init__(self) -> None:
        self.inner = synthetic_dataset(8, 32, augment=False)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        sample = dict(self.inner[index])
        sample["class_labels"] = sample["class_labels"] + 10
        return sample


def test_a_class_label_beyond_num_labels_is_a_value_error_naming_it(tmp_path):
    model = MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", num_labels=4))
    with pytest.raises(ValueError, match=r"synthetic_0_\d+\) has class label 1[0-3],") as error:
        train(quick_args(tmp_path), model=model, train_dataset=_Relabelled())
    assert isinstance(error.value, DatasetItemError)
    assert "num_labels=4" in str(error.value) and "training sample" in str(error.value)


def test_resuming_with_another_architecture_names_the_differing_fields(tmp_path, capsys):
    assert main(synthetic_cli(tmp_path, "--max-steps", "1")) == 0
    capsys.readouterr()
    argv = synthetic_cli(tmp_path, "--max-steps", "2", "--resume")
    argv[argv.index("tiny-resnet")] = "tiny-swin"
    assert main(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert "another architecture" in line and "backbone_config" in line, line
    assert len(line) < 800, len(line)  # not the key list (thousands of characters)


def test_outputs_have_the_umask_permissions(tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        assert main(synthetic_cli(tmp_path, "--max-steps", "1")) == 0
    finally:
        os.umask(previous)
    for path in (
        checkpointing.checkpoint_path(tmp_path, 1),
        tmp_path / "training_args.json",
        tmp_path / "final" / "config.json",
        tmp_path / "curves.png",
    ):
        assert path.stat().st_mode & 0o777 == 0o644, path
    assert (tmp_path / "final").stat().st_mode & 0o777 == 0o755


def test_backbone_flag_needs_a_preset(tmp_path) -> None:
    from maskformer.engine.arguments import TrainingArguments
    from maskformer.engine.model_setup import build_model

    folder = tmp_path / "ckpt"
    folder.mkdir()
    args = TrainingArguments(model=str(folder), backbone="timm:resnet18", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="replaces a preset's backbone"):
        build_model(args)
