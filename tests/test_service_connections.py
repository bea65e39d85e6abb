"""Connection floods on a shared plant network: connections beyond the cap are shed before their
request is read (a liveness probe still answered), a burst larger than the process's descriptor
limit never runs ``accept()`` out of descriptors, and asyncio's accept errors cannot flood the log."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from service_harness import FakeModel, serve, wait_for

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig
from edgead.service.connections import listen_backlog, quiet_accept_errors

REPO = Path(__file__).resolve().parents[1]
STALLED = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 50000\r\n\r\n0123456789"


def answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def test_connections_over_the_cap_get_503_unread_but_liveness_answers(tmp_path):
    config = EdgeadConfig(server={"max_connections": 8, "header_timeout_s": 60},
                          inspection={"data_dir": str(tmp_path / "data")})
    app = create_app(config, model=FakeModel())
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]  # the cap, silent
        with httpx.Client(base_url=url, timeout=30) as client:
            wait_for(lambda: client.get("/health/live").status_code == 200)  # over the cap: a probe is served
        over = socket.create_connection(("127.0.0.1", port), timeout=30)
        over.sendall(STALLED)
        reply = answer(over)
        head = reply.split(b"\r\n\r\n", 1)[0].lower()
        assert status(reply) == 503 and b"retry-after: 1" in head and b'"error": "busy"' in reply
        silent = socket.create_connection(("127.0.0.1", port), timeout=30)  # sends nothing: answered, closed
        assert status(answer(silent)) == 503
        for s in idle + [over, silent]:
            s.close()
        with httpx.Client(base_url=url, timeout=30) as client:  # below the cap again: served as usual
            assert wait_for(lambda: client.post("/score", content=b"x", headers={"Content-Type": "image/png"})
                            .status_code == 400)


def test_listen_backlog_fits_under_the_descriptor_limit(caplog):
    assert listen_backlog(64, 256, nofile=1024) == 64
    with caplog.at_level(logging.WARNING):
        assert listen_backlog(2048, 256, nofile=1024) == (1024 - 256 - 64) // 4
    assert "LimitNOFILE" in caplog.text
    assert listen_backlog(64, 1000, nofile=1024) == 8
    assert listen_backlog(64, 256, nofile=resource.RLIM_INFINITY) == 64


def test_accept_errors_are_one_line_not_a_traceback_each(caplog):
    loop = asyncio.new_event_loop()
    try:
        quiet_accept_errors(loop)
        context = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
        with caplog.at_level(logging.WARNING):
            for _ in range(500):
                loop.call_exception_handler(dict(context))
            loop.call_exception_handler({"message": "something else"})
    finally:
        loop.close()
    accepts = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(accepts) == 1 and accepts[0].exc_info is None
    assert any(r.getMessage() == "something else" for r in caplog.records)  # other errors as before


def test_a_burst_beyond_the_descriptor_limit_never_exhausts_it(tmp_path):
    """The real daemon under RLIMIT_NOFILE=384 and a burst of 450 stalled uploads: no failed
    accept() (no EMFILE), every connection answered, liveness and scoring still served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 600:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGEAD_SERVER__MAX_CONNECTIONS": "64",
           "EDGEAD_SERVER__BODY_TIMEOUT_S": "1"}
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edgead.service.main", "--model", str(REPO / "edgead" / "demo_model"), "--source",
             "none", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--log-level", "warning"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (384, 384)))
    url = f"http://127.0.0.1:{port}"
    try:
        def live() -> bool:
            assert daemon.poll() is None, log_path.read_text()
            try:
                return httpx.get(f"{url}/health/live", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(live, timeout=300)
        socks = []
        for _ in range(450):
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(STALLED)
            socks.append(s)
        assert httpx.get(f"{url}/health/live", timeout=60).status_code == 200
        codes = [status(answer(s)) for s in socks]
        for s in socks:
            s.close()
        assert set(codes) <= {408, 503} and codes.count(503) > 0, sorted(set(codes))
        assert httpx.post(f"{url}/score", content=b"x", headers={"Content-Type": "image/png"},
                          timeout=60).status_code == 400  # decoded and refused: the daemon still serves
    finally:
        daemon.terminate()
        daemon.wait(60)
    text = log_path.read_text()
    assert "out of system resource" not in text and "Too many open files" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
