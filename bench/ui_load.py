"""What an open operator page costs inspection: the daemon's own total latency per part with no
browser, and with live views following every part (the event stream plus the live frame that
the page fetches for each part), alternating in one run on the bundled demo model.

    python bench/ui_load.py --parts 150 --viewers 2

Loopback only; bounded in parts and time."""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from service_harness import serve  # noqa: E402

import edgead  # noqa: E402
from edgead.service.app import create_app  # noqa: E402
from edgead.service.config import EdgeadConfig  # noqa: E402
from edgead.synthetic import DEFECTS, make_part  # noqa: E402


def viewer(url: str, stop: threading.Event, frames: list[int]) -> None:
    """A browser's live view: the event stream, and the frame of every part it announces."""
    with httpx.Client(base_url=url, timeout=30) as client, client.stream("GET", "/live/events") as events:
        for line in events.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: part"):
                r = client.get("/live/frame.jpg")
                frames.append(len(r.content))


def run(url: str, client: httpx.Client, parts: list[bytes]) -> np.ndarray:
    totals = []
    for data in parts:
        r = client.post("/score", content=data, headers={"Content-Type": "image/png"})
        r.raise_for_status()
        totals.append(r.json()["latency_ms"]["total"])
    return np.asarray(totals)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=int, default=150)
    p.add_argument("--viewers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    parts = []
    for i in range(args.parts):
        img, _ = make_part(rng, size=224, defect=DEFECTS[i % len(DEFECTS)] if i % 4 == 0 else None)
        parts.append(cv2.imencode(".png", img)[1].tobytes())
    demo = Path(edgead.__file__).parent / "demo_model"
    with tempfile.TemporaryDirectory() as tmp:
        config = EdgeadConfig(model={"path": str(demo), "threads": 1}, inspection={"data_dir": tmp})
        app = create_app(config)
        with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            run(url, client, parts[:20])  # warm-up
            rows = []
            for rnd in range(args.rounds):
                for n_viewers in (0, args.viewers):
                    stop, frames = threading.Event(), []
                    threads = [threading.Thread(target=viewer, args=(url, stop, frames), daemon=True)
                               for _ in range(n_viewers)]
                    for t in threads:
                        t.start()
                    totals = run(url, client, parts)
                    stop.set()
                    rows.append((rnd, n_viewers, np.percentile(totals, 50), np.percentile(totals, 99), len(frames),
                                 int(np.mean(frames)) if frames else 0))
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {len(parts)} parts per pass, demo model, "
          "1 inference thread")
    print(f"{'round':>5} {'viewers':>7} {'total p50 ms':>12} {'total p99 ms':>12} {'frames sent':>11} {'frame bytes':>11}")
    for rnd, v, p50, p99, n, size in rows:
        print(f"{rnd:>5} {v:>7} {p50:>12.2f} {p99:>12.2f} {n:>11} {size:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
