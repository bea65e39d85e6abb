"""The daemon end to end: real uvicorn on loopback, the synthetic PatchCore artifact, a folder
source of defective parts, gpiozero's MockFactory for the reject/ready pins, httpx as client."""

from __future__ import annotations

import shutil
import sqlite3

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_harness import serve, wait_for

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 256 * 1024
REJECT_PIN, READY_PIN = 17, 27
LATENCY_KEYS = {"queue", "preprocess", "backbone", "search", "inference", "log", "total"}


@pytest.fixture(scope="module")
def daemon(model_dir, synthetic_images, tmp_path_factory):
    """One running daemon for the module: yields (client, runtime, pin factory, data dir)."""
    from gpiozero.pins.mock import MockFactory

    root = tmp_path_factory.mktemp("daemon")
    frames = root / "frames"
    frames.mkdir()
    for i, path in enumerate(synthetic_images["bad"][:3]):  # every captured frame is a defective part
        shutil.copy(path, frames / f"{i:03d}.png")
    config = EdgeadConfig(
        model={"path": str(model_dir), "threads": 1},
        source={"spec": f"folder:{frames}"},
        server={"token": TOKEN, "max_body_bytes": MAX_BODY},
        gpio={"enabled": True, "reject_pin": REJECT_PIN, "reject_pulse_ms": 30, "ready_pin": READY_PIN},
        inspection={"data_dir": str(root / "data"), "save_good_every": 0},
    )
    factory = MockFactory()
    app = create_app(config, pin_factory=factory)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, app.state.runtime, factory, root / "data"


def read(path) -> bytes:
    return path.read_bytes()


def post_png(client, data: bytes, **params):
    return client.post("/score", content=data, headers={"Content-Type": "image/png", **AUTH}, params=params)


def check_result_json(body: dict, model_dir) -> None:
    assert isinstance(body["id"], int)
    assert body["timestamp"].endswith("Z")
    for key in ("score", "normalized_score", "threshold"):
        assert isinstance(body[key], float)
    assert body["normalized_score"] == pytest.approx(body["score"] / body["threshold"])
    assert body["is_anomaly"] is (body["decision"] == "reject")
    assert body["is_anomaly"] is (body["score"] > body["threshold"])
    assert LATENCY_KEYS <= set(body["latency_ms"])
    model = body["model"]
    assert model["sha256"] and model["name"] and model["version"] and model["precision"] in ("int8", "fp32")


def test_get_score_captures_and_scores(daemon, model_dir):
    client, runtime, _, _ = daemon
    r = client.get("/score", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    check_result_json(body, model_dir)
    assert body["origin"] == "capture" and "capture" in body["latency_ms"]
    assert body["decision"] == "reject"  # the folder holds defective parts only
    assert body["image_url"].endswith(f"/results/{body['id']}/image")  # rejects keep their frame


def test_post_png_good_and_bad(daemon, synthetic_images, model_dir):
    client, *_ = daemon
    good = post_png(client, read(synthetic_images["good"][0]))
    bad = post_png(client, read(synthetic_images["bad"][0]))
    assert good.status_code == 200 and bad.status_code == 200
    for r in (good, bad):
        check_result_json(r.json(), model_dir)
        assert r.json()["origin"] == "upload" and "decode" in r.json()["latency_ms"]
    assert good.json()["decision"] == "ok" and good.json()["image_url"] is None
    assert bad.json()["decision"] == "reject"
    assert bad.json()["score"] > good.json()["score"]


def test_post_multipart_and_jpeg(daemon, synthetic_images):
    client, *_ = daemon
    path = synthetic_images["good"][1]
    r = client.post("/score", files={"file": (path.name, read(path), "image/png")}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["source"] == path.name and r.json()["decision"] == "ok"
    ok, jpg = cv2.imencode(".jpg", cv2.imread(str(path)), [cv2.IMWRITE_JPEG_QUALITY, 95])
    r = client.post("/score", content=jpg.tobytes(), headers={"Content-Type": "image/jpeg", **AUTH}, params={"name": "cam7"})
    assert r.status_code == 200 and r.json()["source"] == "cam7"


def test_reject_pulses_the_reject_pin(daemon, synthetic_images):
    client, runtime, factory, _ = daemon
    pin = factory.pin(REJECT_PIN)
    wait_for(lambda: not pin.state)  # any earlier pulse has ended
    pin.clear_states()
    assert post_png(client, read(synthetic_images["good"][2])).json()["decision"] == "ok"
    r = post_png(client, read(synthetic_images["bad"][1]))
    assert r.json()["decision"] == "reject"
    wait_for(lambda: len(pin.states) >= 3)
    assert [s.state for s in pin.states] == [False, True, False]  # exactly one pulse, for the reject only
    pin.assert_states([False, True, False])
    assert factory.pin(READY_PIN).state is True  # model loaded, source ok


def test_results_in_sqlite_and_api(daemon, synthetic_images):
    client, runtime, _, data_dir = daemon
    r = post_png(client, read(synthetic_images["bad"][2]), heatmap="true")
    body = r.json()
    rid = body["id"]
    with sqlite3.connect(data_dir / "inspections.sqlite3") as db:
        row = db.execute("SELECT decision, score, origin, image_path, heatmap_path FROM results WHERE id = ?",
                         (rid,)).fetchone()
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert row[0] == "reject" and row[1] == pytest.approx(body["score"]) and row[2] == "upload"
    assert row[3] and row[4]

    listed = client.get("/results", params={"limit": 5}).json()
    assert listed["results"][0]["id"] == rid and listed["count"] <= 5
    assert [x["id"] for x in listed["results"]] == sorted((x["id"] for x in listed["results"]), reverse=True)
    rejects = client.get("/results", params={"decision": "reject", "limit": 100}).json()["results"]
    assert rejects and all(x["decision"] == "reject" for x in rejects)
    oks = client.get("/results", params={"decision": "ok", "limit": 100}).json()["results"]
    assert all(x["decision"] == "ok" for x in oks)

    one = client.get(f"/results/{rid}").json()
    assert one["score"] == pytest.approx(body["score"]) and one["decision"] == "reject"

    image = client.get(f"/results/{rid}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    frame = cv2.imdecode(np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR)
    heat = client.get(body["heatmap_url"])
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    assert heat.content[:8] == b"\x89PNG\r\n\x1a\n"
    overlay = cv2.imdecode(np.frombuffer(heat.content, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == frame.shape
    bare = client.get(body["heatmap_url"], params={"overlay": "false"})
    assert bare.status_code == 200


def test_results_errors_are_json(daemon, synthetic_images):
    client, *_ = daemon
    good_id = post_png(client, read(synthetic_images["good"][3])).json()["id"]
    for url, code in ((f"/results/{good_id}/image", 404), (f"/results/{good_id}/heatmap.png", 404),
                      ("/results/99999999", 404), ("/results?limit=0", 400), ("/results?decision=maybe", 400),
                      ("/results/abc", 400), ("/nope", 404)):
        r = client.get(url)
        assert r.status_code == code, url
        assert set(r.json()) == {"error", "detail"} and r.json()["detail"], url


def test_metrics_parse(daemon):
    client, *_ = daemon
    client.get("/score", headers=AUTH)
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    latency = families["edgead_stage_latency_seconds"]
    counts = {s.labels["stage"]: s.value for s in latency.samples if s.name.endswith("_count")}
    for stage in ("capture", "decode", "preprocess", "backbone", "search", "inference", "total"):
        assert counts[stage] >= 1, stage
    results = {(s.labels["decision"], s.labels["origin"]): s.value
               for s in families["edgead_results"].samples if s.name == "edgead_results_total"}
    assert results[("reject", "capture")] >= 1 and results[("ok", "upload")] >= 1
    assert families["edgead_queue_depth"].samples[0].value == 0
    assert families["edgead_queue_capacity"].samples[0].value == 4
    assert "edgead_source_reconnects" in families and "edgead_errors" in families
    assert families["edgead_source_up"].samples[0].value == 1
    assert families["edgead_reject_pulses"].samples[0].value >= 1


def test_health_and_model(daemon, model_dir):
    client, *_ = daemon
    client.get("/score", headers=AUTH)
    h = client.get("/health")
    assert h.status_code == 200
    body = h.json()
    assert body["ready"] and body["live"] and body["status"] == "ok" and body["model"]["loaded"]
    assert body["source"]["state"] == "ok" and body["source"]["last_frame_age_s"] is not None
    assert body["queue"] == {"depth": 0, "capacity": 4}
    assert client.get("/health/live").json() == {"live": True}
    m = client.get("/model").json()
    assert m["path"] == str(model_dir) and len(m["sha256"]) == 64 and m["input_size"] == [128, 128]
    assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 200


@pytest.mark.parametrize("headers,content,code,error", [
    ({"Content-Type": "image/png"}, b"\x89PNG this is not an image", 400, "bad_image"),
    ({"Content-Type": "image/png"}, b"", 400, "bad_image"),
    ({"Content-Type": "text/plain"}, b"hello", 415, "unsupported_media_type"),
    ({}, b"\x00\x01", 415, "unsupported_media_type"),
    ({"Content-Type": "application/json"}, b"{}", 415, "unsupported_media_type"),
    ({"Content-Type": "image/png"}, b"\0" * (MAX_BODY + 1), 413, "payload_too_large"),
])
def test_bad_bodies(daemon, headers, content, code, error):
    client, *_ = daemon
    r = client.post("/score", content=content, headers={**headers, **AUTH})
    assert r.status_code == code
    assert r.json()["error"] == error and r.json()["detail"]


def test_chunked_oversize_body_is_413(daemon):
    client, *_ = daemon

    def chunks():
        for _ in range(8):
            yield b"\0" * (MAX_BODY // 4)

    r = client.post("/score", content=chunks(), headers={"Content-Type": "image/png", **AUTH})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_multipart_without_file_is_400(daemon):
    client, *_ = daemon
    r = client.post("/score", data={"note": "no file here"}, files={"x": ("", b"", "text/plain")}, headers=AUTH)
    assert r.status_code in (400,) and r.json()["error"] in ("bad_request", "bad_image")
    r = client.post("/score", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x", **AUTH})
    assert r.status_code == 400


def test_reload_tampered_artifact_keeps_old_model(daemon, tampered_model_dir, model_dir, synthetic_images):
    client, runtime, _, _ = daemon
    runtime.holder.reload_roots.append(tampered_model_dir.parent.resolve())
    image = read(synthetic_images["bad"][0])
    before = post_png(client, image).json()
    sha = client.get("/model").json()["sha256"]

    assert client.post("/model/reload", json={"path": str(tampered_model_dir)}).status_code == 401
    r = client.post("/model/reload", json={"path": str(tampered_model_dir)}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"] == "bad_artifact"
    assert "memory.q8.npz" in r.json()["detail"]
    assert client.get("/model").json()["sha256"] == sha
    after = post_png(client, image).json()
    assert after["score"] == pytest.approx(before["score"]) and after["model"]["sha256"] == sha

    r = client.post("/model/reload", json={"path": "/etc"}, headers=AUTH)  # outside model.reload_roots
    assert r.status_code == 422 and "outside" in r.json()["detail"]
    r = client.post("/model/reload", headers=AUTH)  # the current artifact again
    assert r.status_code == 200 and r.json()["model"]["sha256"] == sha
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    outcomes = {s.labels["outcome"]: s.value for s in families["edgead_model_reloads"].samples
                if s.name.endswith("_total")}
    assert outcomes["error"] >= 2 and outcomes["ok"] >= 1


def test_threshold_put_changes_decisions(daemon, synthetic_images):
    client, runtime, _, data_dir = daemon
    image = read(synthetic_images["bad"][0])
    base = post_png(client, image).json()
    assert base["decision"] == "reject"
    assert client.put("/threshold", json={"threshold": base["score"] * 2}).status_code == 401
    r = client.put("/threshold", json={"threshold": base["score"] * 2}, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["previous"] == pytest.approx(base["threshold"]) and r.json()["source"] == "override"
    again = post_png(client, image).json()
    assert again["decision"] == "ok" and again["threshold"] == pytest.approx(base["score"] * 2)
    with sqlite3.connect(data_dir / "inspections.sqlite3") as db:  # persisted for this model
        assert db.execute("SELECT threshold FROM threshold_overrides").fetchone()[0] == pytest.approx(base["score"] * 2)
    for bad in ({"threshold": -1}, {"threshold": 0}, {"threshold": "high"}, {}):
        r = client.put("/threshold", json=bad, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", bad
    r = client.put("/threshold", json={"threshold": None}, headers=AUTH)
    assert r.status_code == 200 and r.json()["threshold"] == pytest.approx(base["threshold"])
    assert post_png(client, image).json()["decision"] == "reject"
