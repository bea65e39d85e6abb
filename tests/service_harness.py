"""Helpers for the service tests: a real uvicorn server on loopback in a thread, a fake model
with the InspectionModel interface, and small waiting helpers (condition polling, never timing
assertions)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgead.errors import ArtifactError, ConfigError
from edgead.result import ScoreResult


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy; its value, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1:<free port> in a thread, with the daemon's own
    server settings (connection bounds); yields the base URL."""
    import uvicorn

    from edgead.service.main import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, app.state.runtime.config))
    server.config.timeout_graceful_shutdown = 5
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=120)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


class FakeModel:
    """InspectionModel stand-in: the score is the mean brightness of the frame (so bright test
    images are anomalous), map = brightness. ``gate`` (an Event) blocks scoring until set."""

    def __init__(self, path: str | Path = "/models/fake", threshold: float = 128.0, name: str = "fake",
                 sha256: str = "f" * 64, gate: threading.Event | None = None):
        self.path = Path(path)
        self.name = name
        self.version = "1"
        self.sha256 = sha256
        self.precision = "fp32"
        self.manifest = {"method": "fake", "threshold": threshold}
        self.input_size = (32, 32)
        self._threshold = float(threshold)
        self.gate = gate
        self.calls = 0

    @property
    def threshold(self) -> float:
        return self._threshold

    def set_threshold(self, value: float) -> None:
        if not value > 0:
            raise ConfigError(f"threshold {value}: must be a positive finite number")
        self._threshold = float(value)

    def score(self, image: np.ndarray, with_map: bool = True, defer_map: bool = True) -> ScoreResult:
        if self.gate is not None:
            self.gate.wait(30)
        self.calls += 1
        grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
        s = float(grey.mean())
        return ScoreResult(score=s, normalized_score=s / self._threshold, threshold=self._threshold,
                           is_anomaly=s > self._threshold, anomaly_map=grey if with_map else None,
                           timings_ms={"preprocess": 0.1, "backbone": 0.2, "search": 0.1, "score": 0.1, "total": 0.5})


def fake_loader(path: Any, **kwargs: Any) -> FakeModel:
    """Loads a FakeModel from any directory holding a file named ``ok``; ArtifactError otherwise."""
    path = Path(path)
    if not (path / "ok").is_file():
        raise ArtifactError(f"{path / 'manifest.json'}: checksum mismatch (fake)")
    return FakeModel(path, name=path.name, sha256=(path.name * 64)[:64])


def png_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def solid(value: int, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)
