"""Teach on the device: time and peak RSS of teaching N good frames (default 200 of 640x480)
into a copy of an artifact (default: the bundled demo model), at one thread and at all cores.

Each configuration runs in its own process (``edgead teach``, as the daemon runs it), so its
peak RSS is its own. No torch: runs on the Pi as it is.

    python bench/teach.py                       # 200 frames, 1 thread and os.cpu_count() threads
    python bench/teach.py --frames 50 --model /var/lib/edgead/model --mode add
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead.synthetic import make_part  # noqa: E402


def write_frames(folder: Path, n: int, width: int, height: int, seed: int = 0) -> None:
    """Good parts (height x height) centred on a belt of width x height."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        part = make_part(rng, height)[0]
        pad = (width - height) // 2
        frame = cv2.copyMakeBorder(part, 0, 0, pad, width - height - pad, cv2.BORDER_REPLICATE)
        cv2.imwrite(str(folder / f"{i:04d}.png"), frame)


def one(model: Path, frames: Path, threads: int, mode: str, memory_mb: float) -> dict:
    """Run edgead teach in a child and read its own peak RSS (RUSAGE_CHILDREN of a fresh parent)."""
    code = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(json.dumps({'rc': p.returncode, 'wall_s': time.perf_counter() - t, "
            "'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
            "'out': p.stdout.strip().splitlines()[-1] if p.stdout.strip() else '', 'err': p.stderr[-500:]}))")
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "edgead.cli", "teach", "--model", str(model),
           "--folder", str(frames), "--mode", mode, "--threads", str(threads), "--memory-mb", str(memory_mb),
           "--no-install", "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout)
    if res["rc"] != 0:
        raise SystemExit(f"teach failed: {res['err']}")
    res.update(json.loads(res.pop("out")))
    res.pop("err")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "edgead" / "demo_model")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", default="640x480", help="frame width x height")
    p.add_argument("--threads", default=f"1,{os.cpu_count()}", help="thread counts to run, comma separated")
    p.add_argument("--mode", choices=["new", "add"], default="new")
    p.add_argument("--memory-mb", type=float, default=256)
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args(argv)
    width, height = (int(v) for v in a.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_frames(tmp / "frames", a.frames, width, height)
        model = tmp / "line" / "model"
        shutil.copytree(a.model, model)
        print(f"teach {a.frames} frames of {width}x{height} into {a.model.name} ({a.mode}), "
              f"{os.cpu_count()} cores; each run in its own process")
        for _ in range(a.repeat):
            for threads in (int(t) for t in a.threads.split(",")):
                r = one(model, tmp / "frames", threads, a.mode, a.memory_mb)
                version = model.parent / f"{model.name}.versions" / r["version"]
                pc = json.loads((version / "manifest.json").read_text()).get("patchcore") or {}
                print(json.dumps({"threads": threads, "wall_s": round(r["wall_s"], 2),
                                  "teach_s": r["seconds"], "coreset_s": pc.get("coreset_seconds"),
                                  "patches": pc.get("training_patches"), "bank_size": r["bank_size"],
                                  "peak_rss_mb": round(r["peak_rss_mb"], 1)}), flush=True)
                shutil.rmtree(version, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
