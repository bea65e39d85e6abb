"""The resize's arithmetic (manifest ``preprocess.resize_dtype``): what float64 costs against uint8.

    python bench/resize_dtype.py                                   # time, three frame sizes
    python bench/resize_dtype.py --datasets magnetic_tile,casting  # and image AUROC, both ways

Time: ``preprocess`` (ROI resize to 224 x 224 + normalise) of one frame, one thread, the two
arithmetics interleaved round by round so that the host's load falls on both alike; p50 in ms and
their ratio.  AUROC: the default export of each set (``$EDGEAD_SHARED_DATA``, else ../shared/data)
fitted and scored once with each arithmetic (the same seed), in FP32 and INT8.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead.preprocess import RESIZE_DTYPES, PreprocessConfig, preprocess  # noqa: E402

SIZES = ((480, 640), (960, 1280), (1944, 2592))  # VGA, 1.2 MP, a 5 MP still


def frame(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A textured BGR frame (smooth shading plus noise): content does not change the resize's time."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    img = base[..., None] + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def time_preprocess(rounds: int) -> list[dict]:
    cv2.setNumThreads(1)
    rows = []
    for shape in SIZES:
        img = frame(shape)
        cfgs = {d: PreprocessConfig(input_size=(224, 224), resize_dtype=d) for d in RESIZE_DTYPES}
        out = np.empty((1, 3, 224, 224), np.float32)
        times: dict[str, list[float]] = {d: [] for d in RESIZE_DTYPES}
        for _ in range(rounds):
            for d, cfg in cfgs.items():
                t0 = time.perf_counter()
                preprocess(img, cfg, out)
                times[d].append((time.perf_counter() - t0) * 1e3)
        p50 = {d: float(np.median(t[1:])) for d, t in times.items()}
        rows.append({"frame": f"{shape[1]} x {shape[0]}", **{f"{d}_ms": p50[d] for d in RESIZE_DTYPES},
                     "ratio": p50["float64"] / p50["uint8"]})
    return rows


def auroc_both_ways(root: Path, datasets: list[str]) -> list[dict]:
    from edgead.evaluate import evaluate
    from edgead.model import load_model
    from edgead_export.config import ExportConfig
    from edgead_export.pipeline import export_model

    chosen = ExportConfig.preprocess

    rows = []
    for name in datasets:
        row = {"set": name}
        for dtype in ("uint8", "float64"):
            ExportConfig.preprocess = property(lambda self, d=dtype: dataclasses.replace(chosen.fget(self), resize_dtype=d))
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    out, _ = export_model(ExportConfig(data=root / name, out=Path(tmp) / "m", progress=False,
                                                       keep_fp32=True))
                    for precision in ("fp32", "int8"):
                        model = load_model(out, precision, 1)
                        assert model.preprocess_cfg.resize_dtype == dtype
                        row[f"{dtype}_{precision}"] = evaluate(model, root / name)["image_auroc"]
            finally:
                ExportConfig.preprocess = chosen
        for precision in ("fp32", "int8"):
            row[f"difference_{precision}"] = row[f"float64_{precision}"] - row[f"uint8_{precision}"]
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--datasets", default="", help="comma-separated sets for the AUROC comparison (none: time only)")
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("EDGEAD_SHARED_DATA") or REPO.parent / "shared" / "data"))
    args = ap.parse_args()
    print("| frame | uint8 (ms, p50) | float64 (ms, p50) | float64 / uint8 |\n|---|---|---|---|")
    for r in time_preprocess(args.rounds):
        print(f"| {r['frame']} | {r['uint8_ms']:.2f} | {r['float64_ms']:.2f} | {r['ratio']:.2f}x |")
    if args.datasets:
        rows = auroc_both_ways(args.root, [d for d in args.datasets.split(",") if d])
        print("| set | precision | image AUROC, uint8 | float64 | difference |\n|---|---|---|---|---|")
        for r in rows:
            for pr in ("fp32", "int8"):
                print(f"| {r['set']} | {pr.upper()} | {r[f'uint8_{pr}']:.4f} | {r[f'float64_{pr}']:.4f} | "
                      f"{r[f'difference_{pr}']:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
