"""The SQLite inspection log: rows, stored images, retention, orphan sweep, threshold overrides,
and crash safety of a writer process killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgead.outputs.inspection_log import InspectionLog, Record, Retention

REPO = Path(__file__).resolve().parents[1]


def rec(score: float = 1.0, threshold: float = 2.0, **kw) -> Record:
    return Record(ts=time.time(), origin=kw.pop("origin", "upload"), source=kw.pop("source", "x.png"), score=score,
                  normalized_score=score / threshold, threshold=threshold,
                  decision="reject" if score > threshold else "ok", model_name="m", model_version="1",
                  model_sha256="a" * 64, latency_ms={"total": 1.23456}, **kw)


def frame(value: int = 100) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)


def test_rows_roundtrip_and_listing(tmp_path):
    log = InspectionLog(tmp_path)
    ids = [log.record(rec(score=s)).id for s in (1.0, 3.0, 0.5, 4.0)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    row = log.get(ids[1])
    assert row["decision"] == "reject" and row["is_anomaly"] and row["latency_ms"] == {"total": 1.235}
    assert row["image_path"] is None
    assert [r["id"] for r in log.list(limit=10)] == ids[::-1]
    assert [r["id"] for r in log.list(decision="reject")] == [ids[3], ids[1]]
    assert [r["id"] for r in log.list(limit=2, before_id=ids[2])] == [ids[1], ids[0]]
    assert log.counts() == {"ok": 2, "reject": 2}
    assert log.get(999) is None
    log.close()
    with sqlite3.connect(tmp_path / "inspections.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1


def test_images_and_map_are_stored(tmp_path):
    log = InspectionLog(tmp_path, image_format="png")
    image = frame()
    amap = np.linspace(0, 4, 48 * 64, dtype=np.float32).reshape(48, 64)
    stored = log.record(rec(score=3.0), image, amap)
    assert stored.image_path.endswith(".png") and stored.heatmap_path.endswith(".map.png")
    back = log.load_image(stored.image_path)
    assert np.array_equal(back, image)  # PNG is lossless
    m = log.load_image(stored.heatmap_path)
    assert m.dtype == np.uint8 and m.shape == (48, 64)
    assert m[0, 0] == 0 and m[-1, -1] == 255  # 2 x threshold (= 4.0) maps to 255
    row = log.get(stored.id)
    assert row["map_vmax"] == pytest.approx(4.0) and row["image_bytes"] > 0
    assert log.file("../../etc/passwd") is None  # never outside the image store


def test_retention_by_count_and_size(tmp_path):
    log = InspectionLog(tmp_path, retention=Retention(max_results=0, max_images=3, max_image_bytes=0))
    stored = [log.record(rec(score=3.0), frame(i), None) for i in range(5)]
    assert log.stats()["images"] == 3
    assert [log.file(s.image_path) is not None for s in stored] == [False, False, True, True, True]
    assert log.get(stored[0].id)["image_path"] is None  # the row stays, only the image goes
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 3

    one = stored[-1]
    size = log.get(one.id)["image_bytes"]
    limit = Retention(max_results=0, max_images=0, max_image_bytes=int(size * 2.5))
    log2 = InspectionLog(tmp_path / "b", retention=limit)
    for i in range(6):
        log2.record(rec(score=3.0), frame(4), None)  # same frame: same size
    assert log2.stats()["image_bytes"] <= size * 2.5 and log2.stats()["images"] == 2


def test_retention_by_rows(tmp_path):
    log = InspectionLog(tmp_path, retention=Retention(max_results=4, max_images=0, max_image_bytes=0))
    stored = [log.record(rec(score=3.0), frame(i) if i % 2 else None) for i in range(7)]
    ids = [r["id"] for r in log.list(limit=100)]
    assert ids == [s.id for s in stored[-4:]][::-1]
    assert log.stats() == {"rows": 4, "images": 2, "image_bytes": log.stats()["image_bytes"]}
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 2
    reopened = InspectionLog(tmp_path)  # ids are never reused
    assert reopened.record(rec()).id == stored[-1].id + 1


def test_orphan_files_removed_at_start(tmp_path):
    log = InspectionLog(tmp_path)
    kept = log.record(rec(score=3.0), frame(), np.zeros((48, 64), np.float32))
    log.close()
    orphan = tmp_path / "images" / "000000" / "99.jpg"
    orphan.write_bytes(b"left by a process killed before its commit")
    (tmp_path / "images" / "000000" / ".100.jpg.tmp").write_bytes(b"half")
    log = InspectionLog(tmp_path)
    assert not orphan.exists() and not (tmp_path / "images" / "000000" / ".100.jpg.tmp").exists()
    assert log.file(kept.image_path) is not None and log.file(kept.heatmap_path) is not None


def test_threshold_overrides(tmp_path):
    log = InspectionLog(tmp_path)
    assert log.threshold_override("abc") is None
    log.set_threshold_override("abc", 3.5)
    log.close()
    log = InspectionLog(tmp_path)
    assert log.threshold_override("abc") == 3.5
    log.set_threshold_override("abc", None)
    assert log.threshold_override("abc") is None


def test_unwritable_image_store_keeps_the_row(tmp_path):
    log = InspectionLog(tmp_path)
    (tmp_path / "images" / "000000").write_text("a file where a folder should be")
    stored = log.record(rec(score=3.0), frame(), None)
    assert stored.image_path is None and log.get(stored.id)["decision"] == "reject"


WRITER = """
import sys, time
from edgead.outputs.inspection_log import InspectionLog, Record
import numpy as np
log = InspectionLog(sys.argv[1], synchronous=sys.argv[2])
img = np.zeros((32, 32, 3), np.uint8)
i = 0
while True:
    s = log.record(Record(ts=time.time(), origin="upload", source="k", score=float(i % 3), normalized_score=0.0,
                          threshold=1.0, decision="reject" if i % 3 else "ok"), img if i % 5 == 0 else None)
    print(s.id, flush=True)  # acknowledged only after the commit
    i += 1
"""


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_kill9_writer_keeps_every_acknowledged_row(tmp_path, synchronous):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), synchronous], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, text=True)
    acked = []
    try:
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= 300:
                break
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # ids printed before the kill landed were acknowledged too
        acked += [int(x) for x in rest.split()]
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(tmp_path / "inspections.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in db.execute("SELECT id FROM results")}
    assert set(acked) <= stored
    log = InspectionLog(tmp_path)  # reopens fine and sweeps files of the uncommitted row
    referenced = {r["image_path"] for r in log.list(limit=100000) if r["image_path"]}
    on_disk = {p.relative_to(tmp_path / "images").as_posix() for p in (tmp_path / "images").rglob("*") if p.is_file()}
    assert on_disk == referenced


BATCH_WRITER = """
import os, signal, sys, time
from edgead.outputs.inspection_log import InspectionLog, Record
log = InspectionLog(sys.argv[1], commit_interval_s=60)
def rec(name):
    return Record(ts=time.time(), origin="gpio", source=name, score=1.0, normalized_score=0.5, threshold=2.0,
                  decision="ok")
log.record(rec("a"), durable=False)
log.record(rec("b"), durable=False)
log.record(rec("answered"), durable=True)  # commits a, b and itself before its caller is answered
log.record(rec("c"), durable=False)
log.record(rec("d"), durable=False)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_batched_commits_keep_every_acknowledged_row_through_a_kill(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BATCH_WRITER, str(tmp_path)], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    log = InspectionLog(tmp_path)
    assert [r["source"] for r in log.list()][::-1] == ["a", "b", "answered"]  # c and d were never answered
    log.close()


def test_batched_rows_commit_on_the_interval_and_at_close(tmp_path):
    log = InspectionLog(tmp_path, commit_interval_s=0.2)
    log.record(rec(1.0), durable=False)
    assert log.list() == []  # waiting in the batch
    deadline = time.monotonic() + 30
    while not log.list() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(log.list()) == 1  # committed by the interval
    log.record(rec(3.0, source="last"), durable=False)
    log.close()  # a clean stop commits the batch
    reopened = InspectionLog(tmp_path)
    assert [r["source"] for r in reopened.list()] == ["last", "x.png"]
    reopened.close()
