"""Bytes written to storage per inspected part by the inspection log and image store, for a few
settings: what an SD card pays per part.

Each setting writes a stream of parts (a share of them rejects, stored with frame and anomaly
map as the daemon stores them) through edgead's InspectionLog into a fresh directory on the
disk under test, and reads the process's storage writes from /proc/self/io (write_bytes: pages
sent to the block layer, WAL appends, checkpoints and images together; the kernel counts a page
when it is dirtied, so rewrites of a still-dirty page are counted once, as the card sees them).
Prometheus metrics live in memory and cost no writes; nothing is logged per part at the default
log level.

    python bench/sd_wear.py                         # 2000 parts, 2 % rejects, 1280 x 960 frames
    python bench/sd_wear.py --parts 500 --dir /mnt/sd/edgead-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgead.images import shrink_to  # noqa: E402
from edgead.outputs.inspection_log import InspectionLog, Record, Retention  # noqa: E402
from edgead.synthetic import make_part  # noqa: E402

# name -> (save_good_every, max_stored_side, jpeg_quality, batch rows (0: commit each), description)
SETTINGS = {
    "default": (0, 1600, 90, 0, "rejects stored, every row committed"),
    "sample-good": (100, 1600, 90, 0, "plus every 100th good part (deploy/edgead.toml)"),
    "low-wear": (0, 640, 80, 50, "rejects only at 640 px, rows batched (commit_interval_s = 5 at 10 parts/s)"),
}


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


def frames(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A good and a defective part at camera resolution, and an anomaly map at model resolution."""
    rng = np.random.default_rng(0)
    good, _ = make_part(rng, 256)
    bad, _ = make_part(rng, 256, defect="scratch")
    up = [cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in (good, bad)]
    noise = rng.normal(0, 4, up[0].shape)  # sensor noise: what makes real frames cost bytes in JPEG
    up = [np.clip(f + noise, 0, 255).astype(np.uint8) for f in up]
    amap = rng.random((64, 64), dtype=np.float32) * 2.0
    return up[0], up[1], amap


def run(name: str, parts: int, reject_share: float, root: Path, good: np.ndarray, bad: np.ndarray,
        amap: np.ndarray) -> dict:
    save_good_every, side, quality, batch, what = SETTINGS[name]
    data = root / name
    log = InspectionLog(data, jpeg_quality=quality, retention=Retention(0, 0, 0),
                        commit_interval_s=3600.0 if batch else 0.0)
    every_reject = round(1 / reject_share) if reject_share > 0 else 0
    before, t0 = write_bytes(), time.perf_counter()
    stored = 0
    for i in range(1, parts + 1):
        reject = every_reject > 0 and i % every_reject == every_reject // 2  # apart from the sampled goods
        keep = reject or (save_good_every > 0 and i % save_good_every == 0)
        score = 3.0 if reject else 1.0
        rec = Record(ts=time.time(), origin="gpio", source=f"picamera2:0#{i}", score=score, normalized_score=score / 2,
                     threshold=2.0, decision="reject" if reject else "ok", model_name="washer", model_version="3",
                     model_sha256="a" * 64, latency_ms={"capture": 8.0, "inference": 60.0, "log": 1.0, "total": 70.0})
        image = shrink_to(bad if reject else good, side) if keep else None
        log.record(rec, image, amap if keep else None, durable=not batch)
        stored += keep
        if batch and i % batch == 0:
            log.flush()
    log.close()
    written = write_bytes() - before
    images = sum(p.stat().st_size for p in (data / "images").rglob("*") if p.is_file())
    return {"setting": name, "what": what, "parts": parts, "stored_frames": stored,
            "bytes_per_part": round(written / parts), "image_bytes_per_part": round(images / parts),
            "log_bytes_per_part": round(max(written - images, 0) / parts),
            "seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=2000)
    ap.add_argument("--reject-share", type=float, default=0.02)
    ap.add_argument("--size", default="1280x960", help="camera frame WxH")
    ap.add_argument("--dir", type=Path, default=None, help="directory on the disk under test (default: a temp dir)")
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    good, bad, amap = frames(width, height)
    root = Path(tempfile.mkdtemp(prefix="edgead-sd-wear-", dir=args.dir))
    try:
        results = [run(name, args.parts, args.reject_share, root, good, bad, amap) for name in args.settings]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
