"""`edgead demo`: the daemon on the bundled demo model, replaying generated frames from a folder.

No camera, no workstation, no torch: a fresh install can see the whole pipeline work.
``--write-dataset DIR`` writes a small sample set in MVTec layout instead (train/good,
test/good, test/<defect>, ground_truth/<defect>) to try `edgead export` and `edgead eval` on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edgead.errors import ConfigError
from edgead.synthetic import DEFECTS, make_part, write_dataset

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


SAMPLE_SIZE = 256  # px: large enough for the default 224 px model input without upscaling


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead demo", description="Serve the bundled demo model on generated frames "
                                "replayed from a folder: no camera, no workstation, no torch.",
                                epilog="Other options are passed on to `edgead serve`.")
    p.add_argument("--data-dir", type=Path, default=Path("var/demo"), help="frames, SQLite log and saved images go here")
    p.add_argument("--port", type=int, default=8080, help="TCP port")
    p.add_argument("--host", default="127.0.0.1", help="bind address")
    p.add_argument("--write-dataset", type=Path, default=None, metavar="DIR",
                   help="write a synthetic sample set (washers, some scratched, stained or chipped) in MVTec "
                        "layout to DIR and exit, without serving")
    return p


def write_sample_dataset(root: Path) -> Path:
    """The sample set of ``--write-dataset``: 60 good training parts, 15 good and 15 defective test parts."""
    return write_dataset(root, n_train=60, n_test_good=15, n_test_bad=15, size=SAMPLE_SIZE, seed=3)


def demo_main(argv: list[str]) -> int:
    p = build_parser()
    args, rest = p.parse_known_args(argv)
    if args.write_dataset is not None:
        if rest:
            p.error(f"--write-dataset takes no serve options: {' '.join(rest)}")
        try:
            root = write_sample_dataset(args.write_dataset)
        except OSError as exc:
            raise ConfigError(f"--write-dataset {args.write_dataset}: cannot write there "
                              f"({exc.strerror or exc}: {exc.filename})") from None
        n = sum(1 for f in root.rglob("*.png") if "ground_truth" not in f.parts)
        print(f"edgead demo: wrote {n} images to {root} (train/good, test/good, test/<defect>, ground_truth/)")
        print(f"  next: edgead export --data {root} --out models/sample     (needs edgead[export])")
        return 0
    frames = write_demo_frames(args.data_dir / "frames")
    print(f"edgead demo: model {DEMO_MODEL}, replaying {frames}")
    print(f"  try:  curl http://{args.host}:{args.port}/score")
    print(f"        curl -X POST --data-binary @{frames / '003_scratch.png'} -H 'Content-Type: image/png' http://{args.host}:{args.port}/score")
    print(f"        curl 'http://{args.host}:{args.port}/results?limit=5'   (API docs: http://{args.host}:{args.port}/docs)",
          flush=True)
    from edgead.service.main import serve_main

    return serve_main([
        "--model", str(DEMO_MODEL), "--source", f"folder:{frames}", "--data-dir", str(args.data_dir / "log"),
        "--host", args.host, "--port", str(args.port), *rest,
    ])
