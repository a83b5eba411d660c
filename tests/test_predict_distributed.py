"""`torchrun --nproc_per_node 2 -m maskformer.cli predict` (CPU, Gloo): each process takes every
second image of the sorted list, rank 0 merges the json files; the files are those of one
process, byte for byte (json records compared after sorting: their order follows the ranks)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from maskformer.engine.predict_state import read_journals
from tests.conftest import REPO_ROOT
from tests.test_bad_inputs import photo, tiny_checkpoint
from tests.test_predict_scale import _files


def _predict_command(command_prefix, model_dir, inputs, out, *extra):
    """``maskformer predict`` run by ``command_prefix`` (python, or torchrun), and its
    environment: one thread per process in every run, so all runs use the same kernels."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
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
        *extra,
    ]
    return command, env


def _predict(command_prefix, model_dir, inputs, out, *extra):
    command, env = _predict_command(
        command_prefix, model_dir, inputs, out, "--num-workers", "1", *extra
    )
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


@pytest.mark.distributed
def test_a_torchrun_job_stopped_by_sigterm_resumes_and_writes_nothing_twice(tmp_path):
    """SIGTERM to torchrun after a few images: the workers stop (their journals keep what they
    finished); `--resume` with the same command writes the rest, and the finished images'
    files are not written again."""
    import signal
    import time

    model_dir = tiny_checkpoint(tmp_path / "model")
    # Sliding windows of 32 over 160 x 160 pictures: 49 tiles, a fraction of a second each.
    inputs = [
        photo(tmp_path / "in" / f"{i:03d}.png", width=160, height=160, seed=i) for i in range(8)
    ]
    out = tmp_path / "out"
    extra = ["--task", "panoptic", "--sliding-window", "--window", "32", "32"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command, env = _predict_command(
        [*torchrun, "--nproc_per_node", "2"], model_dir, inputs, out, *extra
    )
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journals = out / ".maskformer-predict"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and job.poll() is None:
        lines = sum(len(p.read_bytes().splitlines()) for p in journals.glob("journal.rank*.jsonl"))
        if lines >= 2:
            break
        time.sleep(0.02)
    assert job.poll() is None, "the job ended before it could be stopped"
    job.send_signal(signal.SIGTERM)
    job.communicate(timeout=120)
    assert job.returncode != 0
    # Finished = a journal line (the commit point); a picture written just before the stop
    # without its line is unfinished and may be written again.
    committed = set(read_journals(out))  # torn last lines are not finished images
    assert 2 <= len(committed) < 8, sorted(committed)
    finished = {f"{s}.png": (out / "panoptic" / f"{s}.png").stat().st_mtime_ns for s in committed}

    resumed = _predict(
        [*torchrun, "--nproc_per_node", "2"], model_dir, inputs, out, *extra, "--resume"
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "already done (--resume)" in resumed.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (out / "panoptic").glob("*.png")}
    assert len(after) == 8 and all(after[name] == mtime for name, mtime in finished.items())
    one = _predict([sys.executable], model_dir, inputs, tmp_path / "one", *extra)
    assert one.returncode == 0, one.stderr[-4000:]
    assert _files(out) == _files(tmp_path / "one")
