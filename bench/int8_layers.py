#!/usr/bin/env python3
"""Where INT8 loses: signal-to-quantization-noise ratio of every activation of the INT8 graph
against FP32 (onnxruntime.quantization.qdq_loss_debug), on good and on defective test images.

    python bench/int8_layers.py --cache /tmp/int8cache --dataset magnetic_tile --config default --n 8

Reads the tensors and INT8 graphs bench/int8_calibration.py cached. A tensor whose SQNR is much
lower on defective images than on good ones is one whose calibrated range (from good images)
clips or coarsens what a defect does to it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from int8_calibration import test_items  # noqa: E402


class Reader:
    def __init__(self, x: np.ndarray):
        self.x, self.i = x, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {"image": self.x[self.i - 1 : self.i]}

    def rewind(self):
        self.i = 0

    def __iter__(self):
        return iter(lambda: self.get_next(), None)


def sqnr(fp32: Path, int8: Path, x: np.ndarray) -> dict[str, float]:
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.onnx", Path(tmp) / "b.onnx"
        modify_model_output_intermediate_tensors(str(fp32), str(a))
        modify_model_output_intermediate_tensors(str(int8), str(b))
        fp = collect_activations(str(a), Reader(x))
        q = collect_activations(str(b), Reader(x))
    err = compute_activation_error(create_activation_matching(q, fp))
    return {k: float(v["qdq_err"]) for k, v in err.items() if "qdq_err" in v}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("EDGEAD_SHARED_DATA", "../shared/data")))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/int8cache"))
    ap.add_argument("--dataset", default="magnetic_tile")
    ap.add_argument("--config", default="default")
    ap.add_argument("--n", type=int, default=8, help="images of each class")
    ap.add_argument("--test-cap", type=int, default=120)
    args = ap.parse_args()
    labels = np.array([i.label for i in test_items(args.root / args.dataset, args.test_cap)])
    x = np.load(args.cache / args.dataset / "test_x.npy", mmap_mode="r")
    res = {}
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        res[c] = sqnr(args.cache / "fp32.onnx", args.cache / "int8" / f"{args.config}.onnx",
                      np.ascontiguousarray(x[idx[np.linspace(0, len(idx) - 1, args.n).astype(int)]]))
    print(f"| activation ({args.dataset}, {args.config}) | SQNR good (dB) | SQNR defective (dB) |")
    print("|---|---|---|")
    for k in res[0]:
        print(f"| {k} | {res[0][k]:.1f} | {res[1].get(k, float('nan')):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
