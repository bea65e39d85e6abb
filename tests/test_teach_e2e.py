"""Teaching on the line, end to end, against a real daemon process: a model that rejects a new
good variant is taught from frames of it through the API; the variant then passes while
defects are still caught; rolling back rejects it again; a false reject marked good passes.
The daemon's process never loads torch."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from service_harness import wait_for

from edgead.synthetic import DEFECTS, make_part

REPO = Path(__file__).resolve().parents[1]
TOKEN = "teach-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def parts(seed: int, n: int, variant: str, defect: str | None = None) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [png(make_part(rng, 128, defect if defect else None, variant)[0]) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def daemon(model_dir, tmp_path):
    """A daemon serving a copy of the steel-washer model; its source shows brass washers."""
    model = tmp_path / "line" / "model"
    shutil.copytree(model_dir, model)
    frames = tmp_path / "camera"
    frames.mkdir()
    for i, data in enumerate(parts(100, 24, "brass")):
        (frames / f"{i:03d}.png").write_bytes(data)
    port = free_port()
    (tmp_path / "edgead.toml").write_text(f"""
[server]
port = {port}
token = "{TOKEN}"
[model]
path = "{model}"
[source]
spec = "folder:{frames}"
[inspection]
data_dir = "{tmp_path / 'data'}"
[teach]
enabled = true
keep_versions = 3
max_rate_hz = 60
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "edgead.service.main", "--config", str(tmp_path / "edgead.toml"),
                             "--log-level", "warning"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "daemon.log", "ab"))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            def up():
                assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
                try:
                    return client.get("/health").status_code == 200
                except httpx.TransportError:
                    return False
            wait_for(up, timeout=300)
            yield client, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def decisions(client, images: list[bytes]) -> list[str]:
    out = []
    for data in images:
        r = client.post("/score", content=data, headers={"Content-Type": "image/png", **AUTH})
        assert r.status_code == 200, r.text
        out.append(r.json()["decision"])
    return out


def run_job(client, response) -> dict:
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job = wait_for(lambda: (j := client.get(f"/model/teach/{job_id}").json())["state"]
                   in ("done", "failed", "cancelled") and j, timeout=600)
    assert job["state"] == "done", job
    return job


@pytest.mark.slow
def test_teach_a_new_variant_through_the_api_then_roll_back(daemon):
    client, proc = daemon
    brass_good = parts(7, 4, "brass")
    brass_bad = [p for d in DEFECTS for p in parts(8, 1, "brass", d)]
    steel_bad = [p for d in DEFECTS for p in parts(9, 1, "steel", d)]
    assert decisions(client, brass_good) == ["reject"] * 4          # the new variant: false rejects
    original = client.get("/model").json()

    assert client.post("/model/teach", json={"frames": 20, "rate_hz": 50}).status_code == 401
    assert client.post("/model/teach", json={"frames": 0}, headers=AUTH).status_code == 400
    bad = client.post("/model/teach", json={"folder": "/etc"}, headers=AUTH)
    assert bad.status_code == 400 and "allowed_folders" in bad.json()["detail"]
    job = run_job(client, client.post("/model/teach", json={"frames": 20, "rate_hz": 50, "mode": "add"},
                                      headers=AUTH))
    assert job["frames"] == 20 and job["parent"] == original["version"]

    model = client.get("/model").json()
    assert model["version"] == job["version"]
    assert [v["version"] for v in model["versions"]] == [original["version"], job["version"]]
    assert model["versions"][1]["current"] and model["versions"][1]["parent"] == original["version"]
    assert decisions(client, brass_good) == ["ok"] * 4              # taught: the variant passes
    assert decisions(client, brass_bad) == ["reject"] * len(DEFECTS)  # and its defects are caught
    assert decisions(client, steel_bad) == ["reject"] * len(DEFECTS)

    assert client.post("/model/rollback").status_code == 401
    r = client.post("/model/rollback", headers=AUTH)
    assert r.status_code == 200 and r.json()["version"] == original["version"]
    assert client.get("/model").json()["sha256"] == original["sha256"]
    assert decisions(client, brass_good) == ["reject"] * 4          # rolled back: rejected again
    assert client.post("/model/rollback", json={"version": "nope"}, headers=AUTH).status_code == 404

    # a false reject marked good: its frame joins the bank and the same part passes
    r = client.post("/score", content=brass_good[0], headers={"Content-Type": "image/png", **AUTH})
    rid = r.json()["id"]
    assert r.json()["decision"] == "reject"
    assert client.post(f"/results/{rid}/good").status_code == 401
    assert client.post("/results/999999/good", headers=AUTH).status_code == 404
    job = run_job(client, client.post(f"/results/{rid}/good", headers=AUTH))
    assert decisions(client, brass_good[:1]) == ["ok"]
    assert decisions(client, steel_bad) == ["reject"] * len(DEFECTS)
    lineage = [v for v in client.get("/model").json()["versions"] if v["version"] == job["version"]][0]
    assert lineage["added"] == f"results {rid} marked good" and lineage["request"] == f"api:{job['id']}"

    maps = Path(f"/proc/{proc.pid}/maps")
    if maps.exists():                                               # Linux: the daemon never loaded torch
        assert "torch" not in maps.read_text()
