"""The systemd unit (hardening exposure <= 3.0 per systemd-analyze), the deploy scripts, and
the sd_notify protocol."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from edgead.outputs import sd_notify

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edgead.service"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_security_exposure_at_most_3():
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for edgead\.service: (\d+(?:\.\d+)?)", out)
    assert match, out[-2000:]
    assert float(match.group(1)) <= 3.0, out[-2000:]


def test_unit_contract():
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["on-failure"]
    assert int(s["WatchdogSec"][0]) > 0 and s["NotifyAccess"] == ["main"]
    assert s["User"] == ["edgead"] and set(s["SupplementaryGroups"][0].split()) == {"video", "gpio"}
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes")):
        assert s[key] == [value], key
    assert "/var/lib/edgead" in s["ReadWritePaths"][0]
    assert s["ExecStart"][0].endswith("edgead serve --config /etc/edgead/edgead.toml")
    environment = " ".join(s["Environment"]).split()
    assert "MALLOC_ARENA_MAX=2" in environment  # freed memory stays in few arenas, where malloc_trim returns it


def test_deploy_scripts_parse():
    """(What they do is tested in test_service_deploy.py.)"""
    for script in ("install-pi.sh", "push-model.sh"):
        path = REPO / "deploy" / script
        assert os.access(path, os.X_OK), script
        subprocess.run(["bash", "-n", str(path)], check=True)


def test_sd_notify_datagrams(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify.notify("READY=1", "STATUS=serving")
        assert sock.recv(1024) == b"READY=1\nSTATUS=serving"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify.notify("READY=1") is False  # outside systemd: a no-op


def test_sd_notify_never_blocks_on_a_full_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # bound but never read
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        results = [sd_notify.notify("WATCHDOG=1") for _ in range(5000)]
    assert results[0] is True and results[-1] is False


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sd_notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sd_notify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sd_notify.watchdog_interval() is None


def _drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on the (non-blocking) socket."""
    out = []
    while True:
        try:
            out.append(sock.recv(1024))
        except BlockingIOError:
            return out


def test_watchdog_stops_pinging_while_the_worker_hangs_and_resumes(tmp_path, monkeypatch, caplog):
    """The daemon pings WATCHDOG=1 while healthy, stops while a job hangs longer than the
    watchdog interval (systemd then restarts it), and pings again once the job returns."""
    import threading

    import httpx
    from service_harness import FakeModel, png_bytes, serve, solid, wait_for

    from edgead.service.app import create_app
    from edgead.service.config import EdgeadConfig

    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "300000")  # 0.3 s: pings every 0.1 s, a 0.3 s job counts as hung
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    gate = threading.Event()
    app = create_app(EdgeadConfig(inspection={"data_dir": str(tmp_path / "data")}), model=FakeModel(gate=gate))
    worker = app.state.runtime.worker

    def refusals() -> int:
        return sum("not pinging systemd" in r.getMessage() for r in caplog.records)

    try:
        with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            sock.settimeout(30)
            assert sock.recv(1024) == b"WATCHDOG=1"  # healthy: pinging
            statuses: list[int] = []
            request = threading.Thread(target=lambda: statuses.append(
                client.post("/score", content=png_bytes(solid(10)), headers={"Content-Type": "image/png"}).status_code))
            request.start()
            wait_for(lambda: worker.busy_for() > 0)  # the job hangs in the model
            wait_for(refusals)  # the watchdog has seen the hang ...
            sock.setblocking(False)
            _drain(sock)  # (pings sent before it did)
            seen = refusals()
            wait_for(lambda: refusals() >= seen + 3)  # ... and kept seeing it for three more rounds
            assert _drain(sock) == [], "pinged systemd while the inference worker hung"
            assert worker.alive and not statuses
            gate.set()  # the job returns: healthy again
            request.join(60)
            assert statuses == [200]
            sock.settimeout(30)
            assert sock.recv(1024) == b"WATCHDOG=1"
    finally:
        gate.set()
        sock.close()
