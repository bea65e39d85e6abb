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

STATS = ("predicted_max_auroc_drop", "top_distance_error", "top_feature_error", "feature_error", "score_error", "score_noise_vs_good_spread",
         "top_patch_agreement", "auroc_drop_large", "auroc_drop_small", "spearman")


def load(path: Path) -> dict[tuple[str, str], dict]:
    rows = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows[(r["dataset"], r["config"])] = r  # the latest run of a (set, configuration) counts
    return rows


def refresh(rows: dict, cache: Path) -> None:
    """Recompute every row's parity statistics from the patch distances the runs saved (the
    statistics' definitions may be newer than the runs)."""
    sys.path.insert(0, str(REPO / "bench"))
    from int8_calibration import image_scores, nn_distances

    from edgead_export.parity_check import ScoredFrames, parity_statistics

    fp32 = {}
    for (ds, cfg), r in rows.items():
        if ds not in fp32:
            feats = np.load(cache / ds / "parity_f32.npy").astype(np.float32)
            fp32[ds] = (nn_distances(feats, np.load(cache / ds / "bank.npy")), np.load(cache / ds / "parity_kind.npy"))
        d32, kind = fp32[ds]
        with np.load(cache / ds / f"{cfg}.npz") as z:
            d8 = z["parity_d8"]
        r["parity"].update(parity_statistics(kind, ScoredFrames(image_scores(d32), d32),
                                             ScoredFrames(image_scores(d8), d8), 60))


def drop(r: dict, half: str = "") -> float:
    return 100 * (r[f"auroc_fp32{half}"] - r[f"auroc_int8{half}"])


def verdict(p: dict) -> str:
    from edgead_export.parity_check import INT8_MAX_PREDICTED_DROP, INT8_MAX_TOP_ERROR

    failed = [n for n, bad in (("noise", p["predicted_max_auroc_drop"] > INT8_MAX_PREDICTED_DROP),
                               ("top patches", p["top_distance_error"] > INT8_MAX_TOP_ERROR)) if bad]
    return "refused (" + ", ".join(failed) + ")" if failed else "passes"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jsonl", type=Path, nargs="+")
    ap.add_argument("--cache", type=Path, default=None, help="bench/int8_calibration.py's --cache: recompute "
                    "the parity statistics from the saved patch distances")
    ap.add_argument("--candidates", default=None, help="configurations to choose the default among")
    args = ap.parse_args()
    rows = {}
    for p in args.jsonl:
        rows.update(load(p))
    if args.cache:
        refresh(rows, args.cache)
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
        # a gain on half A is noise, not better parity: drops count from 0, ties go to the smaller
        # top-patch feature error (measured without labels, so without that noise)
        def key(c: str) -> tuple[float, float]:
            worst = max(max(drop(rows[(d, c)], "_A"), 0.0) for d in sets)
            return round(worst, 1), float(np.mean([rows[(d, c)]["test_top_feature_error"] for d in sets]))

        best = min(complete, key=key)
        print(f"\nchosen on half A among {', '.join(complete)}: {best} (worst drop {key(best)[0]:+.1f} pt on A, "
              f"top-60 feature error {key(best)[1] * 100:.1f} %)")
        print("half B drops: " + ", ".join(f"{d} {drop(rows[(d, best)], '_B'):+.2f}" for d in sets)
              + f"; worst {max(drop(rows[(d, best)], '_B') for d in sets):+.2f} pt")
    print("\n| set | configuration | real drop (pt) | predicted max drop (pt) | top-60 patch score error | verdict |")
    print("|---|---|---|---|---|---|")
    for (d, c), r in sorted(rows.items(), key=lambda kv: -drop(kv[1])):
        p = r["parity"]
        print(f"| {d} | {c} | {drop(r):+.2f} | {p['predicted_max_auroc_drop'] * 100:.2f} | "
              f"{p['top_distance_error'] * 100:.2f} % | {verdict(p)} |")
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
