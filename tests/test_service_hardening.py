"""The daemon on a shared plant network: auth that fails closed, no reject pulse or log row
without the token, no 5xx for hostile input, and slow clients that cannot hold connections."""

from __future__ import annotations

import logging
import socket
import sqlite3
import time

import httpx
import pytest
from gpiozero.pins.mock import MockFactory
from service_harness import FakeModel, png_bytes, serve, solid, wait_for

from edgead.errors import ConfigError
from edgead.outputs.gpio import GpioSettings, LineIO
from edgead.outputs.inspection_log import DB_NAME, InspectionLog
from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig
from edgead.service.main import serve_main

TOKEN = "t" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BRIGHT = png_bytes(solid(250))  # FakeModel rejects bright frames
REJECT_PIN = 17


def config(tmp_path, **sections) -> EdgeadConfig:
    sections.setdefault("inspection", {})["data_dir"] = str(tmp_path / "data")
    return EdgeadConfig(**sections)


def post(client, data=BRIGHT, **kw):
    return client.post("/score", content=data, headers={"Content-Type": "image/png", **kw.pop("headers", {})}, **kw)


def rows(tmp_path) -> int:
    with sqlite3.connect(tmp_path / "data" / DB_NAME) as db:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]


# -- auth fails closed -------------------------------------------------------------------------
@pytest.mark.parametrize("content, problem", [("", "is empty"), ("abc\n", "holds 3 characters"), (None, "cannot read")])
def test_bad_token_file_stops_the_daemon(tmp_path, content, problem, capsys):
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        config(tmp_path, server={"token_file": str(token_file)}).token
    cfg = tmp_path / "edgead.toml"
    cfg.write_text(f'[server]\ntoken_file = "{token_file}"\n[model]\npath = "{tmp_path}"\n')
    assert serve_main(["--config", str(cfg), "--check"]) == 2
    err = capsys.readouterr().err
    assert "server.token_file" in err and problem in err and "Traceback" not in err


def _line_app(tmp_path, **server):
    factory = MockFactory()
    cfg = config(tmp_path, server={"token": TOKEN, **server},
                 gpio={"enabled": True, "reject_pin": REJECT_PIN, "reject_pulse_ms": 20})
    return create_app(cfg, model=FakeModel(), pin_factory=factory), factory.pin(REJECT_PIN)


def test_no_token_no_pulse_and_no_log_row(tmp_path):
    app, pin = _line_app(tmp_path)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert post(client).status_code == 401
            assert client.get("/score").status_code == 401
        assert True not in [s.state for s in pin.states] and rows(tmp_path) == 0
        r = post(client, headers=AUTH)
        assert r.status_code == 200 and r.json()["decision"] == "reject"
        wait_for(lambda: True in [s.state for s in pin.states])
        assert rows(tmp_path) == 1


def test_open_score_answers_strangers_but_never_moves_the_line(tmp_path):
    app, pin = _line_app(tmp_path, protect_score=False)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        r = post(client, params={"heatmap": "true"})
        assert r.status_code == 200 and r.json()["decision"] == "reject" and r.json()["id"] is None
        assert r.json()["heatmap_url"] is None
        time.sleep(0.1)  # a pulse would have been scheduled at once
        assert True not in [s.state for s in pin.states] and rows(tmp_path) == 0


def test_openapi_declares_the_bearer_scheme(tmp_path):
    app, _ = _line_app(tmp_path)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["token"] == {
        "type": "http", "scheme": "bearer",
        "description": "the daemon's token (server.token or server.token_file), when one is configured"}
    assert {"token": []} in schema["paths"]["/model/reload"]["post"]["security"]
    assert {"token": []} in schema["paths"]["/score"]["post"]["security"]


# -- the reject output ---------------------------------------------------------------------------
def test_a_pulse_without_conveyor_delay_is_never_late():
    factory = MockFactory()
    line = LineIO(GpioSettings(reject_pin=REJECT_PIN, pulse_ms=10, delay_ms=0), factory)
    assert line.pulse_reject(time.monotonic() - 5.0) is True  # capture long ago, but nothing to wait for
    wait_for(lambda: len(factory.pin(REJECT_PIN).states) >= 3)
    assert line.late_pulses == 0 and line.pulses == 1
    line.close()


# -- no 5xx ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/results/9223372036854775808", "/results/9223372036854775808/image",
                                  "/results/99999999999999999999/heatmap.png", "/results?before_id=9223372036854775808",
                                  "/results/0"])
def test_out_of_range_ids_are_client_errors(tmp_path, path):
    app = create_app(config(tmp_path), model=FakeModel())
    with serve(app) as url, httpx.Client(base_url=url) as client:
        r = client.get(path)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_nul_byte_in_reload_path_is_refused(tmp_path):
    app = create_app(config(tmp_path, server={"token": TOKEN}), model=FakeModel())
    with serve(app) as url, httpx.Client(base_url=url) as client:
        r = client.post("/model/reload", json={"path": "/models/a\u0000b"}, headers=AUTH)
        assert r.status_code == 400 and "NUL" in r.json()["detail"]
        r = client.post("/model/reload", json={"path": "~no-such-user-here/model"}, headers=AUTH)
        assert r.status_code == 422 and "cannot resolve" in r.json()["detail"]


def test_absurd_threshold_is_refused_and_a_stored_one_ignored(tmp_path):
    app = create_app(config(tmp_path, server={"token": TOKEN}), model=FakeModel(threshold=128.0))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        r = client.put("/threshold", json={"threshold": 1e-300}, headers=AUTH)
        assert r.status_code == 400 and "outside" in r.json()["detail"]
        assert post(client, headers=AUTH).json()["normalized_score"] is not None
    # an override written by an older daemon must not poison every later result
    store = InspectionLog(tmp_path / "data")
    store.set_threshold_override(FakeModel().sha256, 1e-300)
    store.close()
    app2 = create_app(config(tmp_path, server={"token": TOKEN}), model=FakeModel(threshold=128.0))
    with serve(app2) as url, httpx.Client(base_url=url) as client:
        body = post(client, headers=AUTH).json()
    assert body["threshold"] == 128.0 and body["normalized_score"] == pytest.approx(250 / 128)


class ExplodingModel(FakeModel):
    def score(self, image, with_map=True, defer_map=True):
        raise RuntimeError("secret detail /etc/edgead/token")


def test_internal_errors_do_not_leak_their_text(tmp_path):
    app = create_app(config(tmp_path), model=ExplodingModel())
    with serve(app) as url, httpx.Client(base_url=url) as client:
        r = post(client)
    assert r.status_code == 500 and "secret" not in r.text and r.json()["error"] == "internal_error"


# -- slow clients --------------------------------------------------------------------------------
def _stalled_upload(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 50000\r\n\r\n0123456789")
    return s


def _closed_by_server(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def test_slow_uploads_are_bounded_and_health_still_answers(tmp_path):
    app = create_app(config(tmp_path, server={"max_concurrent_uploads": 2, "body_timeout_s": 1.0}), model=FakeModel())
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        port = int(url.rsplit(":", 1)[1])
        stalled = [_stalled_upload(port) for _ in range(2)]
        wait_for(lambda: app.user_middleware and client.get("/metrics").status_code == 200)
        refused = _stalled_upload(port)
        assert b" 503 " in _closed_by_server(refused).split(b"\r\n", 1)[0]
        assert client.get("/health/live").status_code == 200
        for s in stalled:  # the body never came: 408, connection closed
            assert b" 408 " in _closed_by_server(s).split(b"\r\n", 1)[0]
        assert post(client).status_code == 200  # the slots are free again


def test_connection_without_complete_headers_is_closed(tmp_path):
    app = create_app(config(tmp_path, server={"header_timeout_s": 0.5}), model=FakeModel())
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        for _ in range(3):  # dribbling bytes does not keep it open
            time.sleep(0.2)
            try:
                s.sendall(b"X-A: b\r\n")
            except OSError:
                break
        assert _closed_by_server(s) == b""


def test_client_dropping_mid_upload_is_not_an_error(tmp_path, caplog):
    app = create_app(config(tmp_path), model=FakeModel())
    with serve(app) as url, httpx.Client(base_url=url) as client, caplog.at_level(logging.INFO):
        port = int(url.rsplit(":", 1)[1])
        for _ in range(5):
            _stalled_upload(port).close()
        wait_for(lambda: client.get("/health/live").status_code == 200)
        time.sleep(0.2)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(("edgead", "uvicorn"))]
    assert noisy == [] and rows(tmp_path) == 0


@pytest.mark.parametrize("body", [{"threshold": True}, {"threshold": "200"}, {"threshold": 200, "persist": "yes"}])
def test_threshold_body_is_taken_as_the_schema_says_or_refused(tmp_path, body):
    app = create_app(config(tmp_path, server={"token": TOKEN}), model=FakeModel(threshold=128.0))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        r = client.put("/threshold", json=body, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        assert client.put("/threshold", json={"threshold": 200, "persist": False}, headers=AUTH).json()["threshold"] == 200
