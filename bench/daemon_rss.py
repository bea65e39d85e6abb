#!/usr/bin/env python3
"""Memory of the real daemon while serving: start `edgead serve`, POST N images to /score,
read VmRSS / VmHWM / RssAnon / RssFile from /proc/PID/status (Linux), stop it; with the
inference time the daemon reports and each request's round trip (p50 / p99).

    python bench/daemon_rss.py --model MODEL_DIR --images DIR [--n 200] [--threads 1] [--json]

Stdlib only. The daemon runs with --source none (uploads are decoded in the daemon, as on the
line) and its own temporary data dir, so rejects are stored like in production.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead.images import list_images, resolve_train_folder  # noqa: E402

LISTENING = re.compile(r"listening on (http://\S+?);")
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon (private: heap, arenas, arrays) and RssFile (mapped library code,
    clean pages the kernel can drop and re-read) of ``pid`` in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def start_daemon(args: argparse.Namespace, data_dir: Path) -> tuple[subprocess.Popen, str, list[str]]:
    cmd = [sys.executable, "-m", "edgead.service.main", "--model", str(args.model), "--source", "none",
           "--port", "0", "--threads", str(args.threads), "--data-dir", str(data_dir), "--log-level", "info"]
    env = dict(os.environ, **{v: str(args.threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")})
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    log: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"daemon exited early:\n{''.join(log)}")
        log.append(line)
        match = LISTENING.search(line)
        if match:
            threading.Thread(target=lambda: [log.append(x) for x in proc.stderr], daemon=True).start()
            return proc, match.group(1), log
    proc.kill()
    raise SystemExit("daemon did not start listening within 120 s")


def post(url: str, path: Path, data: bytes) -> dict:
    req = urllib.request.Request(f"{url}/score", data=data, method="POST",
                                 headers={"Content-Type": CONTENT_TYPES.get(path.suffix.lower(), "image/png")})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path, help="folder of images (or MVTec category root)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    paths = list_images(resolve_train_folder(args.images))
    payloads = [(q, q.read_bytes()) for q in paths[:64]]
    with tempfile.TemporaryDirectory(prefix="edgead-rss-") as tmp:
        proc, url, _ = start_daemon(args, Path(tmp))
        try:
            idle = proc_memory(proc.pid)
            latencies, round_trips, rejects = [], [], 0
            for i in range(args.n):
                path, data = payloads[i % len(payloads)]
                t0 = time.perf_counter()
                r = post(url, path, data)
                round_trips.append((time.perf_counter() - t0) * 1e3)
                latencies.append(r["latency_ms"].get("inference", 0.0))
                rejects += bool(r["is_anomaly"])
            serving = proc_memory(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    latencies.sort()
    round_trips.sort()
    report = {"model": str(args.model), "requests": args.n, "rejects_stored": rejects, "threads": args.threads,
              "rss_idle_mib": idle["VmRSS"], "rss_serving_mib": serving["VmRSS"], "peak_rss_mib": serving["VmHWM"],
              "rss_anon_serving_mib": serving.get("RssAnon"), "rss_file_serving_mib": serving.get("RssFile"),
              "inference_ms_p50": latencies[len(latencies) // 2],
              # what a PLC's `curl` waits for: upload, decode, inference, log, JSON (localhost)
              "round_trip_ms_p50": round_trips[len(round_trips) // 2],
              "round_trip_ms_p99": round_trips[min(len(round_trips) - 1, int(0.99 * len(round_trips)))]}
    print(json.dumps(report) if args.json else "\n".join(f"{k:<21} {v}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
