"""Tiles through onnxruntime as one batch vs one run per tile (one thread), on a tiled artifact.

    python bench/tile_batching.py --model MODEL_DIR --image FRAME.png [--repeats 20]

Prints the backbone p50 (ms) of both ways for each precision; InspectionModel batches by default.
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


def backbone_ms(model, batch: np.ndarray, batched: bool, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        if batched:
            model.backbone(batch)
        else:
            for i in range(len(batch)):
                model.backbone(batch[i : i + 1])
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times[1:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--image", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    frame = read_image(args.image)
    for precision in ("int8", "fp32"):
        model = load_model(args.model, precision=precision, threads=1)
        batch, _ = model.inputs(frame)
        one = backbone_ms(model, batch, False, args.repeats)
        all_ = backbone_ms(model, batch, True, args.repeats)
        print(f"{precision}: {len(batch)} tiles of {model.input_size[0]}x{model.input_size[1]}: "
              f"one run per tile {one:.1f} ms, one batch {all_:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
