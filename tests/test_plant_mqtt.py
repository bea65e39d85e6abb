"""The MQTT publisher against a real Mosquitto broker on loopback (started here from a temporary
config; the test skips only when the mosquitto binary is absent): one message per part with the
decision and score the HTTP API reports, availability online/offline retained, and a broker
that is down costs scoring nothing but counted drops."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading

import httpx
import pytest
from service_harness import FakeModel, png_bytes, serve, solid, wait_for

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig

mqtt = pytest.importorskip("paho.mqtt.client")
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if shutil.os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto; "
                                                          ".ci/run installs it)")
PREFIX = "plant/line2/cam1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def broker(tmp_path):
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def accepting() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(accepting, timeout=30)
    yield port
    proc.terminate()
    proc.wait(10)


class Subscriber:
    """A paho client collecting every message under the prefix."""

    def __init__(self, port: int):
        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-dashboard")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{PREFIX}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def on(self, topic: str) -> list[str]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == f"{PREFIX}/{topic}"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def daemon(tmp_path, port: int, **mqtt_cfg):
    cfg = EdgeadConfig(inspection={"data_dir": str(tmp_path / "data")},
                       mqtt={"enabled": True, "host": "127.0.0.1", "port": port, "topic_prefix": PREFIX,
                             "base_url": "http://cam1:8080", **mqtt_cfg})
    return create_app(cfg, model=FakeModel(name="washer"))


def test_results_and_availability_on_a_real_broker(tmp_path, broker):
    sub = Subscriber(broker)
    try:
        app = daemon(tmp_path, broker)
        with serve(app) as url, httpx.Client(base_url=url) as http:
            wait_for(lambda: sub.on("availability")[-1:] == ["online"])
            answers = [http.post("/score", content=png_bytes(solid(v)), headers={"Content-Type": "image/png"}).json()
                       for v in (250, 30)]
            wait_for(lambda: len(sub.on("result")) == 2)
            messages = [json.loads(p) for p in sub.on("result")]
            for answer, msg in zip(answers, messages):
                assert msg["decision"] == answer["decision"] and msg["id"] == answer["id"]
                assert msg["score"] == pytest.approx(answer["score"])
                assert msg["normalized_score"] == pytest.approx(answer["normalized_score"])
                assert msg["model"] == {"name": "washer", "version": "1"}
            assert [m["decision"] for m in messages] == ["reject", "ok"]
            assert [m["part"] for m in messages] == [1, 2]
            assert messages[0]["image_url"] == f"http://cam1:8080/results/{answers[0]['id']}/image"
            assert messages[1]["image_url"] is None  # good parts are not stored by default
            wait_for(lambda: len(sub.on("last")) == 2)
            metrics = http.get("/metrics").text
            assert 'edgead_output_published_total{output="mqtt"} 2.0' in metrics
            assert 'edgead_output_connected{output="mqtt"} 1.0' in metrics
        wait_for(lambda: sub.on("availability")[-1:] == ["offline"])  # a clean stop says so
    finally:
        sub.close()
    late = Subscriber(broker)  # a dashboard connecting later sees the retained state at once
    try:
        wait_for(lambda: late.on("availability") == ["offline"] and len(late.on("last")) == 1)
        assert json.loads(late.on("last")[0])["part"] == 2
    finally:
        late.close()


def test_last_will_when_the_station_vanishes(tmp_path, broker):
    sub = Subscriber(broker)
    try:
        app = daemon(tmp_path, broker, keepalive_s=5)
        sink = app.state.runtime.outputs.sinks[0]
        with serve(app):
            wait_for(lambda: sub.on("availability")[-1:] == ["online"])
            sink.client.socket().shutdown(socket.SHUT_RDWR)  # the link dies without a DISCONNECT
            wait_for(lambda: "offline" in sub.on("availability"))  # the broker publishes the will
    finally:
        sub.close()


def test_a_dead_broker_costs_counted_drops_not_scoring(tmp_path):
    app = daemon(tmp_path, free_port(), queue_size=2, retain_last=False)  # nothing listens there
    with serve(app) as url, httpx.Client(base_url=url) as http:
        for v in (250, 30, 250, 30, 250):
            assert http.post("/score", content=png_bytes(solid(v)), headers={"Content-Type": "image/png"}).status_code == 200
        metrics = http.get("/metrics").text
        assert 'edgead_output_dropped_total{output="mqtt"} 3.0' in metrics  # 2 wait for the broker
        assert 'edgead_output_connected{output="mqtt"} 0.0' in metrics
