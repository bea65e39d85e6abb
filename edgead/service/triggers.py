"""Trigger modes besides on-demand: a continuous capture loop, and the GPIO input trigger."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Callable

from edgead.capture.base import SourceUnavailable
from edgead.service.worker import Job, QueueFull, WorkerStopped

log = logging.getLogger(__name__)


class ContinuousTrigger:
    """Scores frames at up to ``rate_hz`` on one sleeping thread. Each frame waits for its result
    before the next one is queued, so the loop never floods the queue; when the source is down
    the loop waits out the source's backoff."""

    def __init__(self, submit: Callable[[Job], Future], rate_hz: float, on_dropped: Callable[[], None] = lambda: None):
        self._submit = submit
        self._period = 1.0 / rate_hz
        self._on_dropped = on_dropped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgead-continuous", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            pause = 0.0
            try:
                self._submit(Job(origin="continuous", answered=False)).result()
            except QueueFull as exc:
                self._on_dropped()
                pause = float(exc.retry_after)
            except SourceUnavailable as exc:
                pause = exc.retry_after
            except WorkerStopped:
                return
            except Exception as exc:  # logged and counted by the pipeline; keep the line running
                log.debug("continuous trigger: %s", exc)
            self._stop.wait(max(pause, self._period - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15.0)


class GpioTrigger:
    """Queues one capture job per activation of the trigger input (no waiting in gpiozero's
    callback thread); activations arriving while the queue is full are dropped and counted."""

    def __init__(self, submit: Callable[[Job], Future], on_dropped: Callable[[], None] = lambda: None):
        self._submit = submit
        self._on_dropped = on_dropped
        self.fired = 0

    def __call__(self) -> None:
        self.fired += 1
        try:
            self._submit(Job(origin="gpio", answered=False))
        except QueueFull:
            log.warning("trigger input: inference queue full, frame dropped")
            self._on_dropped()
        except WorkerStopped:
            pass
