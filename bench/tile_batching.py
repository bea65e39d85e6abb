"""Tiles through onnxruntime as one batch vs one run per tile on a tiled artifact (one thread by default).

    python bench/tile_batching.py --model MODEL_DIR --image FRAME.png [--repeats 20] [--threads 1]

Prints the backbone p50 (ms) of both ways for each precision (interleaved runs); InspectionModel runs
one tile at a time unless batch_tiles=True, which measured slower (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgead.images import read_image  # noqa: E402
from edgead.model import load_model  # noqa: E402


def run_ms(model, batch: np.ndarray, batched: bool) -> float:
    t0 = time.perf_counter()
    if batched:
        model.backbone(batch)
    else:
        for i in range(len(batch)):
            model.backbone(batch[i : i + 1])
    return (time.perf_counter() - t0) * 1e3


def compare(model, batch: np.ndarray, repeats: int) -> tuple[float, float]:
    """(one run per tile, one batch) p50 ms, interleaved so that load drift hits both alike."""
    run_ms(model, batch, False), run_ms(model, batch, True)  # warm-up
    per_tile, batched = [], []
    for _ in range(repeats):
        per_tile.append(run_ms(model, batch, False))
        batched.append(run_ms(model, batch, True))
    return float(np.median(per_tile)), float(np.median(batched))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--image", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    frame = read_image(args.image)
    for precision in ("int8", "fp32"):
        model = load_model(args.model, precision=precision, threads=args.threads)
        batch, _ = model.inputs(frame)
        one, all_ = compare(model, batch, args.repeats)
        print(f"{precision}: {len(batch)} tiles of {model.input_size[0]}x{model.input_size[1]}: "
              f"one run per tile {one:.1f} ms, one batch {all_:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
