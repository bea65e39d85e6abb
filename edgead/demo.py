"""`edgead demo`: the daemon on the bundled demo model, replaying generated frames from a folder.

No camera, no workstation, no torch: a fresh install can see the whole pipeline work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edgead.synthetic import DEFECTS, make_part

DEMO_MODEL = Path(__file__).resolve().parent / "demo_model"
DEMO_SIZE = 128


def write_demo_frames(folder: Path, n: int = 40, defect_every: int = 4, seed: int = 7) -> Path:
    """Synthetic washer frames; every ``defect_every``-th one carries a defect."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        defect = DEFECTS[(i // defect_every) % len(DEFECTS)] if i % defect_every == defect_every - 1 else None
        image, _ = make_part(rng, DEMO_SIZE, defect)
        cv2.imwrite(str(folder / f"{i:03d}_{defect or 'good'}.png"), image)
    return folder


def demo_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgead demo", description=__doc__)
    p.add_argument("--data-dir", type=Path, default=Path("var/demo"), help="frames, SQLite log and saved images go here")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    args, rest = p.parse_known_args(argv)
    frames = write_demo_frames(args.data_dir / "frames")
    print(f"edgead demo: model {DEMO_MODEL}, replaying {frames}")
    print(f"  try:  curl http://{args.host}:{args.port}/score")
    print(f"        curl -X POST --data-binary @{frames / '003_scratch.png'} -H 'Content-Type: image/png' http://{args.host}:{args.port}/score")
    print(f"        curl http://{args.host}:{args.port}/results?limit=5   (API docs: http://{args.host}:{args.port}/docs)", flush=True)
    from edgead.service.main import serve_main

    return serve_main([
        "--model", str(DEMO_MODEL), "--source", f"folder:{frames}", "--data-dir", str(args.data_dir / "log"),
        "--host", args.host, "--port", str(args.port), *rest,
    ])
