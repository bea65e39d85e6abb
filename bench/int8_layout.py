"""The INT8 backbone with onnxruntime's NCHWc layout (x86 only) against without it, the way
edgead runs it so that a workstation and a Pi compute the same integers (edgead/backbone.py).

    python bench/int8_layout.py MODEL_DIR [MODEL_DIR ...] [--repeats 40] [--threads 1]

Prints per model the backbone p50 (ms) both ways (interleaved runs, one input at the model's
size) and the largest relative difference of the features between the two.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgead.backbone import Backbone  # noqa: E402
from edgead.manifest import BACKBONE_FILES  # noqa: E402
from edgead.model import load_model  # noqa: E402


def p50_ms(backbones: list[Backbone], batch: np.ndarray, repeats: int) -> list[float]:
    """Median ms of each backbone, runs interleaved so that load drift hits every one alike."""
    for b in backbones:
        b(batch)  # warm-up
    times: list[list[float]] = [[] for _ in backbones]
    for _ in range(repeats):
        for b, t in zip(backbones, times):
            t0 = time.perf_counter()
            b(batch)
            t.append((time.perf_counter() - t0) * 1e3)
    return [float(np.median(t)) for t in times]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| model | input | INT8 backbone p50, NCHWc (ms) | without NCHWc, as edgead runs it (ms) | ratio | features max rel. diff |")
    print("|---|---|---|---|---|---|")
    for model_dir in args.models:
        h, w = load_model(model_dir, "int8", args.threads).input_size
        batch = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        onnx_file = model_dir / BACKBONE_FILES["int8"]
        nchwc, portable = Backbone(onnx_file, args.threads), Backbone(onnx_file, args.threads, integer=True)
        a, b = p50_ms([nchwc, portable], batch, args.repeats)
        fa, fb = nchwc(batch), portable(batch)
        rel = float(np.abs(fa - fb).max() / max(np.abs(fa).max(), 1e-12))
        print(f"| {model_dir.name} | {h}x{w} | {a:.2f} | {b:.2f} | {b / a:.3f} | {rel:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
