"""Keeps a frame source usable: opens it, reopens it with exponential backoff after a failure,
and reports its state for ``/health`` and ``/metrics``. A watch thread probes an idle source and
retries a failed one, so the reported state follows the camera whether or not anyone asks for a
frame (on-demand triggering would otherwise only notice a loss, or a return, at the next capture)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from edgead.capture.base import CaptureError, Frame, FrameSource, SourceUnavailable

log = logging.getLogger(__name__)

# states reported in /health
CLOSED, CONNECTING, OK, FAILED = "closed", "connecting", "ok", "failed"


class SourceSupervisor:
    """Thread-safe wrapper around one FrameSource."""

    def __init__(self, source: FrameSource, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, probe_interval: float = 0.5,
                 on_change: Callable[[], None] | None = None):
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self.source = source
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self._lock = threading.Lock()
        self._is_open = False
        self._ever_opened = False
        self._closed = False
        self._state = CLOSED
        self._backoff = backoff_initial
        # None: no attempt scheduled (monotonic time has no value that is surely in the past)
        self._next_attempt: float | None = None
        self.last_error: str | None = None
        self.last_frame_at: float | None = None  # monotonic
        self.frames = 0
        self.failures = 0
        self.reconnects = 0
        self._streak = 0  # failures since the last good frame
        self.probe_interval = probe_interval
        self.on_change = on_change  # called (without the lock) after the watch thread changed the state
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def spec(self) -> str:
        return self.source.spec

    @property
    def state(self) -> str:
        return self._state

    def start(self) -> bool:
        """Try to open now; on failure the source is retried later. True when it opened."""
        with self._lock:
            self._closed = False
            try:
                self._open_locked()
                return True
            except CaptureError:
                return False

    def watch(self) -> None:
        """Start the watch thread (once); it ends at ``close``."""
        if self._watcher is not None or self.probe_interval <= 0:
            return
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch_loop, name="edgead-source-watch", daemon=True)
        self._watcher.start()

    def check(self) -> str:
        """One watch step: reopen a failed source once its backoff is due, probe an open one that
        delivered no frame lately. Returns the state afterwards."""
        with self._lock:
            if self._closed:
                return self._state
            try:
                if not self._is_open:
                    if self._next_attempt - self._clock() <= 0:
                        self._open_locked()
                elif self.last_frame_at is None or self._clock() - self.last_frame_at >= self.probe_interval:
                    try:
                        self.source.probe()
                    except Exception as exc:  # a driver may raise anything; the source is reopened
                        self._fail_locked(exc)
            except SourceUnavailable:
                pass
            return self._state

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.probe_interval):
            before = self._state
            try:
                after = self.check()
            except Exception:  # the watcher must outlive any driver bug
                log.exception("%s: source watch failed", self.spec)
                continue
            if after != before and self.on_change is not None:
                try:
                    self.on_change()
                except Exception:
                    log.exception("%s: state change callback failed", self.spec)

    def capture(self) -> Frame:
        """A fresh frame, or SourceUnavailable (with the seconds until the next attempt)."""
        with self._lock:
            if self._closed:
                raise SourceUnavailable(f"{self.spec}: source is closed", self.backoff_max)
            if not self._is_open:
                self._open_locked()
            try:
                frame = self.source.read()
            except Exception as exc:  # a driver may raise anything; the source is reopened
                self._fail_locked(exc)
            self.frames += 1
            self.last_frame_at = self._clock()
            self._backoff = self.backoff_initial
            self._streak = 0
            return frame

    def retry_in(self) -> float:
        """Seconds until the next open attempt (0 when open or due)."""
        if self._is_open or self._next_attempt is None:
            return 0.0
        return max(0.0, self._next_attempt - self._clock())

    def last_frame_age(self) -> float | None:
        return None if self.last_frame_at is None else self._clock() - self.last_frame_at

    def status(self) -> dict:
        age = self.last_frame_age()
        return {
            "spec": self.spec,
            "state": self._state,
            "ok": self._state == OK,
            "last_error": self.last_error,
            "last_frame_age_s": None if age is None else round(age, 3),
            "frames": self.frames,
            "failures": self.failures,
            "reconnects": self.reconnects,
            "retry_in_s": round(self.retry_in(), 3),
        }

    def close(self) -> None:
        self._stop.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=5)
        with self._lock:
            self._closed = True
            self._close_locked()
            self._state = CLOSED

    # -- internals (lock held) -------------------------------------------------------------
    def _open_locked(self) -> None:
        wait = self.retry_in()
        if wait > 0:
            raise SourceUnavailable(
                f"{self.spec}: unavailable, next attempt in {wait:.1f} s (last error: {self.last_error})", wait)
        self._state = CONNECTING
        try:
            self.source.open()
        except Exception as exc:
            self._fail_locked(exc)
        self._is_open = True
        self._state = OK
        if self._ever_opened:
            self.reconnects += 1
            log.info("%s: reopened after %d failure(s)", self.spec, self.failures)
        self._ever_opened = True
        self.last_error = None

    def _fail_locked(self, exc: BaseException):
        """Close the source, schedule the next attempt, raise SourceUnavailable."""
        self.failures += 1
        self._streak += 1
        self.last_error = str(exc) or type(exc).__name__
        self._close_locked()
        self._state = FAILED
        delay = self._backoff
        self._next_attempt = self._clock() + delay
        self._backoff = min(self._backoff * 2, self.backoff_max)
        message = self.last_error if self.last_error.startswith(self.spec) else f"{self.spec}: {self.last_error}"
        # the first failure and every 10th of an outage: a camera down for hours must not flood the journal
        level = logging.WARNING if self._streak % 10 == 1 else logging.DEBUG
        log.log(level, "%s; retrying in %.1f s (failure %d in a row)", message, delay, self._streak)
        raise SourceUnavailable(message, delay) from None

    def _close_locked(self) -> None:
        self._is_open = False
        try:
            self.source.close()
        except Exception as exc:  # never let a failing release mask the original error
            log.warning("%s: error while closing (%s)", self.spec, exc)
