#!/usr/bin/env python3
"""Does `--auto`'s good-only proxy rank candidates the way real defects do?

    python bench/auto_proxy.py --root DATA --json proxy.jsonl          # per set: scores of every candidate
    python bench/auto_proxy.py --root DATA --geometries "backbone=efficientnet-lite1 taps=14,19,s8" --json proxy.jsonl
    python bench/auto_proxy.py --table proxy.jsonl                     # rank correlations, selection rules

Per development set: 200 training images (evenly spaced, a subset of quality_sweep's 300), split
as the export splits them (10 % held out, seeded); 150 good + 150 defective test images.  For
every geometry (``--geometries``: the feature part of a candidate spec, e.g. size, tiles,
backbone, taps; default 224, 320 and 224 with 2x2 tiles on Lite0) the features of those images
and of proxy defects drawn on the held-out goods (2 per image of each ``--kinds``: the older
``small`` blob/scratch and the three kinds ``--auto`` draws) come from the per-image cache
(``bench/auto_features.py``, one folder per geometry); one bank per geometry is fitted the
export's way and every image score rule (``--rules``: reweighted, top-k mean for several k) is
applied to the same patch distances (``edgead_export.auto_search``, the code `--auto` runs).
Recorded per candidate (geometry + rule): its scores of the test images, the held-out goods and
each kind of proxy defect.  Runs of the same set with other geometries append lines that
``--table`` merges.

``--table``: every candidate's real AUROC on half A / half B of each set's test images; the
Spearman rank correlation between the proxy AUROC (held-out goods vs proxy defects) and the
real AUROC across candidates, per set and pooled (every set's AUROCs centred on the set's
mean); the default chosen on half A by a declared rule (within 30 ms on the Pi, at most 0.01
lost on any set against ``--reference``, best worst case, then best mean); `--auto`'s
candidate list (subsets of ``--pool``) and margin chosen on half A, reported on half B.
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
RULES = ("score=reweighted", "topk=10", "topk=30", "topk=40", "topk=60", "topk=100")
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
    for geometry in args.geometries:
        cfg = ExportConfig(data=root / name, out=Path("/tmp/unused")).with_spec(geometry)
        fc = FeatureCache(args.cache, root, name, cfg)
        t0 = time.perf_counter()
        fit = np.concatenate(fc.of_paths(fit_paths)).astype(np.float32)
        hold_f = fc.of_paths(hold)
        test_f = fc.of_paths(test)
        bad = {}
        for kind in args.kinds:
            frames = proxy_defects(hold_frames, (kind,), PER_IMAGE, cfg.preprocess, 0)
            bad[kind] = fc.of([f"proxy/{kind}/{i}" for i in range(len(frames))], lambda i, f=frames: f[i])
        t1 = time.perf_counter()
        cfgs = [cfg.with_spec(r) for r in args.rules]
        banks = fit_banks(cfgs[0], fit)
        t2 = time.perf_counter()
        frames = [f.astype(np.float32) for f in test_f + hold_f + [x for k in args.kinds for x in bad[k]]]
        scores = frame_scores(cfgs, banks, frames)
        t3 = time.perf_counter()
        costs, _ = price(cfgs, len(fit_paths))
        n_test, n_hold, n_bad = len(test_f), len(hold_f), len(bad[args.kinds[0]])
        for rule, row, cost in zip(args.rules, scores, costs):
            res["candidates"][spec_name(geometry, rule)] = {
                "test": row[:n_test].tolist(), "hold": row[n_test:n_test + n_hold].tolist(),
                "proxy": {k: row[n_test + n_hold + i * n_bad: n_test + n_hold + (i + 1) * n_bad].tolist()
                          for i, k in enumerate(args.kinds)},
                "bank_rows": int(sum(len(b) for b in banks)), "pi_ms_estimate": round(cost.pi_ms(PI_CPU_FACTOR), 1)}
        print(f"  {name} {geometry}: features {t1 - t0:.0f} s, bank {t2 - t1:.0f} s, scores {t3 - t2:.0f} s; "
              f"real AUROC " + ", ".join(f"{r} {auroc(labels, s[:n_test]):.3f}" for r, s in zip(args.rules, scores)),
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
    present = set.intersection(*(set(c["proxy"]) for r in results for c in (r["candidates"][n] for n in names)))
    kinds = {k: (k,) for k in KINDS if k in present} | {"auto (3 kinds)": PRODUCT_KINDS}
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


def load(path: Path) -> list[dict]:
    """One result per set: the candidates of every run of that set merged (a later run's
    candidate replaces an earlier one of the same name; runs must share the test images)."""
    merged: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r["set"] in merged and merged[r["set"]]["labels"] == r["labels"]:
            merged[r["set"]]["candidates"].update(r["candidates"])
        else:
            merged[r["set"]] = r
    return list(merged.values())


def masks_of(results: list[dict], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    return [halves(np.array(r["labels"]), np.random.default_rng(seed + zlib.crc32(r["set"].encode()))) for r in results]


def short(name: str) -> str:
    return (name.replace("backbone=efficientnet-", "").replace("size=", "").replace("tiles=", "t")
            .replace("score=", "").replace("topk=", "k"))


def default_choice(results: list[dict], names: list[str], reference: str, budget: float = 30.0,
                   max_loss: float = 0.01, tie: float = 0.005) -> tuple[str, list[str]]:
    """The declared rule for the default, on half A: among candidates within ``budget`` ms (Pi
    estimate) that lose at most ``max_loss`` against the reference on every set, the best worst
    case; candidates within ``tie`` of it are tied and the best mean decides."""
    masks = masks_of(results)
    a = {n: [real_auroc(r, r["candidates"][n], m[0]) for r, m in zip(results, masks)] for n in names}
    b = {n: [real_auroc(r, r["candidates"][n], m[1]) for r, m in zip(results, masks)] for n in names}
    ms = {n: max(r["candidates"][n]["pi_ms_estimate"] for r in results) for n in names}
    lines = ["| candidate | Pi ms (est.) | eligible | " + " | ".join(r["set"] for r in results)
             + " | mean A / B | worst A / B |", "|" + "---|" * (len(results) + 5)]
    eligible = []
    for n in names:
        loss = max(x - y for x, y in zip(a[reference], a[n]))
        ok = ms[n] <= budget and loss <= max_loss
        why = "yes" if ok else ("over budget" if ms[n] > budget else f"loses {loss:.3f}")
        if ok:
            eligible.append(n)
        lines.append(f"| {short(n)} | {ms[n]:.0f} | {why} | " + " | ".join(f"{x:.3f} / {y:.3f}" for x, y in zip(a[n], b[n]))
                     + f" | {np.mean(a[n]):.3f} / {np.mean(b[n]):.3f} | {min(a[n]):.3f} / {min(b[n]):.3f} |")
    best_worst = max(min(a[n]) for n in eligible)
    pick = max((n for n in eligible if min(a[n]) >= best_worst - tie), key=lambda n: np.mean(a[n]))
    lines += ["", f"Chosen on half A: **{short(pick)}** (half B mean {np.mean(b[pick]):.3f}, worst {min(b[pick]):.3f}; "
              f"reference {short(reference)}: {np.mean(b[reference]):.3f}, worst {min(b[reference]):.3f})"]
    return pick, lines


def auto_choice(results: list[dict], pool: list[str], reference: str, margins: tuple[float, ...],
                budget: float = 150.0) -> tuple[tuple[list[str], float], list[str]]:
    """Every subset of ``pool`` after ``reference`` x every margin: the real AUROC (half A / B)
    of the candidate the proxy chooses per set; the rule with the best half-A mean (ties within
    0.002 to the better worst case, then the shorter list)."""
    from itertools import combinations

    masks = masks_of(results)
    rules = [([reference] + list(sub), m) for k in range(len(pool) + 1) for sub in combinations(pool, k)
             for m in (margins if k else (0.0,))]
    rows = []
    for names, m in rules:
        picks = [chosen(res, names, PRODUCT_KINDS, m, budget) for res in results]
        a = [real_auroc(r, r["candidates"][p], mk[0]) for r, p, mk in zip(results, picks, masks)]
        b = [real_auroc(r, r["candidates"][p], mk[1]) for r, p, mk in zip(results, picks, masks)]
        rows.append((names, m, picks, a, b))
    top = max(np.mean(r[3]) for r in rows)
    best = max((r for r in rows if np.mean(r[3]) >= top - 0.002), key=lambda r: (min(r[3]), -len(r[0])))
    lines = ["| list (after the reference) | margin | " + " | ".join(r["set"] for r in results)
             + " | mean A / B | worst A / B |", "|" + "---|" * (len(results) + 4)]
    ranked = sorted(rows, key=lambda r: -np.mean(r[3]))
    shown = [rows[0]] + [r for r in ranked[:12] if r is not rows[0]]
    if best not in shown:
        shown.append(best)
    for names, m, picks, a, b in shown:
        mark = "**" if (names, m) == (best[0], best[1]) else ""
        cells = [f"{x:.3f} / {y:.3f} ({short(p)})" for x, y, p in zip(a, b, picks)]
        label = ", ".join(short(n) for n in names[1:]) or "(reference only)"
        lines.append(f"| {mark}{label}{mark} | {m:g} | " + " | ".join(cells)
                     + f" | {np.mean(a):.3f} / {np.mean(b):.3f} | {min(a):.3f} / {min(b):.3f} |")
    lines += ["", f"{len(rows)} rules ({len(pool)} candidates besides the reference, margins "
              f"{', '.join(f'{m:g}' for m in margins)}); shown: the reference alone, the 12 best on half A and the chosen one."]
    return (best[0], best[1]), lines


def table(results: list[dict], reference: str = REFERENCE, pool: list[str] | None = None) -> str:
    every = [n for n in results[0]["candidates"] if all(n in r["candidates"] for r in results)]
    every.remove(reference)
    every.insert(0, reference)
    out = ["Real AUROC half A / half B (proxy AUROC, auto's 3 kinds), every candidate:", ""]
    out += per_candidate(results, every)
    out += ["", f"Spearman, proxy vs real AUROC, all {len(every)} candidates:", ""] + correlations(results, every)
    out += ["", "The default (<= 30 ms on the Pi, declared rule), half A / half B:", ""]
    pick, lines = default_choice(results, every, reference)
    out += lines
    if pool is None:
        pool = [n for n in every if n.endswith("topk=60") and n != reference]
    # --auto's reference is the product's default (``reference``), whatever the rule above picks
    pool = [n for n in pool if n in every and n != reference]
    (names, margin), lines = auto_choice(results, pool, reference, (0.0, 0.01, 0.02, 0.03, 0.05, 0.08))
    out += ["", f"--auto: candidate lists and margins (reference {short(reference)}), real AUROC of the choice, "
            "half A / half B:", ""] + lines
    out += ["", f"Spearman, the chosen list ({len(names)} candidates), real AUROC on all test images:", ""]
    out += correlations(results, names)
    out += ["", "The same, real AUROC on half B:", ""] + correlations(results, names, half=1)
    out += ["", "Chosen list: " + "; ".join(names) + f" (margin {margin:g})"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path)
    p.add_argument("--sets", default="casting,magnetic_tile,elpv_poly,bsdata,deeppcb")
    p.add_argument("--max-train", type=int, default=200)
    p.add_argument("--max-test", type=int, default=300)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--geometries", default=";".join(GEOMETRIES),
                   help="semicolon-separated candidate specs of the feature part (size, tiles, backbone, taps...)")
    p.add_argument("--rules", default=";".join(RULES), help="semicolon-separated image score rules, each "
                   "applied to every geometry's patch distances")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kinds", default=",".join(KINDS), help="proxy defect kinds to draw (the product draws "
                   + ",".join(PRODUCT_KINDS) + ")")
    p.add_argument("--reference", default=REFERENCE, help="--table: the current default candidate")
    p.add_argument("--pool", default=None, help="--table: semicolon-separated candidates --auto's lists are "
                   "drawn from (default: every geometry with top-k 60)")
    p.add_argument("--json", type=Path, default=None, help="append one JSON line per set")
    p.add_argument("--table", type=Path, default=None, help="print the tables of a --json file and exit")
    args = p.parse_args(argv)
    args.geometries = [g.strip() for g in args.geometries.split(";") if g.strip()]
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.rules = [r.strip() for r in args.rules.split(";") if r.strip()]
    if args.table:
        pool = [n.strip() for n in args.pool.split(";") if n.strip()] if args.pool else None
        print(table(load(args.table), args.reference, pool))
        return 0
    torch.set_num_threads(args.threads)
    for name in args.sets.split(","):
        res = run_set(args.root, name, args)
        if args.json:
            with args.json.open("a") as fh:
                fh.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
