"""SimpleNet's training recipe chosen on one half of each development set, reported on the other.

    nice -n 10 env OMP_NUM_THREADS=1 python bench/simplenet_recipe.py --cache /tmp/sn_feats \
        --recipe "noise_std=0.1" --recipe "noise_std=0.5" ...

The PatchCore patch features (224 px, Lite0 taps 4,10: what `--method simplenet` learns on)
of --train-cap training goods and --test-cap test images (evenly spaced in name order) are
extracted once per set (torch, FP32) and cached. Each recipe (space-separated
SimpleNetSettings fields) is trained on every set and its image score (the default: mean of
the 60 largest patch scores) is evaluated on both halves of the test split: half A is every
image at an even position of its class folder in name order, half B the odd ones. Choose on
half A (the mean over the sets; no set decides alone), report half B.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from edgead.evaluate import find_test_images  # noqa: E402
from edgead.images import list_images  # noqa: E402
from edgead.metrics_math import auroc  # noqa: E402
from edgead.scorer.patchcore_bank import topk_mean  # noqa: E402
from edgead_export.config import ExportConfig  # noqa: E402
from quality_sweep import evenly  # noqa: E402
from edgead_export.extract import extract_features  # noqa: E402
from edgead_export.methods.simplenet import SimpleNetSettings, fit_simplenet  # noqa: E402
from edgead_export.pipeline import build_graph  # noqa: E402


def halves(items) -> np.ndarray:
    """0 = half A, 1 = half B: alternate positions within each class folder, in name order."""
    half, seen = np.zeros(len(items), int), {}
    for i, item in sorted(enumerate(items), key=lambda t: str(t[1].path)):
        key = item.path.parent
        half[i] = seen.get(key, 0) % 2
        seen[key] = seen.get(key, 0) + 1
    return half


def cached_features(root: Path, cache: Path, cap: int, test_cap: int) -> dict:
    path = cache / f"{root.name}.npz"
    if path.exists():
        with np.load(path) as z:
            return dict(z)
    cfg = ExportConfig(data=root, out=cache / "unused", method="simplenet", threads=1)
    train = list_images(root / "train" / "good")
    train = evenly(train, cap)
    items = find_test_images(root)
    items = [i for label in (0, 1) for i in evenly([i for i in items if i.label == label], test_cap // 2)]
    graph, _ = build_graph(cfg, train)
    out = {"train": extract_features(graph, train, cfg.preprocess, progress=True).astype(np.float16),
           "test": extract_features(graph, [i.path for i in items], cfg.preprocess, progress=True).astype(np.float16),
           "labels": np.array([i.label for i in items]), "half": halves(items)}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def score(fit, feats: np.ndarray, k: int = 60) -> np.ndarray:
    import torch

    with torch.no_grad():
        maps = fit.head(torch.from_numpy(feats.astype(np.float32)))[:, 0].numpy()
    return np.array([topk_mean(m[None], k) for m in maps])


def parse(recipe: str) -> SimpleNetSettings:
    fields = {}
    for kv in recipe.split():
        k, v = kv.split("=")
        default = getattr(SimpleNetSettings(), k)
        fields[k] = type(default)(v) if not isinstance(default, bool) else v.lower() in ("1", "true", "yes")
    return SimpleNetSettings(**fields)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("EDGEAD_SHARED_DATA") or REPO.parent / "shared" / "data"))
    ap.add_argument("--datasets", default="magnetic_tile,elpv_poly,deeppcb,casting,bsdata")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--train-cap", type=int, default=200)
    ap.add_argument("--test-cap", type=int, default=160, help="test images per set, half good half defective, "
                                                              "evenly spaced in name order")
    ap.add_argument("--recipe", action="append", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    for recipe in args.recipe or [""]:
        settings = parse(recipe)
        row = {"recipe": recipe or "default", "sets": {}}
        for name in args.datasets.split(","):
            data = cached_features(args.root / name, args.cache, args.train_cap, args.test_cap)
            t0 = time.perf_counter()
            fit = fit_simplenet(data["train"].astype(np.float32), settings)
            s = score(fit, data["test"])
            y, h = data["labels"], data["half"]
            row["sets"][name] = {"A": round(auroc(y[h == 0], s[h == 0]), 4), "B": round(auroc(y[h == 1], s[h == 1]), 4),
                                 "fit_s": round(time.perf_counter() - t0, 1), "loss": round(fit.final_loss, 4)}
        row["mean_A"] = round(float(np.mean([v["A"] for v in row["sets"].values()])), 4)
        row["mean_B"] = round(float(np.mean([v["B"] for v in row["sets"].values()])), 4)
        emit(row, args.json)
    return 0


def emit(row: dict, path: Path | None) -> None:
    """Print the row; append it to the JSON-lines file when one is given."""
    print(json.dumps(row), flush=True)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
