"""`torchrun --nproc_per_node 2 -m maskformer.cli predict` (CPU, Gloo): each process takes every
second image of the sorted list, rank 0 merges the json files; the files are those of one
process, byte for byte (json records compared after sorting: their order follows the ranks)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.test_bad_inputs import photo, tiny_checkpoint
from tests.test_predict_scale import _files


def _predict(command_prefix, model_dir, inputs, out, *extra):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # both runs: one thread per process, the same kernels
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        *command_prefix,
        "-m",
        "maskformer.cli",
        "predict",
        "--model",
        str(model_dir),
        *map(str, inputs),
        "--output-dir",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        "--num-workers",
        "1",
        *extra,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.distributed
def test_two_processes_write_what_one_process_writes(tmp_path):
    task = "panoptic"
    model_dir = tiny_checkpoint(tmp_path / "model")
    sizes = [(40, 30), (64, 48), (33, 70), (50, 50), (48, 36)]
    inputs = [
        photo(tmp_path / "in" / f"{i:03d}.png", width=w, height=h, seed=i)
        for i, (w, h) in enumerate(sizes)
    ]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    extra = ["--task", task, "--threshold", "0.1"]
    two = _predict(
        [*torchrun, "--nproc_per_node", "2"], model_dir, inputs, tmp_path / "two", *extra
    )
    assert two.returncode == 0, two.stderr[-4000:]
    one = _predict([sys.executable], model_dir, inputs, tmp_path / "one", *extra)
    assert one.returncode == 0, one.stderr[-4000:]
    summary = [line for line in two.stderr.splitlines() if line.startswith("segmented")]
    assert len(summary) == 1 and "segmented 5 of 5" in summary[0], two.stderr[-2000:]
    files = _files(tmp_path / "two")
    assert files == _files(tmp_path / "one")
    assert len([f for f in files if f.startswith("overlays/")]) == 5
    assert len(files["panoptic.json"]["annotations"]) == 5  # both ranks' records merged
