"""The single inference worker: one thread runs every job (capture/decode -> score -> outputs)
in turn, fed by a small bounded queue. A full queue refuses at once (HTTP 503 + Retry-After)
instead of letting latency grow without bound."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from edgead.heap import release_free_memory

log = logging.getLogger(__name__)

# at most this often, when the queue has run empty, freed heap memory goes back to the OS
TRIM_INTERVAL_S = 1.0


class QueueFull(Exception):
    """The queue is at its bound; retry after ``retry_after`` seconds."""

    def __init__(self, depth: int, retry_after: int):
        super().__init__(f"inference queue full ({depth} waiting)")
        self.retry_after = retry_after


class WorkerStopped(Exception):
    """The worker is shutting down."""


@dataclass
class Job:
    """One frame to score. ``origin``: capture (GET /score), upload (POST /score), continuous,
    gpio. ``data`` holds the encoded upload; capture jobs grab a frame in the worker.
    ``actuate``/``record``: whether a reject moves the line and the part is logged."""

    origin: str
    data: bytes | None = None
    name: str = "upload"
    heatmap: bool = False
    actuate: bool = True
    record: bool = True  # False: answer only (an anonymous upload): no inspection-log row, no stored frame
    answered: bool = True  # someone is answered with this job's log row: it commits before the answer
    part: int | None = None  # the part's place in the ejector FIFO, when parts are tracked
    received: float = field(default_factory=time.monotonic)
    received_wall: float = field(default_factory=time.time)
    future: Future = field(default_factory=Future)


class InferenceWorker:
    """Runs ``handler(job)`` for each job on one thread; results/exceptions go to job.future."""

    def __init__(self, handler: Callable[[Job], Any], maxsize: int = 4, name: str = "edgead-inference"):
        self._handler = handler
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=maxsize)
        self.capacity = maxsize
        self._name = name
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._busy_since: float | None = None
        self._avg_job_s = 0.1  # EWMA of job duration, for Retry-After
        self.jobs_done = 0
        # None until the first trim: monotonic time counts from boot, so no number is "long ago"
        self._trimmed_at: float | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def busy_for(self) -> float:
        """Seconds the current job has been running (0 when idle): a hung model shows here."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def retry_after(self) -> int:
        return max(1, math.ceil((self.depth + 1) * self._avg_job_s))

    def submit(self, job: Job) -> Future:
        if self._stopping or self._thread is None:
            raise WorkerStopped("the inference worker is not running")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(self.depth, self.retry_after()) from None
        return job.future

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._stopping:
                if job is not None:
                    _fail(job)
                break
            if not job.future.set_running_or_notify_cancel():
                continue  # the client gave up while the job was queued
            start = self._busy_since = time.monotonic()
            try:
                job.future.set_result(self._handler(job))
            except BaseException as exc:  # delivered to the waiting request
                job.future.set_exception(exc)
            finally:
                self._busy_since = None
                self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * (time.monotonic() - start)
                self.jobs_done += 1
            if self._queue.empty() and self._trim_due():
                # idle: hand what the jobs freed back to the OS (a few ms at most, off any request)
                release_free_memory()
                self._trimmed_at = time.monotonic()

    def _trim_due(self) -> bool:
        last = self._trimmed_at
        return last is None or time.monotonic() - last > TRIM_INTERVAL_S

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, fail the queued ones, let the running one finish."""
        self._stopping = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                _fail(job)
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout)


def _fail(job: Job) -> None:
    if job.future.set_running_or_notify_cancel():
        job.future.set_exception(WorkerStopped("the service is shutting down"))
