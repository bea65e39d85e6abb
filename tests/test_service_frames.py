"""Frame limits follow the model and the memory budget, are checked on the header before a
decode, and stored frames are bounded in size."""

from __future__ import annotations

import zlib
import struct
from types import SimpleNamespace

import cv2
import httpx
import numpy as np
from service_harness import FakeModel, serve, wait_for
from test_service_runtime import config, post

from edgead.service import pipeline
from edgead.service.app import create_app
from edgead.service.frame_limits import frame_pixel_limit, header_size, model_frame_pixels


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height with almost no data: decoding it would take the memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class Tiled:
    input_size = (224, 224)

    class tiling:
        count = 9

    class preprocess_cfg:
        roi = (0.0, 0.0, 0.5, 0.5)
        roi_units = "fraction"


def test_limit_follows_model_tiles_roi_and_memory(tmp_path):
    assert model_frame_pixels(FakeModel()) == 32 * 32
    assert model_frame_pixels(Tiled()) == 224 * 224 * 9 * 4
    server = config(tmp_path).server
    assert frame_pixel_limit(FakeModel(), server) == 32 * 32 * server.frame_factor
    big = config(tmp_path, server={"frame_factor": 1e4, "frame_memory_mb": 9}).server
    assert frame_pixel_limit(Tiled(), big) == 1024 * 1024  # 9 MB / (3 bytes x 3 copies)
    capped = config(tmp_path, server={"frame_factor": 1e4, "frame_memory_mb": 1e6, "max_image_pixels": 5000}).server
    assert frame_pixel_limit(Tiled(), capped) == 5000


def test_a_float64_resize_counts_its_copy_of_the_region():
    """A model that resizes in float64 holds a float64 copy of the region, at most 16 x its input's
    pixels (whole blocks first): small frames pay 24 more bytes a pixel, large ones a fixed cap."""
    from edgead.preprocess import PreprocessConfig

    class Float64(Tiled):
        input_size = (32, 32)
        preprocess_cfg = PreprocessConfig(input_size=(32, 32))

    class Uint8(Float64):
        preprocess_cfg = PreprocessConfig(input_size=(32, 32), resize_dtype="uint8")

    def server(mb):
        return SimpleNamespace(frame_factor=1e6, frame_memory_mb=mb, max_image_pixels=10**9)

    mib = 1024 * 1024
    assert frame_pixel_limit(Uint8(), server(9)) == 9 * mib // 9
    cap = 16 * 32 * 32  # the float64 copy's pixels at most
    assert frame_pixel_limit(Float64(), server(0.25)) == int(0.25 * mib / 33)  # under the cap: 33 bytes a pixel
    assert 0.25 * mib / 33 < cap
    assert frame_pixel_limit(Float64(), server(9)) == int((9 * mib - 24 * cap) / 9)  # over it: the cap, once


def test_oversized_frame_is_413_before_decoding(tmp_path, monkeypatch):
    decoded: list[str] = []
    real = pipeline.decode_image
    monkeypatch.setattr(pipeline, "decode_image", lambda data, name: decoded.append(name) or real(data, name))
    app = create_app(config(tmp_path), model=FakeModel())
    bomb = huge_png_header(7000, 7000)
    assert header_size(bomb) == (7000, 7000)
    ok, jpeg = cv2.imencode(".jpg", np.zeros((300, 300, 3), np.uint8))  # 90 k pixels > 32 x 32 x 64
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for data, media in ((bomb, "image/png"), (jpeg.tobytes(), "image/jpeg")):
            r = post(client, data, headers={"Content-Type": media})
            assert r.status_code == 413, r.text
            assert r.json()["error"] == "image_too_large" and "MP" in r.json()["detail"]
        assert decoded == []  # refused on the header alone
        assert client.get("/results").json()["count"] == 0


def test_stored_reject_is_shrunk(tmp_path):
    cfg = config(tmp_path, server={"frame_factor": 1000}, inspection={"max_stored_side": 100})
    app = create_app(cfg, model=FakeModel())
    ok, png = cv2.imencode(".png", np.full((300, 400, 3), 250, np.uint8))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        r = post(client, png.tobytes())
        assert r.status_code == 200 and r.json()["decision"] == "reject"
        stored = client.get(f"/results/{r.json()['id']}/image")
        image = cv2.imdecode(np.frombuffer(stored.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (75, 100)


def test_heatmap_storm_is_bounded_by_render_slots(tmp_path, monkeypatch):
    """More heatmap requests at once than server.max_concurrent_renders: the extra ones are 503
    with Retry-After at once, never more renders run together than the slots, and each render
    reads the stored frame at most max_stored_side wide, even one stored full size by an older
    daemon: the memory a storm can take is slots x (max_stored_side^2 x 3) bytes."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from edgead.service import heatmaps

    slots, side = 2, 100
    cfg = config(tmp_path, server={"frame_factor": 1000, "max_concurrent_renders": slots},
                 inspection={"max_stored_side": side})
    app = create_app(cfg, model=FakeModel())
    gate, lock = threading.Event(), threading.Lock()
    in_flight, peak, largest = [0], [0], [0]
    real = heatmaps.read_image_bounded

    def watched(path, max_side, grey=False):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            gate.wait(60)
            image = real(path, max_side, grey)
            largest[0] = max(largest[0], image.nbytes)
            return image
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(heatmaps, "read_image_bounded", watched)
    ok, png = cv2.imencode(".png", np.full((300, 400, 3), 250, np.uint8))
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = post(client, png.tobytes(), params={"heatmap": "true"})
        assert r.status_code == 200 and r.json()["decision"] == "reject"
        rid = r.json()["id"]
        store = app.state.runtime.store
        frame = store.file(store.get(rid)["image_path"])
        ok, full = cv2.imencode(frame.suffix, np.full((3000, 4000, 3), 250, np.uint8))
        frame.write_bytes(full.tobytes())  # a 12 MP frame left by a daemon that stored them whole

        def fetch(_):
            return client.get(f"/results/{rid}/heatmap.png")

        with ThreadPoolExecutor(8) as pool:
            try:
                held = [pool.submit(fetch, i) for i in range(slots)]
                wait_for(lambda: in_flight[0] == slots)
                extra = list(pool.map(fetch, range(6)))  # every slot held: each answered at once
            finally:
                gate.set()
            done = [f.result() for f in held]
        assert [x.status_code for x in extra] == [503] * 6
        assert all(x.headers["Retry-After"] == "1" and x.json()["error"] == "busy" for x in extra)
        assert [x.status_code for x in done] == [200] * slots
        assert peak[0] == slots
        assert largest[0] <= side * side * 3
        heat = cv2.imdecode(np.frombuffer(done[0].content, np.uint8), cv2.IMREAD_COLOR)
        assert max(heat.shape[:2]) <= side
        assert fetch(0).status_code == 200  # the slots are free again
