"""The inference queue of `maskformer serve`: one forward at a time, grouping, limits, shutdown.

A stand-in segment function records what the worker hands it, so these tests need neither a
model nor the web stack."""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait

import pytest
from PIL import Image

from maskformer.serve.worker import (
    InferenceQueue,
    QueueFullError,
    SegmentSettings,
    WorkerStoppedError,
)


class RecordingSegment:
    """Segments nothing: returns each image's tag (its first pixel's red value), records batches and concurrent calls, and can
    be held at a gate so that requests pile up behind it."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.active = 0
        self.most_active = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, model, processor, images, task, threshold, mask_threshold, overlap, fuse):
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.entered.set()
        assert self.gate.wait(10)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
            self.batches.append((task, [_tag(image) for image in images]))
        if any(_tag(image) == 13 for image in images):
            raise RuntimeError("tag 13 is unlucky")
        return [{"width": _tag(image), "task": task, "threshold": threshold} for image in images]


def _image(tag: int, width: int = 8) -> Image.Image:
    return Image.new("RGB", (width, 4), (tag, 0, 0))


def _tag(image: Image.Image) -> int:
    return image.getpixel((0, 0))[0]


def test_one_forward_at_a_time_and_every_answer_is_its_own():
    segment = RecordingSegment(delay=0.002)
    inference = InferenceQueue(None, None, max_batch=1, segment=segment)
    inference.start()
    futures = []
    submitters = [
        threading.Thread(
            target=lambda w=w: futures.append(
                (w, inference.submit(_image(w), SegmentSettings("semantic")))
            )
        )
        for w in range(20, 40)
    ]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join(10)
    assert all(f.result(10)["width"] == w for w, f in futures)
    inference.close()
    assert segment.most_active == 1
    assert sorted(w for _, (w,) in segment.batches) == list(range(20, 40))
    assert inference.pending == 0


def test_waiting_jobs_with_equal_settings_share_a_batch_in_order():
    segment = RecordingSegment()
    inference = InferenceQueue(None, None, max_batch=3, segment=segment)
    segment.gate.clear()
    panoptic, semantic = SegmentSettings("panoptic"), SegmentSettings("semantic")
    first = inference.submit(_image(1), panoptic)  # starts the worker, which waits at the gate
    assert segment.entered.wait(10)
    plan = [(2, panoptic), (3, semantic), (4, panoptic), (5, panoptic), (6, panoptic)]
    futures = [inference.submit(_image(w), s) for w, s in plan]
    segment.gate.set()
    wait([first, *futures], timeout=10)
    inference.close()
    # the oldest waiting job leads; equal settings join it up to max_batch, the rest keep order
    assert segment.batches == [
        ("panoptic", [1]),
        ("panoptic", [2, 4, 5]),
        ("semantic", [3]),
        ("panoptic", [6]),
    ]
    assert [f.result()["width"] for f in futures] == [2, 3, 4, 5, 6]
    assert inference.batch_sizes == {1: 3, 3: 1}


def test_images_of_different_sizes_do_not_share_a_batch():
    # The model ignores pixel_mask: a padded image would be answered differently than alone.
    segment = RecordingSegment()
    inference = InferenceQueue(None, None, max_batch=4, segment=segment)
    segment.gate.clear()
    first = inference.submit(_image(1), SegmentSettings())
    assert segment.entered.wait(10)
    futures = [
        inference.submit(_image(t, width), SegmentSettings())
        for t, width in [(2, 8), (3, 9), (4, 8), (5, 9)]
    ]
    segment.gate.set()
    wait([first, *futures], timeout=10)
    inference.close()
    assert segment.batches == [("panoptic", [1]), ("panoptic", [2, 4]), ("panoptic", [3, 5])]


def test_full_queue_refuses_and_recovers():
    segment = RecordingSegment()
    inference = InferenceQueue(None, None, max_pending=2, segment=segment)
    segment.gate.clear()
    running = inference.submit(_image(1), SegmentSettings())
    assert segment.entered.wait(10)
    waiting = inference.submit(_image(2), SegmentSettings())
    with pytest.raises(QueueFullError, match="2 requests are waiting"):
        inference.submit(_image(3), SegmentSettings())
    segment.gate.set()
    assert running.result(10)["width"] == 1 and waiting.result(10)["width"] == 2
    assert inference.submit(_image(4), SegmentSettings()).result(10)["width"] == 4
    inference.close()


def test_a_failing_batch_fails_its_requests_only():
    inference = InferenceQueue(None, None, segment=RecordingSegment())
    bad = inference.submit(_image(13), SegmentSettings())
    with pytest.raises(RuntimeError, match="unlucky"):
        bad.result(10)
    assert inference.submit(_image(14), SegmentSettings()).result(10)["width"] == 14
    assert inference.pending == 0
    inference.close()


def test_close_finishes_the_running_batch_and_fails_the_waiting_ones():
    segment = RecordingSegment()
    inference = InferenceQueue(None, None, segment=segment)
    segment.gate.clear()
    running = inference.submit(_image(1), SegmentSettings())
    assert segment.entered.wait(10)
    waiting = inference.submit(_image(2), SegmentSettings("semantic"))
    closer = threading.Thread(target=inference.close)
    closer.start()
    segment.gate.set()
    closer.join(10)
    assert running.result(10)["width"] == 1
    with pytest.raises(WorkerStoppedError):
        waiting.result(10)
    with pytest.raises(WorkerStoppedError, match="closed"):
        inference.submit(_image(3), SegmentSettings())
    assert not inference.running and inference.pending == 0


def test_settings_are_checked():
    with pytest.raises(ValueError, match="task must be one of"):
        SegmentSettings("depth")
    with pytest.raises(ValueError, match="mask_threshold must be in"):
        SegmentSettings(mask_threshold=1.5)
    with pytest.raises(ValueError, match="max_batch"):
        InferenceQueue(None, None, max_batch=0)
