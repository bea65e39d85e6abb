#!/usr/bin/env python3
"""Tables from bench/int8_calibration.py's JSON lines: INT8 drop per set and configuration, the
configuration chosen on half A of every set's test images (best worst-case drop, then best mean)
and its drop on half B, and how well each parity statistic tracks the real drop.

    python bench/int8_summary.py int8.jsonl [--candidates default,pct99.999,...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead_export.parity_stats import spearman  # noqa: E402

STATS = ("top_distance_error", "top_feature_error", "feature_error", "score_error", "score_noise_vs_good_spread",
         "top_patch_agreement", "auroc_drop_large", "auroc_drop_small", "spearman")


def load(path: Path) -> dict[tuple[str, str], dict]:
    rows = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows[(r["dataset"], r["config"])] = r  # the latest run of a (set, configuration) counts
    return rows


def drop(r: dict, half: str = "") -> float:
    return 100 * (r[f"auroc_fp32{half}"] - r[f"auroc_int8{half}"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jsonl", type=Path, nargs="+")
    ap.add_argument("--candidates", default=None, help="configurations to choose the default among")
    args = ap.parse_args()
    rows = {}
    for p in args.jsonl:
        rows.update(load(p))
    sets = sorted({d for d, _ in rows})
    configs = list(dict.fromkeys(c for _, c in rows))
    print("| configuration | " + " | ".join(sets) + " | worst | top-60 feature error (mean) |")
    print("|---" * (len(sets) + 3) + "|")
    for c in configs:
        cells = [f"{drop(rows[(d, c)]):+.2f}" if (d, c) in rows else "–" for d in sets]
        full = [rows[(d, c)] for d in sets if (d, c) in rows]
        worst = max(drop(r) for r in full)
        print(f"| {c} | " + " | ".join(cells) + f" | {worst:+.2f} | {np.mean([r['test_top_feature_error'] for r in full]) * 100:.1f} % |")
    print("\nFP32 AUROC: " + ", ".join(f"{d} {rows[(d, 'default')]['auroc_fp32']:.3f}" for d in sets if (d, "default") in rows))
    cands = args.candidates.split(",") if args.candidates else configs
    complete = [c for c in cands if all((d, c) in rows for d in sets)]
    if complete:
        key = lambda c: (max(drop(rows[(d, c)], "_A") for d in sets), np.mean([drop(rows[(d, c)], "_A") for d in sets]))
        best = min(complete, key=key)
        print(f"\nchosen on half A among {', '.join(complete)}: {best} (worst {key(best)[0]:+.2f} pt, mean {key(best)[1]:+.2f} pt on A)")
        print("half B drops: " + ", ".join(f"{d} {drop(rows[(d, best)], '_B'):+.2f}" for d in sets)
              + f"; worst {max(drop(rows[(d, best)], '_B') for d in sets):+.2f} pt")
    print("\n| parity statistic | Spearman with the real drop | Spearman with |drop| |")
    print("|---|---|---|")
    real = np.array([drop(r) for r in rows.values()])
    for s in STATS:
        v = np.array([r["parity"].get(s, np.nan) for r in rows.values()])
        ok = np.isfinite(v)
        print(f"| {s} | {spearman(v[ok], real[ok]):+.3f} | {spearman(v[ok], np.abs(real[ok])):+.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
