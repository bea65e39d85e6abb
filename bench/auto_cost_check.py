#!/usr/bin/env python3
"""Does `--auto`'s cost estimate match the time to the decision measured here?

    python bench/auto_cost_check.py --images DATA/casting/test/good MODEL_DIR [MODEL_DIR ...]

For each artifact: the estimate `--auto` makes from its configuration before any feature is
extracted (``edgead_export.auto_cost``: backbone, search, total, one thread, this machine) beside
the measured one-thread p50 of the same stages (``InspectionModel.score``, no map, INT8, the
artifact's search), the frames decoded up front.  Run it on a quiet machine: the constants of
``auto_cost`` are fitted to what this prints there (docs/benchmarks.md, "Time of `--auto`").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead.images import list_images, read_image  # noqa: E402
from edgead.artifact import read_manifest  # noqa: E402
from edgead.model import InspectionModel  # noqa: E402
from edgead_export.auto import price  # noqa: E402
from edgead_export.config import ExportConfig  # noqa: E402


def measured(model_dir: Path, frames: list[np.ndarray], n: int, warmup: int = 5) -> dict:
    """One-thread p50 (ms) of each stage to the decision."""
    model = InspectionModel(model_dir, threads=1)
    rows: dict[str, list[float]] = {}
    for i in range(warmup + n):
        timings = model.score(frames[i % len(frames)], with_map=False).timings_ms
        if i >= warmup:
            for key, value in timings.items():
                rows.setdefault(key, []).append(value)
    return {key: float(np.percentile(v, 50)) for key, v in rows.items()} | {
        "precision": model.precision, "backend": model.scorer.backend, "bank_rows": int(model.manifest.bank_size)}


def estimated(model_dir: Path) -> dict:
    manifest = read_manifest(model_dir)
    cfg = ExportConfig.from_manifest(manifest, data=model_dir, out=model_dir, threads=1, progress=False)
    cost = price([cfg], manifest.training_images)[0][0]
    return {"backbone": cost.backbone_ms, "search": cost.search_ms, "total": cost.here_ms, "bank_rows": cost.bank_rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--images", type=Path, required=True, help="frames to score (test goods of the models' set)")
    ap.add_argument("--n", type=int, default=60, help="frames timed per model after 5 warm-up frames")
    ap.add_argument("--json", type=Path, help="append one JSON line per model")
    args = ap.parse_args(argv)
    frames = [read_image(p) for p in list_images(args.images)[: args.n]]
    print("| model | bank rows | backbone est. / measured | search est. / measured | total est. / measured | measured / est. |")
    print("|---|---|---|---|---|---|")
    for model_dir in args.models:
        est, got = estimated(model_dir), measured(model_dir, frames, args.n)
        row = {"model": str(model_dir), "estimate": est, "measured": got}
        print(f"| {model_dir.name} | {got['bank_rows']} | {est['backbone']:.1f} / {got['backbone']:.1f} | "
              f"{est['search']:.1f} / {got['search']:.1f} | {est['total']:.1f} / {got['total']:.1f} | "
              f"{got['total'] / est['total']:.2f} |", flush=True)
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
