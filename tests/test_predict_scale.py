"""`maskformer predict` for large images and many images: sliding windows and test-time
augmentation from the command line, results that do not depend on the batch, background readers,
the run manifest and --resume, and the bad inputs of those flags."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from maskformer.engine import predict as predict_module
from maskformer.engine import segment
from maskformer.engine.predict_state import MANIFEST_NAME, STATE_DIR
from tests.conftest import SHARED_DATA, requires_shared_data
from tests.test_bad_inputs import assert_one_line, photo, predict_argv, run, tiny_checkpoint


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_model"))


def _files(folder):
    """Relative path -> bytes of every output file (json records sorted), state files left out."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or relative.startswith(".") or relative == MANIFEST_NAME:
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            found[relative] = _sorted_json(json.loads(data))
        else:
            found[relative] = data
    return found


def _sorted_json(data):
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    if isinstance(data, list):
        return sorted(data, key=key)
    return {**data, "annotations": sorted(data["annotations"], key=key)}


# ------------------------------------------------------------------------------ sliding window
@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_sliding_window_on_an_image_four_windows_wide(model_dir, tmp_path, capsys, task):
    image = photo(tmp_path / "big.png", width=128, height=128)  # 4 x 4 windows of 32
    out = tmp_path / "out"
    argv = predict_argv(model_dir, [image], out, "--task", task, "--sliding-window")
    argv += ["--window", "32", "32", "--overlap", "0.25", "--threshold", "0.1"]
    code, _, lines = run(argv, capsys)
    assert code == 0, lines
    assert (out / "overlays" / "big.png").is_file()
    if task == "semantic":
        assert Image.open(out / "semantic" / "big.png").size == (128, 128)
    elif task == "panoptic":
        ids = np.asarray(Image.open(out / "panoptic" / "big.png"), dtype=np.int64)
        ids = ids[..., 0] + 256 * ids[..., 1] + 65536 * ids[..., 2]
        (record,) = json.loads((out / "panoptic.json").read_text())["annotations"]
        listed = {s["id"] for s in record["segments_info"]}
        assert ids.shape == (128, 128) and set(np.unique(ids)) - {0} == listed
        assert listed, "the tiny model commits to classes: something is found"
    else:
        from pycocotools import mask as mask_utils

        results = json.loads((out / "instances.json").read_text())
        assert results, "the tiny model commits to classes: something is found"
        masks = np.stack([mask_utils.decode(r["segmentation"]) for r in results])
        assert masks.shape[1:] == (128, 128) and (masks.sum(0) <= 1).all()  # no overlaps
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["sliding_window"] == [[32, 32], 0.25]


def test_the_default_window_is_the_processor_scale(model_dir, tmp_path, capsys):
    """The tiny checkpoint's processor resizes to a shortest edge of 32: tiles of 32 x 32."""
    image = photo(tmp_path / "big.png", width=96, height=64)
    out = tmp_path / "out"
    argv = predict_argv(model_dir, [image], out, "--task", "semantic", "--sliding-window")
    assert run(argv, capsys)[0] == 0
    assert json.loads((out / MANIFEST_NAME).read_text())["sliding_window"][0] == [32, 32]


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--sliding-window", "--window", "64", "64"], ["--window 64 64", "small.png"]),
        (["--sliding-window", "--window", "32", "32", "--overlap", "1"], ["--overlap"]),
        (["--sliding-window", "--window", "32", "32", "--overlap", "-0.1"], ["--overlap"]),
        (["--window", "32", "32"], ["--window", "--sliding-window"]),
        (["--tta", "rotate"], ["--tta", "rotate"]),
        (["--tta", "scales=0.5,x"], ["--tta", "scales"]),
        (["--tta", "flip", "--sliding-window"], ["--sliding-window", "--tta"]),
    ],
)
def test_bad_scale_flags_are_one_line(model_dir, tmp_path, capsys, extra, names):
    image = photo(tmp_path / "small.png", width=48, height=40)
    code, _, lines = run(predict_argv(model_dir, [image], tmp_path / "out", *extra), capsys)
    assert_one_line(code, lines, *names)
    assert not (tmp_path / "out" / "panoptic").exists()


# ------------------------------------------------------------------------ test-time augmentation
@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_tta_runs_for_every_task(model_dir, tmp_path, capsys, task):
    image = photo(tmp_path / "a.png", width=48, height=40)
    out = tmp_path / "out"
    argv = predict_argv(model_dir, [image], out, "--task", task, "--no-overlay")
    code, _, lines = run([*argv, "--tta", "scales=0.75,1.0,1.5", "flip"], capsys)
    assert code == 0, lines
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["tta"] == {"scales": [0.75, 1.0, 1.5], "flip": True}
    if task == "semantic":
        assert Image.open(out / "semantic" / "a.png").size == (48, 40)


def test_without_tta_the_files_are_the_single_image_path_byte_for_byte(model_dir, tmp_path, capsys):
    """Predict without --tta writes what the plain path writes for each image alone: the
    processor, one forward pass, the post-processor and the file writers (what `predict` wrote
    before test-time augmentation existed, at one image per pass)."""
    from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
    from maskformer.engine.predict import PredictOptions, _write_result

    inputs = [
        photo(tmp_path / f"{name}.png", width=w, height=h, seed=s)
        for name, w, h, s in (("a", 40, 30, 0), ("b", 64, 48, 1), ("c", 33, 70, 2))
    ]
    model = MaskFormerForInstanceSegmentation.from_pretrained(model_dir).eval()
    processor = MaskFormerImageProcessor.from_pretrained(model_dir)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    for task in ("semantic", "panoptic", "instance"):
        out, expected_dir = tmp_path / f"cli_{task}", tmp_path / f"direct_{task}"
        assert run(predict_argv(model_dir, inputs, out, "--task", task), capsys)[0] == 0
        options = PredictOptions(task=task, output_dir=expected_dir, progress=False)
        (expected_dir / "overlays").mkdir(parents=True)
        (expected_dir / task).mkdir()
        records = []
        for path in inputs:
            image = Image.open(path).convert("RGB")
            (result,) = segment.segment_batch(model, processor, [image], task)
            records += _write_result(path, image, result, options, id2label)[1]
        if task != "semantic":
            categories = [{"id": k, "name": v} for k, v in sorted(id2label.items())]
            predict_module.write_records(
                expected_dir / predict_module.json_target(options).name, task, records, categories
            )
        assert _files(out) == _files(expected_dir), task


# -------------------------------------------------------------------------- batch independence
@requires_shared_data
def test_real_photos_alone_and_in_one_mixed_size_batch(model_dir, tmp_path, capsys):
    """The five sample photos (four processed sizes at the tiny processor's scale) predicted one
    per run, and all in one run with --batch-size 5: no image is padded, so each has exactly its
    single-image maps. ADE 1 and 3 (both 4:3) have one processed size and share a forward pass
    at --batch-size 5; there only float summation order differs (logits within ~1e-5), which
    can move a pixel whose two best classes tie that closely: they are compared at the default
    batch size 1, where the pass is theirs alone, and to 99.9% of pixels at batch 5."""
    photos = sorted((SHARED_DATA / "ade20k_sample" / "images").glob("*.jpg"))
    photos += sorted((SHARED_DATA / "coco_panoptic_sample" / "images").glob("*.jpg"))
    assert len(photos) == 5
    alone = tmp_path / "alone"
    for path in photos:
        argv = predict_argv(model_dir, [path], alone, "--task", "semantic", "--no-overlay")
        assert run(argv, capsys)[0] == 0
    together = tmp_path / "together"
    argv = predict_argv(model_dir, photos, together, "--task", "semantic", "--no-overlay")
    assert run(argv, capsys)[0] == 0
    batched = tmp_path / "batched"
    argv = predict_argv(model_dir, photos, batched, "--task", "semantic", "--no-overlay")
    assert run([*argv, "--batch-size", "5"], capsys)[0] == 0
    assert _files(alone) == _files(together)
    for path in photos:
        name = f"semantic/{path.stem}.png"
        single = np.asarray(Image.open(alone / name))
        joint = np.asarray(Image.open(batched / name))
        if path.stem in ("ADE_val_00000001", "ADE_val_00000003"):
            assert (single == joint).mean() >= 0.999, path.name
        else:
            assert np.array_equal(single, joint), path.name


def test_images_of_one_processed_size_share_a_pass_and_others_do_not(model_dir, monkeypatch):
    from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
    from maskformer.engine.predict import PredictOptions

    model = MaskFormerForInstanceSegmentation.from_pretrained(model_dir).eval()
    processor = MaskFormerImageProcessor.from_pretrained(model_dir)
    sizes = []
    real = segment.forward_images

    def counting(model, processor, images):
        sizes.append(sorted((i.width, i.height) for i in images))
        return real(model, processor, images)

    monkeypatch.setattr(segment, "forward_images", counting)
    images = [Image.new("RGB", size) for size in ((40, 30), (80, 60), (50, 50), (41, 30))]
    results = segment.segment_each(
        model, processor, [None] * 4, images, PredictOptions(task="semantic")
    )
    assert [tuple(r[2]["semantic"].shape) for r in results] == [
        (30, 40),
        (60, 80),
        (50, 50),
        (30, 41),
    ]
    # 40x30 and 80x60 both become 32x64 after the resize; 41x30 becomes 32x64 too (int(43.7)
    # = 43, rounded up to 64 by the size divisor); 50x50 becomes 32x32.
    assert sizes == [[(40, 30), (41, 30), (80, 60)], [(50, 50)]]


# ------------------------------------------------------------------------------- many images
def test_unreadable_files_come_back_from_the_readers_as_skips(model_dir, tmp_path, capsys):
    inputs = [photo(tmp_path / "in" / f"{n}.png", seed=i) for i, n in enumerate("abc")]
    (tmp_path / "in" / "bad.png").write_bytes(b"not a picture")
    out = tmp_path / "out"
    argv = predict_argv(model_dir, [tmp_path / "in"], out, "--task", "semantic")
    code, _, lines = run([*argv, "--num-workers", "2"], capsys)
    assert code == 1 and "bad.png" in lines[0] and "images/s" in lines[-1], lines
    assert sorted(p.name for p in (out / "semantic").iterdir()) == ["a.png", "b.png", "c.png"]
    assert len(inputs) == 3


def test_readers_fork_even_under_a_spawn_default_and_one_batch_reads_inline(tmp_path, monkeypatch):
    """Under a spawn (or Python 3.14's forkserver) default every predict call would re-import
    torch in its reader (~1.4 s); the readers fork on Linux instead. A single batch has nothing to
    overlap with, so it is read in this process."""
    import sys

    from maskformer.engine import predict_inputs

    paths = [photo(tmp_path / f"{n}.png", seed=i) for i, n in enumerate("abcd")]
    contexts = []
    real_loader = predict_inputs.DataLoader

    def recording_loader(*args, **kwargs):
        contexts.append((kwargs["num_workers"], kwargs["multiprocessing_context"]))
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(predict_inputs, "DataLoader", recording_loader)
    many = [item for batch in predict_inputs.read_images(paths, 1, 1) for item in batch]
    one = [item for batch in predict_inputs.read_images(paths, 4, 2) for item in batch]
    assert [path for path, _ in many] == paths == [path for path, _ in one]
    expected = "fork" if sys.platform == "linux" else None
    assert contexts == [(1, expected), (0, None)]


@pytest.mark.parametrize(
    ("cores", "processes", "threads", "expected"),
    [(2, 1, 2, 0), (16, 1, 16, 0), (16, 1, 8, 2), (16, 1, 1, 2), (16, 4, 3, 1), (4, 1, 3, 1)],
)
def test_default_readers_use_only_cores_the_model_leaves(
    monkeypatch, cores, processes, threads, expected
):
    from maskformer.engine import predict_inputs

    monkeypatch.setattr(predict_inputs.os, "cpu_count", lambda: cores)
    assert predict_inputs.default_num_workers(processes, threads) == expected


def test_resume_after_a_failure_writes_the_rest_and_nothing_twice(
    model_dir, tmp_path, capsys, monkeypatch
):
    inputs = [photo(tmp_path / "in" / f"{n}.png", seed=i) for i, n in enumerate("abcde")]
    out = tmp_path / "out"
    argv = predict_argv(
        model_dir, [tmp_path / "in"], out, "--task", "instance", "--num-workers", "0"
    )
    real, calls = segment.segment_batch, []

    def fail_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as SIGTERM is turned into
        return real(*args, **kwargs)

    monkeypatch.setattr(segment, "segment_batch", fail_third)
    assert run(argv, capsys)[0] == 130
    monkeypatch.setattr(segment, "segment_batch", real)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "overlays").iterdir()}
    assert sorted(first) == ["a.png", "b.png"]
    writes = []
    save = predict_module.save_png
    monkeypatch.setattr(
        predict_module, "save_png", lambda im, t: writes.append(t.name) or save(im, t)
    )
    code, _, lines = run([*argv, "--resume"], capsys)
    assert code == 0 and "2 already done" in lines[-1], lines
    assert sorted(writes) == ["c.png", "d.png", "e.png"]
    assert {
        p.name: p.stat().st_mtime_ns for p in (out / "overlays").iterdir() if p.name in first
    } == first
    # one clean run gives the same files
    clean = tmp_path / "clean"
    assert run(predict_argv(model_dir, inputs, clean, "--task", "instance"), capsys)[0] == 0
    assert _files(out) == _files(clean)
    assert not list((out / STATE_DIR).glob("*.jsonl"))  # journals folded
    # resuming a finished folder does nothing
    writes.clear()
    code, _, lines = run([*argv, "--resume"], capsys)
    assert code == 0 and writes == [] and "5 already done" in lines[-1]


def test_a_killed_run_leaves_a_journal_that_the_next_run_folds(model_dir, tmp_path, capsys):
    """SIGKILL: no finally block runs; the journal lines of finished images are on disk, a torn
    last line is ignored, and --resume folds them into panoptic.json."""
    inputs = [photo(tmp_path / "in" / f"{n}.png", seed=i) for i, n in enumerate("ab")]
    out = tmp_path / "out"
    argv = predict_argv(model_dir, inputs, out, "--task", "panoptic", "--no-overlay")
    assert run(argv, capsys)[0] == 0
    records = json.loads((out / "panoptic.json").read_text())["annotations"]
    # Pretend the run was killed after "a": its record only in a journal, "b" torn.
    (out / "panoptic.json").unlink()
    journal = out / STATE_DIR / "journal.rank0.jsonl"
    line = json.dumps({"image": "a", "records": [records[0]]})
    journal.write_text(line + "\n" + line[: len(line) // 2])
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["completed"] = []
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    (out / "panoptic" / "b.png").unlink()
    code, _, lines = run([*argv, "--resume"], capsys)
    assert code == 0 and "1 already done" in lines[-1], lines
    again = json.loads((out / "panoptic.json").read_text())["annotations"]
    assert _sorted_json({"annotations": again}) == _sorted_json({"annotations": records})


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (["--task", "semantic"], "task"),
        (["--threshold", "0.7"], "threshold"),
        (["--tta", "flip"], "tta"),
    ],
)
def test_resume_into_a_folder_of_other_settings_is_one_line(
    model_dir, tmp_path, capsys, change, name
):
    image = photo(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = predict_argv(model_dir, [image], out, "--no-overlay")
    assert run(argv, capsys)[0] == 0
    code, _, lines = run([*argv, "--resume", *change], capsys)
    assert_one_line(code, lines, "--resume", name, MANIFEST_NAME)


def test_resume_with_another_model_is_one_line(model_dir, tmp_path, capsys):
    import shutil

    image = photo(tmp_path / "a.png")
    out = tmp_path / "out"
    assert run(predict_argv(model_dir, [image], out), capsys)[0] == 0
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["num_queries"] = config.get("num_queries", 100) + 1
    (other / "config.json").write_text(json.dumps(config))
    code, _, lines = run([*predict_argv(other, [image], out), "--resume"], capsys)
    assert_one_line(code, lines, "--resume", "model")
    # the same checkpoint under another path is another model too
    same = tmp_path / "same"
    shutil.copytree(model_dir, same)
    code, _, lines = run([*predict_argv(same, [image], out), "--resume"], capsys)
    assert_one_line(code, lines, "--resume", "model", os.fspath(same))
