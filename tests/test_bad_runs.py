"""Faults during `maskformer predict`: a bad image costs only itself, an interrupted or failing
run keeps what it finished, `--overwrite` never destroys an old file before the new one is
whole, two runs never lose each other's results, files follow the umask."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys

import pytest
from PIL import Image

from maskformer.engine import segment
from tests.conftest import REPO_ROOT
from tests.test_bad_inputs import photo, predict_argv, run, tiny_checkpoint


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_model"))


def _tmp_leftovers(folder):
    return sorted(str(p) for p in folder.rglob("*.tmp"))


def test_unreadable_images_and_odd_names_skip_only_themselves(model_dir, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    photo(inputs / "good.png")
    photo(inputs / "١٢٣.png", seed=1)  # Arabic-Indic digits: isdigit() is True, not an ASCII id
    photo(inputs / "².png", seed=2)  # superscript two: isdigit() is True, int() fails
    (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    (inputs / "empty.jpg").write_bytes(b"")
    (inputs / "bad\nname.png").write_bytes(b"GIF89a")  # a newline in the name, and corrupt
    long_stem = "x" * 240  # a valid input name, but ".STEM.png.XXXXXXXX.tmp" exceeds 255 bytes
    photo(inputs / f"{long_stem}.png", seed=3)
    out = tmp_path / "out"
    code, _, lines = run(predict_argv(model_dir, [inputs], out, "--task", "panoptic"), capsys)

    assert code == 1, lines
    skipped = [line for line in lines if line.startswith("skipped")]
    # one line per bad file (the newline is shown escaped), then the summary
    assert len(lines) == len(skipped) + 1 == 5, lines
    for name in ("corrupt.png", "empty.jpg", "bad\\nname.png", f"{long_stem}.png"):
        assert sum(name in line for line in skipped) == 1, (name, skipped)
    assert "segmented 3 of 7" in lines[-1]
    records = json.loads((out / "panoptic.json").read_text())["annotations"]
    assert sorted(map(str, (r["image_id"] for r in records))) == sorted(["good", "١٢٣", "²"])
    assert all(isinstance(r["image_id"], str) for r in records)
    for stem in ("good", "١٢٣", "²"):
        assert (out / "panoptic" / f"{stem}.png").is_file()
        assert (out / "overlays" / f"{stem}.png").is_file()
    assert not (out / "panoptic" / "corrupt.png").exists()


def test_a_thin_image_never_stops_the_run(model_dir, tmp_path, capsys):
    # Whether a 1-pixel-wide picture can be resized is the processor's business; the run must
    # either segment it or skip it by name, and the good image is written either way.
    photo(tmp_path / "good.png")
    photo(tmp_path / "thin.png", width=1, height=300)
    out = tmp_path / "out"
    argv = predict_argv(model_dir, [tmp_path / "good.png", tmp_path / "thin.png"], out)
    code, _, lines = run([*argv, "--task", "semantic", "--batch-size", "2"], capsys)
    assert (out / "semantic" / "good.png").is_file()
    if code == 1:
        assert len(lines) == 2 and "thin.png" in lines[0], lines
    else:
        assert code == 0, lines
        assert Image.open(out / "semantic" / "thin.png").size == (1, 300)


def _fail_for_width(width, real=segment.segment_batch):
    def fake(model, processor, images, *args, **kwargs):
        if any(image.width == width for image in images):
            raise ValueError("height and width must be > 0")
        return real(model, processor, images, *args, **kwargs)

    return fake


def test_an_image_that_cannot_be_segmented_costs_only_itself(
    model_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(segment, "segment_batch", _fail_for_width(7))
    inputs = [photo(tmp_path / "a.png"), photo(tmp_path / "seven.png", width=7)]
    out = tmp_path / "out"
    argv = predict_argv(model_dir, inputs, out, "--task", "semantic", "--batch-size", "2")
    code, _, lines = run(argv, capsys)
    assert code == 1, lines
    assert len(lines) == 2 and "seven.png" in lines[0] and "7x30" in lines[0], lines
    assert (out / "semantic" / "a.png").is_file()  # its batch-mate was retried alone
    assert not (out / "semantic" / "seven.png").exists()
    # nothing at all could be segmented: nothing done, status 2
    code, _, lines = run(
        predict_argv(model_dir, [inputs[1]], tmp_path / "out2", "--task", "semantic"), capsys
    )
    assert code == 2 and "seven.png" in lines[0]


def test_an_interrupted_run_keeps_what_it_finished(model_dir, tmp_path, capsys, monkeypatch):
    calls = []

    def interrupt_second(*args, real=segment.segment_batch, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(segment, "segment_batch", interrupt_second)
    inputs = [photo(tmp_path / "a.png"), photo(tmp_path / "b.png", seed=1)]
    out = tmp_path / "out"
    code, _, lines = run(predict_argv(model_dir, inputs, out, "--batch-size", "1"), capsys)
    assert code == 130
    assert len(lines) == 1 and "interrupted" in lines[0]
    records = json.loads((out / "panoptic.json").read_text())["annotations"]
    assert [r["image_id"] for r in records] == ["a"]
    assert (out / "panoptic" / "a.png").is_file() and not (out / "panoptic" / "b.png").exists()
    assert _tmp_leftovers(out) == []


def test_overwrite_on_a_full_disk_keeps_the_old_files(model_dir, tmp_path, capsys, monkeypatch):
    image = photo(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = predict_argv(model_dir, [image], out, "--task", "semantic")
    assert run(argv, capsys)[0] == 0
    label = out / "semantic" / "a.png"
    old = label.read_bytes()

    def full_disk(self, handle, *args, **kwargs):
        handle.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    code, _, lines = run([*argv, "--overwrite"], capsys)
    assert code == 2
    assert len(lines) == 1 and str(label) in lines[0] and "No space left" in lines[0], lines
    assert label.read_bytes() == old
    assert _tmp_leftovers(out) == []


_HOLD_LOCK = """
import sys
from pathlib import Path
from maskformer.engine.prediction_files import output_lock
with output_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_process_cannot_write_into_a_locked_folder(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, lines = run(predict_argv(model_dir, [photo(tmp_path / "a.png")], out), capsys)
        assert code == 2
        assert len(lines) == 1 and ".maskformer-predict.lock" in lines[0], lines
        assert not (out / "panoptic.json").exists()
    finally:
        holder.communicate("", timeout=60)  # closing stdin lets it go; the lock goes with it
    assert holder.returncode == 0
    code, _, lines = run(predict_argv(model_dir, [tmp_path / "a.png"], out), capsys)
    assert code == 0, lines


def test_runs_into_one_folder_merge_their_records(model_dir, tmp_path, capsys):
    a, b = photo(tmp_path / "a.png"), photo(tmp_path / "b.png", seed=1)
    for task, name in (("panoptic", "panoptic.json"), ("instance", "instances.json")):
        out = tmp_path / task
        extra = ["--task", task, "--threshold", "0"]
        assert run(predict_argv(model_dir, [a], out, *extra), capsys)[0] == 0
        # without --overwrite the shared json is an existing output, as before
        code, _, lines = run(predict_argv(model_dir, [b], out, *extra), capsys)
        assert code == 2 and name in lines[0]
        counts = []
        for _ in range(2):  # twice: b's records are replaced, not repeated
            assert run(predict_argv(model_dir, [b], out, *extra, "--overwrite"), capsys)[0] == 0
            data = json.loads((out / name).read_text())
            records = data["annotations"] if task == "panoptic" else data
            counts.append(sum(r["image_id"] == "b" for r in records))
        ids = [r["image_id"] for r in records]
        assert counts[0] == counts[1] > 0
        if task == "panoptic":
            assert ids == ["a", "b"]
        else:  # random weights at threshold 0 find instances in both pictures
            assert set(ids) == {"a", "b"}


def test_a_json_that_cannot_be_merged_is_named_before_anything_runs(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "panoptic.json").write_text('{"annotations": [')  # a truncated file
    argv = predict_argv(model_dir, [photo(tmp_path / "a.png")], out, "--overwrite")
    code, _, lines = run(argv, capsys)
    assert code == 2 and len(lines) == 1 and "panoptic.json" in lines[0], lines
    assert not (out / "panoptic" / "a.png").exists()


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_follow_the_umask(model_dir, tmp_path, capsys, mask):
    saved = os.umask(mask)
    try:
        out = tmp_path / "out"
        code, _, lines = run(predict_argv(model_dir, [photo(tmp_path / "a.png")], out), capsys)
    finally:
        os.umask(saved)
    assert code == 0, lines
    for path in (out / "panoptic" / "a.png", out / "overlays" / "a.png", out / "panoptic.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
