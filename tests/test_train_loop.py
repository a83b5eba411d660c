"""The training loop: it learns, it logs, it reports bad input clearly, it obeys SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_support import quick_args, read_log, synthetic_dataset
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation
from maskformer.engine import checkpointing
from maskformer.engine.train import (
    DatasetItemError,
    TrainingArguments,
    add_train_arguments,
    run_train_from_args,
    train,
    training_arguments_from_namespace,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_a_tiny_model_learns_the_synthetic_shapes(tmp_path):
    # 40 steps on 8 images of 64 px (about 2 s on one core). A longer run by hand (see the
    # README's training section) goes further; here the loss must fall below 0.7 x its start.
    result = train(
        quick_args(tmp_path, max_steps=40, save_every=20),
        train_dataset=synthetic_dataset(8, 64, augment=True),
    )
    log = read_log(tmp_path)
    assert [record["step"] for record in log] == list(range(1, 41))
    start = log[0]["loss"]
    end = float(np.mean([record["loss"] for record in log[-5:]]))
    assert end < 0.7 * start, (start, end)
    # Each record carries the weighted terms, the learning rates, the norm and the throughput.
    record = log[-1]
    for key in (
        "loss_mask",
        "loss_dice",
        "loss_cross_entropy",
        "lr",
        "lr_backbone",
        "grad_norm",
        "num_masks",
        "images_per_s",
        "epoch",
    ):
        assert key in record, key
    terms = record["loss_mask"] + record["loss_dice"] + record["loss_cross_entropy"]
    # The loss is the float32 sum of the three weighted terms, then each is averaged over the
    # logging interval: a handful of float32 roundings (~1e-7 each); 1e-5 is 100 of them.
    assert record["loss"] == pytest.approx(terms, rel=1e-5)
    assert record["lr_backbone"] == pytest.approx(0.1 * record["lr"])
    assert log[0]["lr"] > log[-1]["lr"] >= 0
    # Checkpoints every 20 steps, the final model in Hugging Face format.
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path)] == [20, 40]
    reloaded = MaskFormerForInstanceSegmentation.from_pretrained(result.final_model_dir)
    assert reloaded.config.id2label == {0: "background", 1: "disc", 2: "square", 3: "triangle"}
    assert result.losses["loss"] == pytest.approx(
        sum(v for k, v in result.losses.items() if k.startswith("loss_")), rel=1e-5
    )


def test_bf16_autocast_and_gradient_accumulation_run(tmp_path):
    result = train(
        quick_args(
            tmp_path, max_steps=2, amp="bf16", gradient_accumulation_steps=2, model="tiny-swin"
        ),
        train_dataset=synthetic_dataset(8, 32),
    )
    assert result.step == 2 and np.isfinite(result.losses["loss"])
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        train(quick_args(tmp_path / "fp16", amp="fp16", device="cpu"))


class _FailingDataset(torch.utils.data.Dataset):
    """The synthetic set, except that sample ``bad`` raises like a reader meeting a broken file."""

    def __init__(self, bad: int) -> None:
        self.inner = synthetic_dataset(8, 32)
        self.bad = bad
        self.id2label = self.inner.id2label

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        if index == self.bad:
            raise ValueError("label map /data/annotations/broken_0042.png has size (10, 10)")
        return self.inner[index]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_failing_sample_is_named_and_checkpoints_survive(tmp_path, num_workers):
    args = quick_args(tmp_path, max_steps=50, save_every=1, num_workers=num_workers)
    with pytest.raises(DatasetItemError, match=r"training sample 5 .*broken_0042\.png") as error:
        train(args, train_dataset=_FailingDataset(bad=5))
    assert str(error.value).startswith("training sample 5 of _FailingDataset could not be read")
    assert "Traceback" not in str(error.value)  # a worker's traceback is not in the message
    checkpoints = checkpointing.list_checkpoints(tmp_path)
    assert checkpoints, "the steps before the failure were checkpointed"
    checkpointing.load_checkpoint(checkpoints[-1][1])  # intact


def test_class_labels_beyond_the_model_are_reported_with_the_image(tmp_path):
    class _Relabelled(_FailingDataset):
        def __getitem__(self, index):
            sample = dict(self.inner[index])
            sample["class_labels"] = sample["class_labels"] + 10
            return sample

    model = MaskFormerForInstanceSegmentation(
        __import__("maskformer.presets").presets.get_preset("tiny-resnet", num_labels=4)
    )
    with pytest.raises(DatasetItemError, match=r"synthetic_0_0000\d\d.*outside 0..3"):
        train(quick_args(tmp_path), model=model, train_dataset=_Relabelled(bad=-1))


def _parse(argv: list[str]) -> argparse.Namespace:
    return add_train_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_every_training_argument_has_a_flag():
    namespace = _parse([])
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    without_flag = {"adam_betas", "adam_epsilon", "find_unused_parameters"}
    assert fields - without_flag <= set(vars(namespace))
    assert training_arguments_from_namespace(namespace) == TrainingArguments()
    parsed = _parse(
        ["--resume", "--lr", "3e-4", "--id2label", '{"0": "a", "1": "b"}', "--amp", "bf16"]
    )
    args = training_arguments_from_namespace(parsed)
    assert (args.resume, args.learning_rate, args.id2label, args.amp) == (
        "auto",
        3e-4,
        {0: "a", 1: "b"},
        "bf16",
    )


def test_cli_reports_a_missing_data_folder_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code = run_train_from_args(
        _parse(
            [
                "--output-dir",
                str(out),
                "--data-format",
                "ade20k",
                "--data-dir",
                str(tmp_path / "no_such_ade"),
                "--no-progress",
            ]
        )
    )
    assert code == 2
    assert "no_such_ade" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    code = run_train_from_args(_parse(["--output-dir", str(out), "--data-format", "ade20k"]))
    assert code == 2 and "--data-dir" in capsys.readouterr().err


def _write_ade_folder(root: Path, broken: str | None = None) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for index in range(4):
        name = f"img_{index}"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            root / "images" / f"{name}.jpg"
        )
        labels = np.zeros((40, 48), np.uint8)
        labels[:20] = 1 + index % 3
        labels[20:, :24] = 2
        if name == broken:
            labels = labels[:30]  # a map of another size than its image
        Image.fromarray(labels).save(root / "annotations" / f"{name}.png")


def test_cli_trains_on_an_ade20k_folder_and_names_a_broken_map(tmp_path, capsys):
    _write_ade_folder(tmp_path / "ade")
    common = [
        "--model",
        "tiny-resnet",
        "--num-labels",
        "3",
        "--data-format",
        "ade20k",
        "--crop-size",
        "32",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--no-progress",
    ]
    code = run_train_from_args(
        _parse(
            [
                *common,
                "--data-dir",
                str(tmp_path / "ade"),
                "--output-dir",
                str(tmp_path / "ok"),
                "--max-steps",
                "2",
            ]
        )
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "ok" / "final" / "config.json").is_file()

    _write_ade_folder(tmp_path / "ade_broken", broken="img_2")
    code = run_train_from_args(
        _parse(
            [
                *common,
                "--data-dir",
                str(tmp_path / "ade_broken"),
                "--output-dir",
                str(tmp_path / "broken"),
                "--max-steps",
                "8",
                "--save-every",
                "1",
            ]
        )
    )
    assert code == 2
    assert "img_2.png" in capsys.readouterr().err


_SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from _train_support import quick_args, synthetic_dataset
    from maskformer.engine.train import train

    result = train(quick_args({out!r}, max_steps=100_000, num_workers=1),
                   train_dataset=synthetic_dataset(8, 32))
    print("returned", result.step, result.interrupted)
    """
)


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
    out = tmp_path / "run"
    script = _SIGTERM_SCRIPT.format(tests=str(REPO_ROOT / "tests"), out=str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        log = out / "log.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if log.is_file() and len(log.read_text().splitlines()) >= 3:
                break
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    step = int(stdout.split()[1])
    assert stdout.split()[2] == "True" and step >= 3
    assert f"saved checkpoint at step {step}" in stderr
    assert checkpointing.find_latest_checkpoint(out).name == f"step-{step:08d}.pt"
    assert not (out / "final").exists()

    resumed = train(
        quick_args(out, max_steps=step + 2, resume=True), train_dataset=synthetic_dataset(8, 32)
    )
    assert resumed.step == step + 2 and (out / "final").is_dir()


class _EditedSynthetic(torch.utils.data.Dataset):
    """8 synthetic 32-px samples with some entries replaced: ``key=function(sample)``."""

    def __init__(self, id2label, **edits):
        self.id2label = id2label
        self.inner = synthetic_dataset(8, 32)
        self.edits = edits

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        sample = dict(self.inner[index])
        for key, edit in self.edits.items():
            sample[key] = edit(sample)
        return sample


def test_fine_tune_a_local_checkpoint_on_a_new_label_set(tmp_path, capsys):
    first = train(
        quick_args(tmp_path / "base", max_steps=1), train_dataset=synthetic_dataset(8, 32)
    )
    two_labels = {0: "background", 1: "thing"}
    two_classes = _EditedSynthetic(
        two_labels, class_labels=lambda sample: (sample["class_labels"] > 0).long()
    )
    tuned = train(
        quick_args(
            tmp_path / "tuned",
            model=str(first.final_model_dir),
            id2label=two_labels,
            ignore_mismatched_sizes=True,
            max_steps=2,
        ),
        train_dataset=two_classes,
    )
    model = MaskFormerForInstanceSegmentation.from_pretrained(tuned.final_model_dir)
    assert model.config.id2label == two_labels
    assert model.class_predictor.weight.shape[0] == 3

    # Without --ignore-mismatched-sizes the mismatch is reported; nothing is written.
    code = run_train_from_args(
        _parse(
            [
                "--model",
                str(first.final_model_dir),
                "--num-labels",
                "2",
                "--data-format",
                "synthetic",
                "--synthetic-size",
                "32",
                "--output-dir",
                str(tmp_path / "refused"),
            ]
        )
    )
    assert code == 2 and "ignore_mismatched_sizes" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    # A --model that is neither a preset nor a folder.
    code = run_train_from_args(_parse(["--model", "./no/such/dir", "--data-format", "synthetic"]))
    assert code == 2 and "neither a preset" in capsys.readouterr().err


def test_a_hub_id_is_fetched_from_the_hub_not_refused_as_a_missing_folder(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    argv = ["--model", "someone/not-cached", "--data-format", "synthetic", "--no-progress"]
    code = run_train_from_args(_parse([*argv, "--output-dir", str(tmp_path / "out")]))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "Hugging Face hub" in err and "neither a preset" not in err
    assert not (tmp_path / "out").exists()


def test_a_nan_loss_stops_the_run_and_names_the_last_checkpoint(tmp_path):
    poisoned = _EditedSynthetic(
        {0: "background", 1: "disc", 2: "square", 3: "triangle"},
        pixel_values=lambda sample: torch.full_like(sample["pixel_values"], float("nan")),
    )
    with pytest.raises(
        FloatingPointError, match=r"NaN or infinite at step 1 \(loss, .*\); the last good"
    ):
        train(quick_args(tmp_path), train_dataset=poisoned)
    assert checkpointing.list_checkpoints(tmp_path) == []
