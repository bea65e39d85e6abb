#!/usr/bin/env python3
"""How much of a recipe's AUROC is selection on the test set?  Split-half model selection.

    python bench/honest_selection.py --data ../shared/data/deeppcb --models m256 m288 m320 \
        --ks 5,10,20,40 [--splits 200] [--json out.json]

Every candidate is (exported model, k of the top-k mean).  Each model scores the category's whole
``test/`` folder once (INT8, the k_max largest patch distances of each image, so every k costs
nothing more); then, ``--splits`` times, the test images are split in two stratified halves:
the candidate with the best image AUROC on half A is "chosen" and its AUROC on half B reported.
The mean over splits estimates what a user who picks the recipe on their own validation defects
would see on new parts, without the optimism of choosing on the images that are reported.
Runtime only (no torch); scores are cached next to each model (``.honest_scores.npz``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead.evaluate import find_test_images  # noqa: E402
from edgead.images import read_image  # noqa: E402
from edgead.metrics_math import auroc  # noqa: E402
from edgead.model import load_model  # noqa: E402


def top_distances(model_dir: Path, paths: list[Path], k_max: int) -> np.ndarray:
    """(images, k_max) largest patch NN distances of each test image, largest first (INT8)."""
    cache = model_dir / ".honest_scores.npz"
    if cache.is_file():
        with np.load(cache) as z:
            if z["top"].shape == (len(paths), k_max) and list(z["paths"]) == [str(p) for p in paths]:
                return z["top"]
    model = load_model(model_dir, precision="int8")
    out = np.empty((len(paths), k_max), np.float64)
    for i, path in enumerate(paths):
        feats = model.features(read_image(path))[0]
        out[i] = model.scorer.top_distances(feats, k_max)[0]  # over every tile (and bank)
    np.savez(cache, top=out, paths=np.array([str(p) for p in paths]))
    return out


def split_selection(labels: np.ndarray, candidates: dict[str, np.ndarray], splits: int, seed: int) -> dict:
    """Repeated stratified half splits: choose on A, report on B."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    reported, chosen = [], {}
    for _ in range(splits):
        a = np.concatenate([rng.permutation(pos)[: len(pos) // 2], rng.permutation(neg)[: len(neg) // 2]])
        b = np.setdiff1d(np.arange(len(labels)), a)
        best = max(candidates, key=lambda c: auroc(labels[a], candidates[c][a]))
        chosen[best] = chosen.get(best, 0) + 1
        reported.append(auroc(labels[b], candidates[best][b]))
    reported = np.array(reported)
    return {"splits": splits, "mean_auroc_on_held_half": float(reported.mean()),
            "std": float(reported.std()), "p5": float(np.percentile(reported, 5)),
            "chosen": dict(sorted(chosen.items(), key=lambda kv: -kv[1]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="MVTec-style category root (test/good, test/<defect>)")
    ap.add_argument("--models", required=True, nargs="+", type=Path, help="exported artifact directories")
    ap.add_argument("--ks", default="1,5,10,20,40", help="k values of the top-k mean to choose among")
    ap.add_argument("--splits", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    ks = sorted({int(k) for k in args.ks.split(",")})
    items = find_test_images(args.data)
    paths, labels = [i.path for i in items], np.array([i.label for i in items])
    candidates = {}
    for model_dir in args.models:
        top = top_distances(model_dir, paths, max(ks))
        for k in ks:
            candidates[f"{model_dir.name} k={k}"] = top[:, :k].mean(axis=1)
    full = {c: auroc(labels, s) for c, s in candidates.items()}
    report = {"data": str(args.data), "images": len(labels), "defective": int(labels.sum()),
              "auroc_whole_test_set": full, "best_on_whole_test_set": max(full, key=full.get),
              **split_selection(labels, candidates, args.splits, args.seed)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    for c, v in full.items():
        print(f"{c:40s} {v:.4f}")
    print(f"best on the whole test set (optimistic): {report['best_on_whole_test_set']} "
          f"{full[report['best_on_whole_test_set']]:.4f}")
    print(f"chosen on one half, AUROC on the other ({args.splits} splits): "
          f"{report['mean_auroc_on_held_half']:.4f} +- {report['std']:.4f} (p5 {report['p5']:.4f}); "
          f"chosen: {report['chosen']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
