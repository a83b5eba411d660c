"""Validation during training: the evaluation hook's records, best/ folder, resume, TensorBoard,
curves.png, the metrics under torchrun, and a validation set of the wrong format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _train_eval_script import evaluate_all
from _train_support import quick_args, read_log, synthetic_dataset
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation
from maskformer.cli import main
from maskformer.engine import checkpointing
from maskformer.engine.evaluation_hook import (
    ValidationEvaluator,
    panoptic_target,
    semantic_target,
)
from maskformer.engine.hooks import Hook
from maskformer.engine.train import train

SCRIPT = Path(__file__).resolve().parent / "_train_eval_script.py"


def test_targets_rebuilt_from_training_samples_match_the_ground_truth():
    dataset = synthetic_dataset(3, 32, augment=False)
    for index in range(len(dataset)):
        sample = dataset[index]
        _, semantic, panoptic, segments = dataset.get_ground_truth(index)
        rebuilt = semantic_target(sample["mask_labels"], sample["class_labels"])
        assert torch.equal(rebuilt, torch.from_numpy(semantic.astype(np.int64)))
        ids, info = panoptic_target(sample["mask_labels"], sample["class_labels"])
        # Same partition of the image, same classes per segment (ids are numbered apart).
        pairs = {(int(a), int(b)) for a, b in zip(ids.ravel(), panoptic.ravel())}
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        classes = {s["id"]: s["category_id"] for s in segments}
        assert all(info[a - 1]["category_id"] == classes[b] for a, b in pairs)


class _Oracle(torch.nn.Module):
    """Answers each validation image (in order) with its own targets: one confident query per
    segment, the other queries "no object"."""

    def __init__(self, dataset, queries: int = 8, num_labels: int = 4) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.samples = [dataset[i] for i in range(len(dataset))]
        self.queries, self.num_labels, self.calls = queries, num_labels, 0

    def forward(self, pixel_values):
        sample = self.samples[self.calls]
        self.calls += 1
        masks, classes = sample["mask_labels"], sample["class_labels"]
        class_logits = torch.full((1, self.queries, self.num_labels + 1), -20.0)
        class_logits[0, :, -1] = 20.0
        mask_logits = torch.full((1, self.queries, *masks.shape[-2:]), -20.0)
        for query, (mask, label) in enumerate(zip(masks, classes)):
            class_logits[0, query] = -20.0
            class_logits[0, query, label] = 20.0
            mask_logits[0, query][mask == 1] = 20.0
        return SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)


@pytest.mark.parametrize(
    ("task", "metric"), [("semantic", "miou"), ("panoptic", "pq"), ("instance", "ap")]
)
def test_a_perfect_prediction_scores_one(task, metric):
    dataset = synthetic_dataset(4, 32, augment=False)
    id2label = dict(enumerate(["background", "disc", "square", "triangle"]))
    evaluator = ValidationEvaluator(dataset, task, id2label, dataset.thing_ids)
    figures, overlays = evaluator.evaluate(_Oracle(dataset), overlays=2)
    assert figures[metric] == pytest.approx(1.0), figures
    assert len(overlays) == 2 and overlays[0].size[0] >= 32


def test_evaluation_records_and_the_best_model(tmp_path):
    args = quick_args(
        tmp_path,
        max_steps=4,
        eval_every=2,
        data_format="synthetic",
        synthetic_size=32,
        val_synthetic_images=4,
    )
    result = train(args, train_dataset=synthetic_dataset(8, 32))
    evaluations = [r for r in read_log(tmp_path) if "eval" in r]
    assert [r["step"] for r in evaluations] == [2, 4]
    assert all(0.0 <= r["eval"]["miou"] <= 1.0 for r in evaluations)
    best = max(evaluations, key=lambda r: r["eval"]["miou"])  # the first one on ties
    saved = json.loads((tmp_path / "best" / "best.json").read_text())
    assert saved == {"metric": "miou", "value": best["eval"]["miou"], "step": best["step"]}
    assert result.best == saved
    # best/ is a Hugging Face folder whose weights give the recorded figure again.
    model = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path / "best")
    validation = synthetic_dataset(4, 32, augment=False, seed=args.seed + 1_000_003)
    evaluator = ValidationEvaluator(validation, "semantic", model.config.id2label)
    assert evaluator.evaluate(model)[0] == best["eval"]


def test_resume_keeps_the_best_so_far(tmp_path):
    settings = {
        "eval_every": 2,
        "save_every": 2,
        "data_format": "synthetic",
        "synthetic_size": 32,
        "val_synthetic_images": 2,
    }
    dataset = synthetic_dataset(8, 32)
    train(quick_args(tmp_path, max_steps=2, **settings), train_dataset=dataset)
    # A best-so-far no evaluation can beat (mIoU <= 1), stored in the checkpoint as a
    # checkpoint of a better run would store it.
    path = checkpointing.checkpoint_path(tmp_path, 2)
    state = checkpointing.load_checkpoint(path)
    assert state["hooks"]["evaluation"]["best"]["step"] == 2
    state["hooks"]["evaluation"]["best"]["value"] = 2.0
    checkpointing.atomic_torch_save(state, path)
    best_json = (tmp_path / "best" / "best.json").read_text()

    args = quick_args(tmp_path, max_steps=4, resume="auto", **settings)
    result = train(args, train_dataset=dataset)
    assert result.best == {"metric": "miou", "value": 2.0, "step": 2}
    assert (tmp_path / "best" / "best.json").read_text() == best_json  # not replaced
    assert [r["step"] for r in read_log(tmp_path) if "eval" in r] == [2, 4]


def test_tensorboard_scalars_and_overlays(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = quick_args(
        tmp_path,
        max_steps=2,
        eval_every=2,
        report_to="tensorboard",
        data_format="synthetic",
        synthetic_size=32,
        val_synthetic_images=2,
    )
    train(args, train_dataset=synthetic_dataset(8, 32))
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/loss_mask", "train/lr", "train/grad_norm", "eval/miou"}
    assert expected <= scalars, scalars
    log = read_log(tmp_path)
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses == pytest.approx([r["loss"] for r in log if "loss" in r], rel=1e-6)
    miou = events.Scalars("eval/miou")
    assert [(e.step, e.value) for e in miou] == [
        (2, pytest.approx(log[-1]["eval"]["miou"], rel=1e-6))
    ]
    assert {"eval/overlay_0", "eval/overlay_1"} <= set(events.Tags()["images"])


def test_curves_png_is_drawn_at_the_end_and_by_the_plot_command(tmp_path, capsys):
    args = quick_args(
        tmp_path,
        max_steps=4,
        eval_every=2,
        data_format="synthetic",
        synthetic_size=32,
        val_synthetic_images=2,
    )
    train(args, train_dataset=synthetic_dataset(8, 32))
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 600
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 5  # lines, text, not a blank
    (tmp_path / "curves.png").unlink()
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").is_file()
    assert main(["plot", str(tmp_path / "nothing_here")]) == 2
    assert "log.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data_format", "paths", "stray"),
    [
        ("ade20k", ["--data-dir", "DATA", "--val-coco-json", "DATA"], "--val-coco-json"),
        ("synthetic", ["--val-data-dir", "DATA"], "--val-data-dir"),
    ],
)
def test_a_validation_set_of_another_format_is_one_line(
    tmp_path, capsys, data_format, paths, stray
):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "annotations").mkdir()
    paths = [str(tmp_path / "data") if p == "DATA" else p for p in paths]
    argv = ["train", "--data-format", data_format, *paths, "--eval-every", "2"]
    if data_format == "ade20k":
        argv += ["--val-data-dir", str(tmp_path / "data")]
    assert main([*argv, "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and stray in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.distributed
def test_two_processes_evaluate_like_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        str(tmp_path),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    logged = [r for r in read_log(tmp_path) if "eval" in r]
    assert [r["step"] for r in logged] == [2]
    distributed = json.loads((tmp_path / "figures.json").read_text())

    # One process, the same final weights, the same images: the same figures. Each image is
    # forwarded alone with one thread on both sides, so the predictions are the same and the
    # metrics (sums of counts, gathered COCO records) agree exactly.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path / "final")
        single = evaluate_all(model, 0, 1)
    finally:
        torch.set_num_threads(threads)
    assert json.loads(json.dumps(single)) == distributed
    assert logged[0]["eval"] == single["semantic"]


class _CountingHook(Hook):
    """A user's hook: counts steps, and keeps the count across a resume."""

    name = "counting"

    def __init__(self) -> None:
        self.count = 0
        self.seen: list[int] = []

    def after_step(self, trainer) -> None:
        self.count += 1
        self.seen.append(trainer.step)

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state) -> None:
        self.count = state["count"]


def test_a_user_hook_sees_every_step_and_its_state_survives_a_resume(tmp_path):
    dataset = synthetic_dataset(8, 32)
    first = _CountingHook()
    train(quick_args(tmp_path, max_steps=3, save_every=3), train_dataset=dataset, hooks=[first])
    assert first.seen == [1, 2, 3]
    second = _CountingHook()
    args = quick_args(tmp_path, max_steps=5, resume="auto")
    train(args, train_dataset=dataset, hooks=[second])
    assert second.seen == [4, 5] and second.count == 5
