"""The daemon as systemd runs it: a subprocess (`python -m edgead.service.main`) that reports
READY/WATCHDOG over $NOTIFY_SOCKET, is killed with SIGKILL while writing results, and leaves a
readable database holding every result it acknowledged; then a clean SIGTERM shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def png_bomb(side: int = 20000) -> bytes:
    """A few-kB PNG whose header promises side x side pixels (1.2 GB decoded as BGR)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\0" * ((side + 1) * 64))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


class NotifyListener:
    """The systemd side of sd_notify: a datagram socket drained by a thread, as systemd does."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._closed.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def wait(self, field: str, timeout: float = 300.0) -> str:  # a guard against a hang, not a speed limit
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in list(self.messages):
                if field in msg.split("\n"):
                    return msg
            time.sleep(0.02)
        raise AssertionError(f"no {field} from the daemon within {timeout} s; got {self.messages[-5:]}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self.sock.close()


def start_daemon(tmp_path: Path, model_dir: Path, frames: Path, notify: Path) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "600000",
           "EDGEAD_TRIGGER__RATE_HZ": "20", "PYTHONPATH": str(REPO)}
    env.pop("WATCHDOG_PID", None)
    cmd = [sys.executable, "-m", "edgead.service.main", "--model", str(model_dir), "--source", f"folder:{frames}",
           "--trigger", "continuous", "--port", "0", "--data-dir", str(tmp_path / "data"), "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "daemon.log", "ab"))


def base_url(ready_message: str) -> str:
    status = next(line for line in ready_message.split("\n") if line.startswith("STATUS="))
    return "http://" + status.rsplit(" ", 1)[-1]


@pytest.mark.slow
def test_kill9_loses_no_acknowledged_row(tmp_path, model_dir, synthetic_images):
    frames = tmp_path / "frames"
    frames.mkdir()
    for path in synthetic_images["good"][:2] + synthetic_images["bad"][:2]:
        shutil.copy(path, frames / path.name.replace(".png", f"-{path.parent.name}.png"))
    uploads = [p.read_bytes() for p in synthetic_images["bad"][:3] + synthetic_images["good"][:3]]

    listener = NotifyListener(tmp_path / "notify.sock")
    proc = start_daemon(tmp_path, model_dir, frames, tmp_path / "notify.sock")
    try:
        url = base_url(listener.wait("READY=1"))
        listener.wait("WATCHDOG=1")
        # a decompression bomb is refused from its header by the model's frame limit, before any decode
        r = httpx.post(f"{url}/score", content=png_bomb(), headers={"Content-Type": "image/png"}, timeout=30)
        assert r.status_code == 413 and r.json()["error"] == "image_too_large", r.text
        acked: list[int] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(offset: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                i = offset
                while not stop.is_set():
                    try:
                        r = c.post("/score", content=uploads[i % len(uploads)], headers={"Content-Type": "image/png"})
                    except httpx.HTTPError:
                        return  # the daemon is gone
                    if r.status_code == 200 and r.json()["id"] is not None:
                        with lock:
                            acked.append(r.json()["id"])
                    i += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 600  # only a guard against a hang: a loaded machine is slower
        while len(acked) < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # in the middle of uploads and continuous captures
        proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with lock:
        acknowledged = set(acked)
    assert len(acknowledged) >= 40

    db = sqlite3.connect(tmp_path / "data" / "inspections.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in db.execute("SELECT id FROM results")}
        origins = {row[0] for row in db.execute("SELECT DISTINCT origin FROM results")}
    finally:
        db.close()
    assert acknowledged <= stored, f"lost acknowledged rows: {sorted(acknowledged - stored)[:10]}"
    assert {"upload", "continuous"} <= origins

    # the daemon restarts on the same data, serves the old rows, and stops cleanly on SIGTERM
    listener.messages.clear()
    proc = start_daemon(tmp_path, model_dir, frames, tmp_path / "notify.sock")
    try:
        url = base_url(listener.wait("READY=1"))
        with httpx.Client(base_url=url, timeout=30) as c:
            newest = max(acknowledged)
            assert c.get(f"/results/{newest}").status_code == 200
            assert c.get("/health").json()["inspection_log"]["rows"] >= len(acknowledged)
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown; systemd counts SIGTERM as clean
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        listener.wait("STOPPING=1", timeout=5)
        assert "Traceback" not in (tmp_path / "daemon.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
