"""The source is watched on its own thread: with on-demand triggering, /health and the ready
and alarm outputs follow a camera that goes away and comes back without any capture request."""

from __future__ import annotations

import httpx
from gpiozero.pins.mock import MockFactory
from service_harness import FakeModel, serve, wait_for
from test_service_runtime import FlakySource, config

from edgead.capture.folder import FolderSource
from edgead.capture.supervisor import SourceSupervisor
from edgead.service.app import create_app


class CountingFlaky(FlakySource):
    def __init__(self):
        super().__init__()
        self.reads = 0

    def read(self):
        self.reads += 1
        return super().read()


def test_health_follows_the_camera_without_requests(tmp_path):
    factory = MockFactory()
    source = CountingFlaky()
    cfg = config(tmp_path, source={"spec": "none", "reopen_initial_s": 0.05, "reopen_max_s": 0.2,
                                   "probe_interval_s": 0.05},
                 trigger={"mode": "on_demand"},
                 gpio={"enabled": True, "reject_pin": 17, "ready_pin": 27, "alarm_pin": 22})
    app = create_app(cfg, model=FakeModel(), source=source, pin_factory=factory)
    rt = app.state.runtime
    ready, alarm = factory.pin(27), factory.pin(22)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/health").status_code == 200
        source.up.clear()  # unplugged; nobody calls /score
        wait_for(lambda: client.get("/health").status_code == 503, timeout=10)
        h = client.get("/health").json()
        assert h["status"] == "degraded" and h["source"]["state"] == "failed"
        wait_for(lambda: ready.state is False and alarm.state is True, timeout=5)
        source.up.set()  # plugged back
        wait_for(lambda: client.get("/health").status_code == 200, timeout=10)
        assert client.get("/health").json()["source"]["reconnects"] >= 1
        wait_for(lambda: ready.state is True and alarm.state is False, timeout=5)
        assert rt.inspector is not None and rt.worker.jobs_done == 0  # no frame was ever scored


def test_folder_source_renamed_away_and_back(tmp_path):
    import cv2
    import numpy as np

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    sup = SourceSupervisor(FolderSource(folder), backoff_initial=0.01, backoff_max=0.01, probe_interval=0)
    assert sup.start() and sup.check() == "ok"
    folder.rename(tmp_path / "away")
    assert sup.check() == "failed"
    (tmp_path / "away").rename(folder)
    wait_for(lambda: sup.check() == "ok", timeout=5)
    assert sup.reconnects == 1
    sup.close()
