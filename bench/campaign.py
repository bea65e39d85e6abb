#!/usr/bin/env python3
"""The daemon under attack: replay a hostile plant-network campaign against the real daemon
(`python -m edgead.service.main`, a token, a folder camera, a mock reject output) started with
the unit's limits (RLIMIT_NOFILE=1024, MALLOC_ARENA_MAX=2), and print one table: requests,
status codes, p50/p99 latency, peak RSS (sampled every 50 ms from /proc), rows lost, pass/fail.

    python bench/campaign.py [--model edgead/demo_model] [--reload-models A B] [--quick] [--only stalled ...] [--json]

Scenarios: 1,100 stalled uploads while /health/live is probed; a heatmap storm on a 12 MP
stored frame; big frames (a 7000x7000 PNG, a 49 MP header, the largest accepted frames); kill -9
under load four times, counting acknowledged rows lost; camera loss (the source folder removed
and restored, no request made); reloads of two artifacts under load, without and with the heap
settings (MALLOC_ARENA_MAX=2 and malloc_trim after a swap); uploads without the token.
Linux only (/proc, prlimit); stdlib, numpy and OpenCV only on the client side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOKEN = "campaign-token-0123456789abcdef"
MEMORY_HIGH_MB = 400  # systemd/edgead.service MemoryHigh=
# the daemon with malloc_trim after a reload disabled: the "before" of the reload scenario
NO_TRIM = ("import edgead.heap as h; h.release_free_memory = lambda: False; "
           "import sys; from edgead.service.main import serve_main; sys.exit(serve_main(sys.argv[1:]))")


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


class Daemon:
    """`edgead serve` in a child process under the unit's file limit; RSS sampled while it runs."""

    def __init__(self, root: Path, model: Path, camera: Path, *, heap_settings: bool = True, port: int = 0,
                 reload_root: Path | None = None):
        self.root, self.data = root, root / "data"
        port = port or free_port()
        cfg = root / "edgead.toml"
        cfg.write_text(f'[server]\ntoken = "{TOKEN}"\nport = {port}\n[model]\npath = "{model}"\n'
                       f'reload_roots = ["{reload_root or model.parent}"]\n'
                       f'[source]\nspec = "folder:{camera}"\n[inspection]\ndata_dir = "{self.data}"\n'
                       '[gpio]\nenabled = true\npin_factory = "mock"\nreject_pin = 17\n')
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OPENCV_IO_MAX_IMAGE_PIXELS="50000000",
                   PYTHONPATH=str(REPO))
        if heap_settings:
            env["MALLOC_ARENA_MAX"] = "2"
            argv = [sys.executable, "-m", "edgead.service.main"]
        else:
            argv = [sys.executable, "-c", NO_TRIM]
        self.proc = subprocess.Popen(argv + ["--config", str(cfg), "--log-level", "warning"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = self._wait_listening(port)
        self.peak_mb = 0.0
        self._sampling = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            if len(self.log) < 20000:
                self.log.append(line)

    def _wait_listening(self, port: int) -> str:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("daemon exited:\n" + "".join(self.log[-30:]))
            if http("GET", f"http://127.0.0.1:{port}/health/live", timeout=2)[0] == 200:
                return f"http://127.0.0.1:{port}"
            time.sleep(0.1)
        raise SystemExit("daemon did not start")

    def rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return 0.0

    def _sample(self) -> None:
        while self.proc.poll() is None:
            self.peak_mb = max(self.peak_mb, self.rss_mb())
            time.sleep(0.05)

    def reset_peak(self) -> None:
        self.peak_mb = self.rss_mb()

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(30)


def http(method: str, url: str, data: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> tuple[int, bytes, float]:
    """(status, body, seconds); status 0 when the connection failed."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.perf_counter() - t0
    except (OSError, urllib.error.URLError, HTTPException):  # cut off (kill -9)
        return 0, b"", time.perf_counter() - t0


DB = "inspections.sqlite3"  # edgead.outputs.inspection_log.DB_NAME
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def upload(url: str, data: bytes, auth: bool = True, media: str = "image/png", query: str = "") -> tuple:
    return http("POST", f"{url}/score{query}", data, {"Content-Type": media, **(AUTH if auth else {})})


class Tally:
    def __init__(self, name: str):
        self.name, self.codes, self.latencies = name, {}, []
        self.peak_mb, self.rows_lost, self.checks = 0.0, None, []
        self._lock = threading.Lock()

    def add(self, status: int, seconds: float) -> None:
        with self._lock:
            self.codes[status] = self.codes.get(status, 0) + 1
            self.latencies.append(seconds)

    def count(self, status: int | str) -> None:
        with self._lock:
            self.codes[status] = self.codes.get(status, 0) + 1

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, bool(ok)))

    def row(self) -> dict:
        lat = np.array(self.latencies or [0.0]) * 1e3
        server_errors = sum(n for c, n in self.codes.items() if isinstance(c, int) and 500 <= c < 600 and c != 503)
        self.check("no 5xx but 503", server_errors == 0)
        self.check(f"peak RSS < {MEMORY_HIGH_MB} MB", self.peak_mb < MEMORY_HIGH_MB)
        return {"scenario": self.name, "requests": sum(self.codes.values()),
                "codes": " ".join(f"{c}x{n}" for c, n in sorted(self.codes.items(), key=str) if n),
                "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                "peak_rss_mb": self.peak_mb, "rows_lost": self.rows_lost,
                "pass": all(ok for _, ok in self.checks), "failed": [w for w, ok in self.checks if not ok]}


def stalled_uploads(d: Daemon, n: int) -> Tally:
    t = Tally(f"{n} stalled uploads")
    port = int(d.url.rsplit(":", 1)[1])
    socks, refused = [], 0
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 50000\r\n\r\n"
                      b"0123456789")
            socks.append(s)
        except OSError:
            refused += 1
    probes = [http("GET", f"{d.url}/health/live", timeout=5) for _ in range(40) if not time.sleep(0.1)]
    for status, _, sec in probes:
        t.add(status, sec)
    for s in socks:  # what each stalled upload was told
        try:
            s.settimeout(30)
            t.count(int(s.recv(64).split(b" ")[1]))
        except (OSError, ValueError, IndexError):
            t.count("closed")
        s.close()
    t.codes["refused"] = refused
    t.name += f" (first /health/live probe {probes[0][2] * 1e3:.0f} ms)"
    t.check("/health/live all 200 within 1 s", all(s == 200 and sec < 1.0 for s, _, sec in probes))
    t.check("daemon scores after", upload(d.url, png(np.full((64, 64, 3), 20, np.uint8)))[0] == 200)
    return t


def heatmap_storm(d: Daemon, clients: int, rounds: int) -> Tally:
    t = Tally(f"heatmap storm x{clients} (12 MP frame)")
    status, body, _ = upload(d.url, png(np.full((256, 256, 3), 250, np.uint8)), query="?heatmap=true")
    rid = json.loads(body)["id"]
    with sqlite3.connect(d.data / DB) as db:
        image_rel = db.execute("SELECT image_path FROM results WHERE id = ?", (rid,)).fetchone()[0]
    frame = d.data / "images" / image_rel  # a frame as large as an older daemon stored whole
    frame.write_bytes(cv2.imencode(frame.suffix, np.random.default_rng(0).integers(
        0, 255, (3000, 4000, 3), np.uint8))[1].tobytes())
    d.reset_peak()
    with ThreadPoolExecutor(clients) as pool:
        for status, _, sec in pool.map(lambda _: http("GET", f"{d.url}/results/{rid}/heatmap.png"),
                                       range(clients * rounds)):
            t.add(status, sec)
    t.peak_mb = d.peak_mb
    t.check("some rendered", t.codes.get(200, 0) > 0)
    return t


def big_frames(d: Daemon) -> Tally:
    t = Tally("big frames")
    big = np.zeros((7000, 7000, 3), np.uint8)
    flat = png(big)
    del big
    d.reset_peak()
    before = d.rss_mb()
    for _ in range(5):
        t.add(*(lambda r: (r[0], r[2]))(upload(d.url, flat)))
    largest = None
    for side in (1600, 1200, 1000, 800):
        r = upload(d.url, jpeg(np.full((side * 3 // 4, side, 3), 200, np.uint8)))
        t.add(r[0], r[2])
        if r[0] == 200:
            largest = side
            break
    if largest:
        frame = jpeg(np.random.default_rng(1).integers(0, 255, (largest * 3 // 4, largest, 3), np.uint8))
        with ThreadPoolExecutor(4) as pool:
            for status, _, sec in pool.map(lambda _: upload(d.url, frame), range(40)):
                t.add(status, sec)
    t.peak_mb = d.peak_mb
    t.check("7000x7000 PNG refused 413", t.codes.get(413, 0) >= 5)
    t.check("RSS grew < 100 MB", d.peak_mb - before < 100)
    return t


def camera_loss(d: Daemon, camera: Path) -> Tally:
    t = Tally("camera loss (no request)")
    hidden = camera.with_name(camera.name + ".gone")

    def until(code: int, limit: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            status, _, sec = http("GET", f"{d.url}/health", timeout=5)
            t.add(status, sec)
            if status == code:
                return time.monotonic() - t0
            time.sleep(0.05)
        return float("inf")

    d.reset_peak()
    until(200, 10)
    camera.rename(hidden)
    down = until(503, 10)
    hidden.rename(camera)
    up = until(200, 15)
    t.peak_mb = d.peak_mb
    t.name += f": /health 503 after {down:.2f} s, 200 {up:.2f} s after its return"
    t.check(f"degraded in {down:.2f} s (< 2)", down < 2)
    t.check(f"recovered in {up:.2f} s (< 5)", up < 5)
    return t


def no_token(d: Daemon, n: int) -> Tally:
    t = Tally("uploads without the token")

    def pulses() -> float:
        text = http("GET", f"{d.url}/metrics")[1].decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("edgead_reject_pulses_total"))

    with sqlite3.connect(d.data / DB) as db:
        rows = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    before, bright = pulses(), png(np.full((64, 64, 3), 250, np.uint8))
    for _ in range(n):
        status, _, sec = upload(d.url, bright, auth=False)
        t.add(status, sec)
        status, _, sec = http("GET", f"{d.url}/score")
        t.add(status, sec)
    time.sleep(0.5)
    with sqlite3.connect(d.data / DB) as db:
        rows_after = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    t.peak_mb = d.peak_mb
    fired = pulses() - before
    t.name += f": {fired:.0f} reject pulses, {rows_after - rows} log rows"
    t.check("all 401", set(t.codes) == {401})
    t.check("no reject pulse", fired == 0)
    t.check("no log row", rows_after == rows)
    return t


def kill9(root: Path, model: Path, camera: Path, times: int, seconds: float) -> Tally:
    t = Tally(f"kill -9 under load x{times}")
    acked: list[int] = []
    images = [png(np.full((96, 96, 3), v, np.uint8)) for v in (30, 250)]
    port = free_port()
    for k in range(times):
        d = Daemon(root, model, camera, port=port)
        stop = threading.Event()

        def client(i: int) -> None:
            while not stop.is_set():
                status, body, sec = upload(d.url, images[i % 2], query="?heatmap=true" if i % 3 == 0 else "")
                if stop.is_set() and status == 0:
                    return
                t.add(status, sec)
                if status == 200 and json.loads(body)["id"] is not None:
                    acked.append(json.loads(body)["id"])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        time.sleep(seconds)
        d.proc.kill()
        stop.set()
        for th in threads:
            th.join()
        d.proc.wait()
        t.peak_mb = max(t.peak_mb, d.peak_mb)
    with sqlite3.connect(root / "data" / DB) as db:
        stored = {r[0] for r in db.execute("SELECT id FROM results")}
    t.rows_lost = len(set(acked) - stored)
    t.name += f", {len(set(acked))} rows acknowledged"
    t.codes = {c: n for c, n in t.codes.items() if c != 0}  # 0: connections cut by the kill itself
    t.check(f"0 of {len(acked)} acknowledged rows lost", t.rows_lost == 0)
    return t


def reloads(root: Path, models: list[Path], camera: Path, n: int, heap_settings: bool) -> Tally:
    label = "MALLOC_ARENA_MAX=2 + trim" if heap_settings else "glibc defaults, no trim"
    t = Tally(f"{n} reloads under load ({label})")
    models = [m for m in models if (m / "manifest.json").is_file()]
    copies = []  # different artifacts (or copies of one): each reload loads from disk
    for i, name in enumerate("ab"):
        copies.append(root / f"model-{name}")
        shutil.copytree(models[i % len(models)], copies[-1])
    d = Daemon(root, copies[0], camera, heap_settings=heap_settings, reload_root=root)
    stop = threading.Event()
    image = png(np.full((240, 320, 3), 90, np.uint8))

    def client() -> None:
        while not stop.is_set():
            t.add(*(lambda r: (r[0], r[2]))(upload(d.url, image)))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for th in threads:
        th.start()
    plateau = []
    for i in range(1, n + 1):
        body = json.dumps({"path": str(copies[i % 2])}).encode()
        status, _, sec = http("POST", f"{d.url}/model/reload", body, {"Content-Type": "application/json", **AUTH})
        t.add(status, sec)
        plateau.append(d.rss_mb())
    stop.set()
    for th in threads:
        th.join()
    t.peak_mb = d.peak_mb
    d.stop()
    tail = plateau[len(plateau) // 2:]
    t.name += f", RSS {plateau[0]:.0f} -> {np.median(tail):.0f} MB"
    t.check("every reload 200", t.codes.get(200, 0) >= n)
    return t


SCENARIOS = ("stalled", "heatmap", "big", "camera", "token", "kill", "reload")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "edgead" / "demo_model")
    p.add_argument("--reload-models", type=Path, nargs="+", help="artifacts to alternate on reload (default --model)")
    p.add_argument("--quick", action="store_true", help="smaller numbers (a smoke run)")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=SCENARIOS, help="run these scenarios only")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this client needs >1,100 sockets itself
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    q = args.quick
    reload_models = args.reload_models or [args.model]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgead-campaign-") as tmp:
        root = Path(tmp)
        camera = root / "camera"
        camera.mkdir()
        cv2.imwrite(str(camera / "part.png"), np.full((128, 128, 3), 60, np.uint8))
        (root / "main").mkdir()
        d = Daemon(root / "main", args.model, camera)
        only = set(args.only or SCENARIOS)
        try:
            for name, scenario in (("stalled", lambda: stalled_uploads(d, 110 if q else 1100)),
                                   ("heatmap", lambda: heatmap_storm(d, 16, 2 if q else 8)),
                                   ("big", lambda: big_frames(d)), ("camera", lambda: camera_loss(d, camera)),
                                   ("token", lambda: no_token(d, 5 if q else 20))):
                if name not in only:
                    continue
                d.reset_peak()
                t = scenario()
                t.peak_mb = max(t.peak_mb, d.peak_mb)
                rows.append(t.row())
                print(f"  {rows[-1]['scenario']}: {'pass' if rows[-1]['pass'] else 'FAIL'}", file=sys.stderr)
        finally:
            d.stop()
        for name, job in (("kill", lambda r: kill9(r, args.model, camera, 4, 3 if q else 8)),
                          ("reload-before", lambda r: reloads(r, reload_models, camera, 6 if q else 40, False)),
                          ("reload-after", lambda r: reloads(r, reload_models, camera, 6 if q else 40, True))):
            if name.split("-")[0] not in only:
                continue
            (root / name).mkdir()
            rows.append(job(root / name).row())
            print(f"  {rows[-1]['scenario']}: {'pass' if rows[-1]['pass'] else 'FAIL'}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| scenario | requests | status codes | p50 ms | p99 ms | peak RSS MB | rows lost | result |")
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        lost = "" if r["rows_lost"] is None else r["rows_lost"]
        verdict = "pass" if r["pass"] else "FAIL: " + "; ".join(r["failed"])
        print(f"| {r['scenario']} | {r['requests']} | {r['codes']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {lost} | {verdict} |")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
