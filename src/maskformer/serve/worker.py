"""The queue in front of the model: one forward at a time, waiting requests grouped in batches.

Request handlers :meth:`InferenceQueue.submit` an image and get a ``concurrent.futures.Future``.
One worker thread owns the model: it takes the oldest waiting job, adds up to ``max_batch - 1``
other waiting jobs that ask for the same task and thresholds (oldest first; it never waits for
more to arrive), runs them through :func:`maskformer.engine.predict.segment_batch` in one forward
pass and resolves their futures. Only images of one size share a batch: the model does not
mask batch padding (``pixel_mask`` is ignored, as in the reference), so a padded image would get
a different answer than alone. Under load requests wait in line instead of competing for the
model; beyond ``max_pending`` queued or running jobs, ``submit`` refuses with
:class:`QueueFullError` (the app answers 503).
"""

from __future__ import annotations

import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from maskformer.engine.predict import TASKS, segment_batch


@dataclass(frozen=True)
class SegmentSettings:
    """What one request asks for; jobs with equal settings can share a forward pass."""

    task: str = "panoptic"
    threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.8
    label_ids_to_fuse: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


class QueueFullError(RuntimeError):
    """``max_pending`` jobs are already queued or running."""


class WorkerStoppedError(RuntimeError):
    """The queue was closed before the job ran."""


@dataclass
class _Job:
    image: Image.Image
    settings: SegmentSettings
    future: Future = field(default_factory=Future)


SegmentFunction = Callable[..., list[dict[str, Any]]]


class InferenceQueue:
    """A worker thread that runs ``model`` on submitted images, ``max_batch`` at most per forward.

    Args:
        model: the network, already on its device and in eval mode.
        processor: its image processor.
        max_batch: most images per forward pass (jobs of equal settings that are waiting).
        max_pending: most jobs queued or running at once; more are refused.
        segment: the function that segments a list of images (default
            :func:`~maskformer.engine.predict.segment_batch`; same signature).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        max_batch: int = 1,
        max_pending: int = 64,
        segment: SegmentFunction = segment_batch,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.model = model
        self.processor = processor
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._segment = segment
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        # forward passes run, by batch size (at most max_batch keys), for /healthz and tests
        self.batch_sizes: Counter[int] = Counter()

    # ------------------------------------------------------------------------------- public
    @property
    def pending(self) -> int:
        """Jobs queued or running now."""
        return self._pending

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread (once)."""
        with self._lock:
            if self._closed:
                raise WorkerStoppedError("the inference queue is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="maskformer-serve-worker", daemon=True
                )
                self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Refuse new jobs, let the running batch finish, fail the jobs still waiting."""
        with self._lock:
            self._closed = True
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def ensure_room(self) -> None:
        """Raise :class:`QueueFullError` when ``max_pending`` jobs are waiting or running."""
        if self._pending >= self.max_pending:
            raise QueueFullError(
                f"{self._pending} requests are waiting (the limit is {self.max_pending})"
            )

    def submit(self, image: Image.Image, settings: SegmentSettings) -> Future:
        """Queue one RGB ``image``; the future's result is the post-processed result dict of
        :func:`~maskformer.engine.predict.segment_batch` for it.

        Raises:
            QueueFullError: ``max_pending`` jobs are waiting or running.
            WorkerStoppedError: the queue is closed.
        """
        if self._thread is None:  # an app run without its lifespan (e.g. mounted elsewhere)
            self.start()
        job = _Job(image, settings)
        with self._lock:
            if self._closed:
                raise WorkerStoppedError("the inference queue is closed")
            self.ensure_room()
            self._pending += 1
        self._jobs.put(job)
        return job.future

    # ------------------------------------------------------------------------------ worker
    def _loop(self) -> None:
        waiting: deque[_Job] = deque()
        stopping = False
        while True:
            if not waiting:
                job = self._jobs.get()
                if job is None:
                    break
                waiting.append(job)
            # Everything that has arrived meanwhile is a candidate for this batch.
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                else:
                    waiting.append(job)
            if stopping:
                self._fail(waiting, WorkerStoppedError("the server is shutting down"))
                break
            self._run(self._take_batch(waiting))
        while True:  # jobs submitted during shutdown
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._fail([job], WorkerStoppedError("the server is shutting down"))

    def _take_batch(self, waiting: deque[_Job]) -> list[_Job]:
        """Remove and return the oldest job and up to ``max_batch - 1`` later ones with equal
        settings and image size; the others keep their order."""
        first = waiting.popleft()
        batch, kept = [first], deque()
        while waiting:
            job = waiting.popleft()
            if len(batch) < self.max_batch and _same_kind(job, first):
                batch.append(job)
            else:
                kept.append(job)
        waiting.extend(kept)
        return batch

    def _run(self, batch: Sequence[_Job]) -> None:
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        self._release(len(batch) - len(live))
        if not live:
            return
        settings = live[0].settings
        try:
            results = self._segment(
                self.model,
                self.processor,
                [job.image for job in live],
                settings.task,
                settings.threshold,
                settings.mask_threshold,
                settings.overlap_mask_area_threshold,
                set(settings.label_ids_to_fuse),
            )
        except Exception as error:  # handed to each request; the worker keeps serving
            for job in live:
                job.future.set_exception(error)
        else:
            self.batch_sizes[len(live)] += 1
            for job, result in zip(live, results):
                job.future.set_result(result)
        finally:
            self._release(len(live))

    def _fail(self, jobs: Sequence[_Job], error: Exception) -> None:
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)
        self._release(len(jobs))

    def _release(self, count: int) -> None:
        with self._lock:
            self._pending -= count


def _same_kind(job: _Job, other: _Job) -> bool:
    """Jobs that can share a forward pass: equal settings and equal image size."""
    return job.settings == other.settings and job.image.size == other.image.size
