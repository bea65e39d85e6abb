"""Daemon behaviour that needs control over the model or the source (a fake model with the
InspectionModel interface): queue bound -> 503, source failure/reopen, trigger modes, ready and
alarm outputs, token scope, timeouts, reload through an injected loader."""

from __future__ import annotations

import threading

import cv2
import httpx
import pytest
from gpiozero.pins.mock import MockFactory
from service_harness import FakeModel, fake_loader, png_bytes, serve, solid, wait_for

from edgead.capture.base import CaptureError, Frame, FrameSource
from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig

BRIGHT, DARK = png_bytes(solid(250)), png_bytes(solid(10))


def config(tmp_path, **sections) -> EdgeadConfig:
    sections.setdefault("inspection", {})["data_dir"] = str(tmp_path / "data")
    return EdgeadConfig(**sections)


def post(client, data, **kw):
    return client.post("/score", content=data, headers={"Content-Type": "image/png", **kw.pop("headers", {})}, **kw)


class FlakySource(FrameSource):
    """Opens and delivers bright frames while ``up`` is set; fails otherwise (a camera unplugged)."""

    spec = "flaky:0"

    def __init__(self):
        self.up = threading.Event()
        self.up.set()
        self.opens = 0

    def open(self):
        if not self.up.is_set():
            raise CaptureError("flaky:0: no camera")
        self.opens += 1

    def read(self):
        if not self.up.is_set():
            raise CaptureError("flaky:0: read failed")
        return Frame(solid(250), name="flaky:0#1")

    def close(self):
        pass


def test_full_queue_is_503_with_retry_after(tmp_path):
    gate = threading.Event()
    app = create_app(config(tmp_path, inference={"queue_size": 1}), model=FakeModel(gate=gate))
    rt = app.state.runtime
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        results: list[int] = []
        first = threading.Thread(target=lambda: results.append(post(client, DARK).status_code))
        first.start()
        wait_for(lambda: rt.worker.busy_for() > 0)  # the worker is stuck in the gated model
        second = threading.Thread(target=lambda: results.append(post(client, DARK).status_code))
        second.start()
        wait_for(lambda: rt.worker.depth == 1)  # the queue is at its bound
        r = post(client, DARK)
        assert r.status_code == 503 and r.json()["error"] == "busy"
        assert int(r.headers["Retry-After"]) >= 1
        gate.set()
        first.join(30), second.join(30)
        assert results == [200, 200]
        assert post(client, DARK).status_code == 200
        assert "edgead_busy_rejections_total 1.0" in client.get("/metrics").text


def test_request_timeout_is_504(tmp_path):
    gate = threading.Event()
    app = create_app(config(tmp_path, server={"request_timeout_s": 0.2}), model=FakeModel(gate=gate))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        r = post(client, DARK)
        gate.set()
        assert r.status_code == 504 and r.json()["error"] == "timeout"


def test_no_source_is_409_and_post_still_works(tmp_path):
    app = create_app(config(tmp_path), model=FakeModel())
    with serve(app) as url, httpx.Client(base_url=url) as client:
        r = client.get("/score")
        assert r.status_code == 409 and r.json()["error"] == "no_source"
        assert post(client, BRIGHT).json()["decision"] == "reject"
        assert post(client, DARK).json()["decision"] == "ok"
        health = client.get("/health").json()
        assert health["ready"] and health["source"] is None


def test_source_failure_backoff_reopen_and_outputs(tmp_path):
    factory = MockFactory()
    source = FlakySource()
    # the watch thread is off: here a capture itself notices the loss and reopens the source
    cfg = config(tmp_path, source={"spec": "none", "reopen_initial_s": 0.05, "reopen_max_s": 0.2,
                                   "probe_interval_s": 0},
                 gpio={"enabled": True, "reject_pin": 17, "ready_pin": 27, "alarm_pin": 22})
    app = create_app(cfg, model=FakeModel(), source=source, pin_factory=factory)
    ready, alarm = factory.pin(27), factory.pin(22)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/score").status_code == 200
        assert ready.state is True and alarm.state is False
        source.up.clear()  # unplugged
        r = client.get("/score")
        assert r.status_code == 503 and r.json()["error"] == "source_unavailable"
        assert int(r.headers["Retry-After"]) >= 1
        h = client.get("/health")
        assert h.status_code == 503 and h.json()["status"] == "degraded"
        assert h.json()["source"]["state"] == "failed" and "read failed" in h.json()["source"]["last_error"]
        assert ready.state is False and alarm.state is True
        source.up.set()  # plugged back: the next capture after the backoff reopens it
        wait_for(lambda: client.get("/score").status_code == 200)
        h = client.get("/health").json()
        assert h["ready"] and h["source"]["reconnects"] == 1 and h["source"]["failures"] >= 1
        assert ready.state is True and alarm.state is False
        metrics = client.get("/metrics").text
        assert 'edgead_source_reconnects_total{source="flaky:0"} 1.0' in metrics
        assert 'edgead_errors_total{kind="capture"}' in metrics


def test_continuous_mode_scores_frames(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, v in enumerate((10, 250, 20)):
        cv2.imwrite(str(frames / f"{i}.png"), solid(v))
    cfg = config(tmp_path, source={"spec": f"folder:{frames}"}, trigger={"mode": "continuous", "rate_hz": 50})
    app = create_app(cfg, model=FakeModel())
    with serve(app) as url, httpx.Client(base_url=url) as client:
        wait_for(lambda: client.get("/results", params={"limit": 100}).json()["count"] >= 6)
        rows = client.get("/results", params={"limit": 100}).json()["results"]
        assert {r["origin"] for r in rows} == {"continuous"}
        decisions = [r["decision"] for r in sorted(rows, key=lambda r: r["id"])][:6]
        assert decisions == ["ok", "reject", "ok", "ok", "reject", "ok"]  # the folder loops in order


def test_gpio_trigger_mode(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), solid(250))
    factory = MockFactory()
    cfg = config(tmp_path, source={"spec": f"folder:{frames}"}, trigger={"mode": "gpio"},
                 gpio={"enabled": True, "reject_pin": 17, "reject_pulse_ms": 20, "trigger_pin": 23,
                       "trigger_pull": "up", "alarm_pin": 22, "alarm_after_rejects": 2})
    app = create_app(cfg, model=FakeModel(), pin_factory=factory)
    trigger, reject, alarm = factory.pin(23), factory.pin(17), factory.pin(22)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/results").json()["count"] == 0
        for expected in (1, 2):
            trigger.drive_low()  # light barrier interrupted (active low with the pull-up)
            trigger.drive_high()
            wait_for(lambda: client.get("/results").json()["count"] == expected)
        rows = client.get("/results").json()["results"]
        assert [r["origin"] for r in rows] == ["gpio", "gpio"] and {r["decision"] for r in rows} == {"reject"}
        wait_for(lambda: [s.state for s in reject.states].count(True) == 2 and reject.state is False)
        assert alarm.state is True  # two rejects in a row
        post(client, DARK)
        assert alarm.state is False


def test_token_scope(tmp_path):
    token = "x" * 24
    app = create_app(config(tmp_path, server={"token": token, "protect_score": True}), model=FakeModel())
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert post(client, DARK).status_code == 401
        assert post(client, DARK, headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = post(client, DARK, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
        r = client.put("/threshold", json={"threshold": 5})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


def test_reload_with_injected_loader(tmp_path):
    models = tmp_path / "models"
    (models / "v1").mkdir(parents=True)
    (models / "v1" / "ok").touch()
    (models / "v2").mkdir()
    (models / "v2" / "ok").touch()
    (models / "broken").mkdir()
    cfg = config(tmp_path, model={"path": str(models / "v1")})
    app = create_app(cfg, model_loader=fake_loader)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/model").json()["name"] == "v1"
        r = client.post("/model/reload", json={"path": str(models / "broken")})
        assert r.status_code == 422 and "checksum mismatch" in r.json()["detail"]
        assert post(client, DARK).json()["model"]["name"] == "v1"
        r = client.post("/model/reload", json={"path": str(models / "v2")})
        assert r.status_code == 200 and r.json()["previous"]["name"] == "v1" and r.json()["model"]["name"] == "v2"
        assert post(client, DARK).json()["model"]["name"] == "v2"


def test_threshold_persists_across_restart(tmp_path):
    cfg = config(tmp_path)
    app = create_app(cfg, model=FakeModel(threshold=128))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.put("/threshold", json={"threshold": 300}).json()["threshold"] == 300
    app = create_app(cfg, model=FakeModel(threshold=128))  # same sha256: the override comes back
    with serve(app) as url, httpx.Client(base_url=url) as client:
        m = client.get("/model").json()
        assert m["threshold"] == 300 and m["threshold_source"] == "override" and m["artifact_threshold"] == 128
        assert post(client, BRIGHT).json()["decision"] == "ok"
    app = create_app(cfg, model=FakeModel(threshold=128, sha256="e" * 64))  # another model: its own threshold
    assert app.state.runtime.holder.model.threshold == 128
    app.state.runtime.stop()


@pytest.mark.parametrize("save_good_every,stored", [(0, 0), (2, 2)])
def test_good_frame_sampling(tmp_path, save_good_every, stored):
    app = create_app(config(tmp_path, inspection={"save_good_every": save_good_every}), model=FakeModel())
    with serve(app) as url, httpx.Client(base_url=url) as client:
        rows = [post(client, DARK).json() for _ in range(4)]
        assert sum(r["image_url"] is not None for r in rows) == stored
        assert client.get("/health").json()["inspection_log"]["images"] == stored
