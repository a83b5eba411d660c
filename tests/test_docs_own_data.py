"""docs/own_data.md, run at a tiny scale: its Python blocks and `maskformer` commands, in order,
on a generated COCO instance export (polygons, RLE, a crowd region, non-contiguous ids)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from _coco_instances_support import SYNTHETIC_TO_CATEGORY, write_synthetic_coco

from maskformer.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "own_data.md"

# Tiny-scale substitutions; each must occur in the doc, so a changed doc fails here loudly.
PYTHON_SCALE = {
    "max_steps=2000": "max_steps=2",
    "batch_size=4)": "batch_size=2, num_workers=0, progress=False, device='cpu')",
    "crop_size=512, base_size=512": "crop_size=48, base_size=48",
    '"shortest_edge": 512, "longest_edge": 853': '"shortest_edge": 48, "longest_edge": 64',
}
COMMAND_SCALE = {"--max-steps": "2", "--batch-size": "2"}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def _commands() -> list[list[str]]:
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("maskformer "):
                commands.append(shlex.split(line)[1:])
    return commands


def _scaled(argv: list[str]) -> list[str]:
    argv = list(argv)
    for flag, value in COMMAND_SCALE.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
    extra = ["--no-progress"] if argv[0] != "train" else ["--num-workers", "0", "--device", "cpu"]
    return [*argv, *extra]


@pytest.fixture
def my_data(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_synthetic_coco(tmp_path / "my_data", num_images=5, image_size=48)
    return tmp_path


def test_python_blocks_then_predict_and_evaluate(my_data: Path, capsys) -> None:
    check, training, timm_block = _blocks("python")
    compile(timm_block, "own_data.md (timm)", "exec")  # needs timm and the network: not run
    for old in PYTHON_SCALE:
        assert old in training, f"docs/own_data.md no longer holds {old!r}"
    for old, new in PYTHON_SCALE.items():
        training = training.replace(old, new)
    namespace: dict = {}
    exec(compile(check, "own_data.md (check)", "exec"), namespace)
    assert namespace["dataset"].category_ids == sorted(SYNTHETIC_TO_CATEGORY.values())
    exec(compile(training, "own_data.md (train)", "exec"), namespace)
    final = my_data / "runs" / "own" / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["label_category_ids"] == [5, 11, 27]

    commands = [c for c in _commands() if c[0] != "train"]
    assert [c[0] for c in commands] == ["predict", "evaluate", "evaluate"]
    predict, evaluate_model, evaluate_files = commands
    assert main(_scaled(predict) + ["--threshold", "0.0"]) == 0
    results = json.loads((my_data / "preds" / "instances.json").read_text())
    # original category ids and image ids (the files are named by id): pycocotools-ready
    assert results and {r["category_id"] for r in results} <= set(SYNTHETIC_TO_CATEGORY.values())
    assert {r["image_id"] for r in results} <= {100, 101, 102, 103, 104}
    assert main(_scaled(evaluate_model)) == 0
    assert main(_scaled(evaluate_files)) == 0
    printed = capsys.readouterr().out
    assert printed.count("AP50") == 2
    for name in ("evaluation_instance.json", "evaluation_preds.json"):
        figures = json.loads((my_data / name).read_text())
        assert set(figures["per_class_AP"]) == {"5", "11", "27"}
        assert figures["num_images"] == 5


def test_command_line_training(my_data: Path) -> None:
    (train,) = [c for c in _commands() if c[0] == "train"]
    assert main(_scaled(train)) == 0
    config = json.loads((my_data / "runs" / "own-cli" / "final" / "config.json").read_text())
    assert config["id2label"] == {"0": "triangle", "1": "disc", "2": "square"}
    # the trainer records the data's own category ids, so predict writes them
    assert config["label_category_ids"] == [5, 11, 27]
