#!/usr/bin/env python3
"""Does `--auto`'s good-only proxy rank candidates the way real defects do?

    python bench/auto_proxy.py --root DATA --json proxy.jsonl          # per set: scores of every candidate
    python bench/auto_proxy.py --table proxy.jsonl                     # rank correlations, selection rules

Per development set: 200 training images (evenly spaced, a subset of quality_sweep's 300), split
as the export splits them (10 % held out, seeded); 150 good + 150 defective test images.  For
every geometry (224, 320, 224 with 2x2 tiles; Lite0) the features of those images and of proxy
defects drawn on the held-out goods (2 per image of each kind: the older ``small`` blob/scratch
and the three kinds ``--auto`` now uses) come from the per-image cache
(``bench/auto_features.py``); one bank per geometry is fitted the export's way and every image
score rule (reweighted, top-k mean for several k) is applied to the same patch distances
(``edgead_export.auto_search``, the code `--auto` runs).  Recorded per candidate: its scores of
the test images, the held-out goods and each kind of proxy defect.

``--table``: per set, the Spearman rank correlation between the proxy AUROC (held-out goods vs
proxy defects) and the real test AUROC across candidates, per proxy kind and pooled (every
set's AUROCs centred on the set's mean); then `--auto`'s selection rule (keep the reference
unless the proxy gain exceeds a margin) with the margin chosen on half A of each set's test
images and the real AUROC reported on half B.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from auto_features import DEFAULT_CACHE, FeatureCache, set_images  # noqa: E402
from quality_sweep import halves  # noqa: E402

from edgead.fit.threshold import split_holdout  # noqa: E402
from edgead.images import read_image  # noqa: E402
from edgead.metrics_math import auroc  # noqa: E402
from edgead_export.auto import PI_CPU_FACTOR, price  # noqa: E402
from edgead_export.auto_search import fit_banks, frame_scores  # noqa: E402
from edgead_export.config import ExportConfig  # noqa: E402
from edgead_export.pseudo_defects import proxy_defects  # noqa: E402

GEOMETRIES = ("size=224", "size=320", "size=224 tiles=2x2")
RULES = ("score=reweighted", "topk=10", "topk=30", "topk=60", "topk=100")
KINDS = ("small", "cutpaste", "noise_blob", "scratch")
PRODUCT_KINDS = ("cutpaste", "noise_blob", "scratch")  # what --auto draws (PROXY_KINDS)
PER_IMAGE = 2
REFERENCE = "size=224 topk=60"  # the default


def spec_name(geometry: str, rule: str) -> str:
    return f"{geometry} {rule}"


def run_set(root: Path, name: str, args) -> dict:
    train, test, labels = set_images(root, name, args.max_train, args.max_test)
    fit_paths, hold = split_holdout(train, 0.1, 5, 0)
    hold_frames = [read_image(p) for p in hold]
    res = {"set": name, "fit": len(fit_paths), "hold": len(hold), "labels": labels.tolist(), "candidates": {}}
    for geometry in GEOMETRIES:
        cfg = ExportConfig(data=root / name, out=Path("/tmp/unused")).with_spec(geometry)
        fc = FeatureCache(args.cache, root, name, cfg)
        t0 = time.perf_counter()
        fit = np.concatenate(fc.of_paths(fit_paths)).astype(np.float32)
        hold_f = fc.of_paths(hold)
        test_f = fc.of_paths(test)
        bad = {}
        for kind in KINDS:
            frames = proxy_defects(hold_frames, (kind,), PER_IMAGE, cfg.preprocess, 0)
            bad[kind] = fc.of([f"proxy/{kind}/{i}" for i in range(len(frames))], lambda i, f=frames: f[i])
        t1 = time.perf_counter()
        cfgs = [cfg.with_spec(r) for r in RULES]
        banks = fit_banks(cfgs[0], fit)
        t2 = time.perf_counter()
        frames = [f.astype(np.float32) for f in test_f + hold_f + [x for k in KINDS for x in bad[k]]]
        scores = frame_scores(cfgs, banks, frames)
        t3 = time.perf_counter()
        costs, _ = price(cfgs, len(fit_paths))
        n_test, n_hold, n_bad = len(test_f), len(hold_f), len(bad[KINDS[0]])
        for rule, row, cost in zip(RULES, scores, costs):
            res["candidates"][spec_name(geometry, rule)] = {
                "test": row[:n_test].tolist(), "hold": row[n_test:n_test + n_hold].tolist(),
                "proxy": {k: row[n_test + n_hold + i * n_bad: n_test + n_hold + (i + 1) * n_bad].tolist()
                          for i, k in enumerate(KINDS)},
                "bank_rows": int(sum(len(b) for b in banks)), "pi_ms_estimate": round(cost.pi_ms(PI_CPU_FACTOR), 1)}
        print(f"  {name} {geometry}: features {t1 - t0:.0f} s, bank {t2 - t1:.0f} s, scores {t3 - t2:.0f} s; "
              f"real AUROC " + ", ".join(f"{r} {auroc(labels, s[:n_test]):.3f}" for r, s in zip(RULES, scores)),
              file=sys.stderr, flush=True)
    return res


# -- analysis ---------------------------------------------------------------------------------------
def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if np.std(ra) and np.std(rb) else float("nan")


def proxy_auroc(c: dict, kinds: tuple[str, ...]) -> float:
    bad = [x for k in kinds for x in c["proxy"][k]]
    return auroc(np.r_[np.zeros(len(c["hold"])), np.ones(len(bad))], np.r_[c["hold"], bad])


def real_auroc(res: dict, c: dict, mask: np.ndarray | None = None) -> float:
    labels, s = np.array(res["labels"]), np.array(c["test"])
    return auroc(labels, s) if mask is None else auroc(labels[mask], s[mask])


def correlations(results: list[dict], names: list[str], half: int | None = None, seed: int = 0) -> list[str]:
    """Per set and pooled Spearman between proxy and real AUROC, per proxy kind (``half``: the
    real AUROC on that half of each set's test images, 0 = A, 1 = B; None: all)."""
    kinds = {k: (k,) for k in KINDS} | {"auto (3 kinds)": PRODUCT_KINDS}
    lines = ["| proxy | " + " | ".join(r["set"] for r in results) + " | mean | pooled (centred per set) |",
             "|" + "---|" * (len(results) + 3)]
    for label, ks in kinds.items():
        rhos, px, rl = [], [], []
        for res in results:
            p = np.array([proxy_auroc(res["candidates"][n], ks) for n in names])
            mask = None if half is None else halves(np.array(res["labels"]),
                                                    np.random.default_rng(seed + zlib.crc32(res["set"].encode())))[half]
            r = np.array([real_auroc(res, res["candidates"][n], mask) for n in names])
            rhos.append(spearman(p, r))
            px += list(p - p.mean())
            rl += list(r - r.mean())
        lines.append(f"| {label} | " + " | ".join(f"{x:+.2f}" for x in rhos)
                     + f" | {np.nanmean(rhos):+.2f} | {spearman(px, rl):+.2f} |")
    return lines


def chosen(res: dict, names: list[str], kinds: tuple[str, ...], margin: float, budget: float = 150.0) -> str:
    rows = [{"spec": n, "auroc": proxy_auroc(res["candidates"][n], kinds),
             "pi_ms_estimate": res["candidates"][n]["pi_ms_estimate"]} for n in names]
    from edgead_export.auto import choose

    return choose(rows, budget, margin)[0]["spec"]


def selection(results: list[dict], names: list[str], margins: tuple[float, ...], seed: int = 0) -> list[str]:
    """Real AUROC (half A / half B) of the candidate each rule chooses, per set."""
    masks = [halves(np.array(r["labels"]), np.random.default_rng(seed + zlib.crc32(r["set"].encode()))) for r in results]
    lines = ["| rule | " + " | ".join(r["set"] for r in results) + " | mean A / B | worst A / B |",
             "|" + "---|" * (len(results) + 3)]
    rules = [("reference (default, never switch)", None, 0.0)]
    rules += [(f"old proxy (small), margin {m:g}", ("small",), m) for m in (0.002,)]
    rules += [(f"auto proxy, margin {m:g}", PRODUCT_KINDS, m) for m in margins]
    rules += [("best real AUROC on half A (oracle of A)", "oracle", 0.0)]
    for label, kinds, m in rules:
        cells, a_vals, b_vals = [], [], []
        for res, (a, b) in zip(results, masks):
            if kinds is None:
                pick = names[0]
            elif kinds == "oracle":
                pick = max(names, key=lambda n: real_auroc(res, res["candidates"][n], a))
            else:
                pick = chosen(res, names, kinds, m)
            va, vb = real_auroc(res, res["candidates"][pick], a), real_auroc(res, res["candidates"][pick], b)
            a_vals.append(va)
            b_vals.append(vb)
            cells.append(f"{va:.3f} / {vb:.3f} ({pick.replace('size=', '').replace('tiles=', 't')})")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean(a_vals):.3f} / {np.mean(b_vals):.3f} | "
                     f"{min(a_vals):.3f} / {min(b_vals):.3f} |")
    return lines


def per_candidate(results: list[dict], names: list[str], seed: int = 0) -> list[str]:
    masks = [halves(np.array(r["labels"]), np.random.default_rng(seed + zlib.crc32(r["set"].encode()))) for r in results]
    lines = ["| candidate | Pi ms (est.) | " + " | ".join(r["set"] for r in results) + " | mean A / B | worst A / B |",
             "|" + "---|" * (len(results) + 4)]
    for n in names:
        a = [real_auroc(r, r["candidates"][n], m[0]) for r, m in zip(results, masks)]
        b = [real_auroc(r, r["candidates"][n], m[1]) for r, m in zip(results, masks)]
        proxy = [proxy_auroc(r["candidates"][n], PRODUCT_KINDS) for r in results]
        ms = max(r["candidates"][n]["pi_ms_estimate"] for r in results)
        cells = [f"{x:.3f} / {y:.3f} ({p:.2f})" for x, y, p in zip(a, b, proxy)]
        lines.append(f"| {n.replace('size=', '')} | {ms:.0f} | " + " | ".join(cells)
                     + f" | {np.mean(a):.3f} / {np.mean(b):.3f} | {min(a):.3f} / {min(b):.3f} |")
    return lines


def table(results: list[dict]) -> str:
    every = list(results[0]["candidates"])
    every.remove(REFERENCE)
    every.insert(0, REFERENCE)
    product = [REFERENCE] + [n for n in every[1:] if n.split()[-1] in ("topk=10", "topk=60")]
    out = ["Real AUROC half A / half B (proxy AUROC, auto's 3 kinds), every candidate:", ""]
    out += per_candidate(results, every)
    out += ["", f"Spearman, proxy vs real AUROC, all {len(every)} candidates:", ""] + correlations(results, every)
    out += ["", f"Spearman, the {len(product)} default --auto candidates:", ""] + correlations(results, product)
    out += ["", "The same, real AUROC on half B of the test images only:", ""] + correlations(results, product, half=1)
    out += ["", "Selection among the 6 (geometry x k 10/60) candidates, real AUROC half A / half B:", ""]
    out += selection(results, product, (0.0, 0.005, 0.01, 0.02, 0.05))
    geometry_only = [n for n in product if n.endswith("topk=60")]
    out += ["", f"Selection among the {len(geometry_only)} geometries with the default rule (top-k 60), real AUROC "
            "half A / half B:", ""]
    out += ["", f"Spearman, those {len(geometry_only)}:", ""] + correlations(results, geometry_only)
    out += [""] + selection(results, geometry_only, (0.0, 0.005, 0.01, 0.02, 0.05))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path)
    p.add_argument("--sets", default="casting,magnetic_tile,elpv_poly,bsdata,deeppcb")
    p.add_argument("--max-train", type=int, default=200)
    p.add_argument("--max-test", type=int, default=300)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--json", type=Path, default=None, help="append one JSON line per set")
    p.add_argument("--table", type=Path, default=None, help="print the tables of a --json file and exit")
    args = p.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        print(table(list({r["set"]: r for r in rows}.values())))  # the last run of each set
        return 0
    torch.set_num_threads(1)
    for name in args.sets.split(","):
        res = run_set(args.root, name, args)
        if args.json:
            with args.json.open("a") as fh:
                fh.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
