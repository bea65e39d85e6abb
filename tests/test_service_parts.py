"""Units of the daemon: heatmap rendering, the metrics registry, the inference worker queue."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_harness import wait_for

from edgead.outputs.heatmap import encode, map_to_u8, overlay, render_heatmap
from edgead.outputs.metrics import ServiceMetrics
from edgead.service.worker import InferenceWorker, Job, QueueFull, WorkerStopped


def test_map_scaling_and_shrinking():
    amap = np.array([[0.0, 1.0], [2.0, 5.0]], np.float32)
    assert map_to_u8(amap, vmax=2.0).tolist() == [[0, 127], [255, 255]]
    big = np.ones((1000, 500), np.float32)
    assert map_to_u8(big, 2.0, max_side=100).shape == (100, 50)
    assert map_to_u8(np.array([[np.nan, np.inf]], np.float32), 1.0).tolist() == [[0, 255]]
    with pytest.raises(ValueError):
        map_to_u8(amap, vmax=0)


def test_overlay_and_encoding():
    image = np.full((60, 80, 3), 128, np.uint8)
    amap = np.zeros((30, 40), np.float32)
    amap[10:20, 10:20] = 10.0  # hot spot in the upper-left quadrant
    png = render_heatmap(image, amap, vmax=10.0)
    out = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == image.shape
    hot, cold = out[30, 30], out[55, 75]  # JET: red at the maximum, blue at zero
    assert hot[2] > hot[0] and cold[0] > cold[2]
    grey = overlay(np.full((60, 80), 50, np.uint8), map_to_u8(amap, 10.0))
    assert grey.shape == (60, 80, 3)
    jpg = encode(image, "jpg", 80)
    assert jpg[:2] == b"\xff\xd8"
    with pytest.raises(ValueError):
        encode(image, "gif")


def test_metrics_registry_is_per_app():
    a, b = ServiceMetrics(), ServiceMetrics()  # two apps in one process: no duplicate registration
    a.observe_result("reject", "upload", 1.5, {"backbone": 12.0, "total": 20.0, "unknown_stage": 1.0})
    a.attach_state(lambda: {"ready": True, "queue_depth": 2, "queue_capacity": 4, "threshold": 3.0,
                            "model": {"name": "m", "version": "1", "sha256": "ab", "precision": "int8"},
                            "source": {"spec": "folder:x", "ok": False, "reconnects": 3, "failures": 5,
                                       "last_frame_age_s": 1.5}})
    content, ctype = a.render()
    assert ctype.startswith("text/plain")
    fam = {f.name: f for f in text_string_to_metric_families(content.decode())}
    backbone = [s for s in fam["edgead_stage_latency_seconds"].samples
                if s.name.endswith("_sum") and s.labels["stage"] == "backbone"]
    assert backbone[0].value == pytest.approx(0.012)
    assert fam["edgead_queue_depth"].samples[0].value == 2
    assert fam["edgead_source_up"].samples[0].value == 0
    assert [s.value for s in fam["edgead_source_reconnects"].samples if s.name.endswith("_total")] == [3]
    assert fam["edgead_model_info"].samples[0].labels["precision"] == "int8"
    assert b.render()[0].count(b"edgead_results_total{") == 4  # b is untouched: zero series only


def test_worker_runs_jobs_in_order_on_one_thread():
    threads, order = set(), []

    def handler(job):
        threads.add(threading.get_ident())
        order.append(job.name)
        if job.name == "boom":
            raise RuntimeError("model failed")
        return job.name.upper()

    w = InferenceWorker(handler, maxsize=8)
    w.start()
    futures = [w.submit(Job(origin="upload", data=b"x", name=n)) for n in ("a", "b", "boom", "c")]
    assert [f.exception(10) is None for f in futures] == [True, True, False, True]
    assert [f.result() for f in (futures[0], futures[1], futures[3])] == ["A", "B", "C"]
    assert order == ["a", "b", "boom", "c"] and len(threads) == 1
    w.stop()
    with pytest.raises(WorkerStopped):
        w.submit(Job(origin="upload"))


def test_worker_returns_freed_memory_when_idle(monkeypatch):
    """After a job, with nothing queued and the interval passed, the worker trims the heap;
    not more often than TRIM_INTERVAL_S."""
    from edgead.service import worker as worker_module

    trims = []
    monkeypatch.setattr(worker_module, "release_free_memory", lambda: trims.append(time.monotonic()) or True)
    monkeypatch.setattr(worker_module, "TRIM_INTERVAL_S", 3600.0)
    w = InferenceWorker(lambda job: job.name, maxsize=4)
    w.start()
    for name in ("a", "b", "c"):
        assert w.submit(Job(origin="upload", name=name)).result(10) == name
    wait_for(lambda: len(trims) == 1)  # the first idle moment trims, then the interval holds
    assert w.jobs_done == 3 and len(trims) == 1
    w.stop()


def _rss_anon_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024


def test_release_free_memory_gives_pages_back():
    import platform

    from edgead.heap import release_free_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    blocks = [bytearray(b"x" * 65536) for _ in range(1000)]  # 64 MiB in the heap (under the mmap threshold)
    keep = blocks[::8]  # pinned: the heap cannot shrink from its top
    del blocks
    before = _rss_anon_mib()
    assert release_free_memory() is True
    assert before - _rss_anon_mib() > 20  # ~56 MiB were free between the pinned blocks
    del keep


def test_worker_bound_and_shutdown():
    gate = threading.Event()
    w = InferenceWorker(lambda job: gate.wait(10), maxsize=2)
    w.start()
    running = w.submit(Job(origin="capture"))
    wait_for(lambda: w.busy_for() > 0)
    queued = [w.submit(Job(origin="capture")) for _ in range(2)]
    with pytest.raises(QueueFull) as exc:
        w.submit(Job(origin="capture"))
    assert exc.value.retry_after >= 1 and w.depth == 2
    cancelled = queued[0].cancel()  # a client that went away: skipped, never run
    stopper = threading.Thread(target=w.stop)
    stopper.start()
    gate.set()
    stopper.join(10)
    assert running.result(5) is True
    assert cancelled and queued[0].cancelled()
    with pytest.raises(WorkerStopped):
        queued[1].result(5)
    assert not w.alive


def test_reload_hands_the_old_models_memory_back(tmp_path, monkeypatch):
    """After a swap the old model is freed and the heap trimmed at once (malloc_trim): a daemon
    reloading different artifacts must not keep a model's worth of freed pages each time."""
    import gc
    import weakref

    from service_harness import FakeModel, fake_loader

    from edgead.service import model_holder

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ok").write_text("")
    trims: list[bool] = []
    holder = model_holder.ModelHolder(FakeModel(tmp_path / "a"), fake_loader, precision=None, threads=1,
                                      search="auto", log_store=None)
    old = weakref.ref(holder.model)
    gc.collect()
    monkeypatch.setattr(model_holder, "release_free_memory", lambda: trims.append(old() is None) or True)
    holder.reload(tmp_path / "b")
    assert trims == [True]  # trimmed once, after the old model was gone
