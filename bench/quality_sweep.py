#!/usr/bin/env python3
"""Which PatchCore image score ranks real defects best?  One feature pass, every rule.

    python bench/quality_sweep.py --root ../shared/data --sets magnetic_tile,elpv_poly,deeppcb,casting,bsdata \
        --sizes 224 [--max-train 0] [--json sweep.json]

Per set and input size: the default backbone's patch features (the export's own feature graph,
FP32 torch, the runtime's preprocessing) of train/good and test/* are extracted once and cached
(``--cache``, float16); a memory bank is fitted the export's way (greedy coreset, default ratio
and projection, seed 0); every test image's patch nearest-neighbour distances are computed once,
and every image-score rule is evaluated from them:

- ``reweighted``: the paper's reweighted maximum (b = 9 bank neighbours), the current default;
- ``max``: the largest patch distance;
- ``topk<k>``: the mean of the k largest patch distances;
- ``map_max``: the maximum of the anomaly map (bilinear upsampling, Gaussian blur of the
  export's map sigma), as the runtime draws it.

Honest protocol: the test images of each set are split in two stratified halves (seeded, per
set); a rule is chosen on half A across the sets, and half B is reported.  Two criteria: (worst
set, mean) AUROC; and the best mean among rules that lose at most ``GUARD`` on any set against
the current default (a set at chance for every rule makes the plain worst case a coin toss).
``--table`` also repeats the split 200 times.  The
threshold per rule comes from out-of-fold scores of the training goods (5 contiguous folds, each
scored against the bank rows fitted from the other folds' images, as ``export/oof.py`` does) at a
1 % target false-reject rate; false rejects / good and missed / defective on half B at it.
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

from edgead.evaluate import find_test_images  # noqa: E402
from edgead.false_rejects import fold_of, threshold_for_frr  # noqa: E402
from edgead.images import list_images, resolve_train_folder  # noqa: E402
from edgead.metrics_math import auroc  # noqa: E402
from edgead.scorer.anomaly_map import upsample_and_smooth  # noqa: E402
from edgead.scorer.patchcore_bank import softmax_reweight  # noqa: E402
from edgead_export.config import ExportConfig  # noqa: E402
from edgead_export.extract import extract_features  # noqa: E402
from edgead_export.fit import fit_patchcore  # noqa: E402
from edgead_export.pipeline import build_graph  # noqa: E402

TOPKS = (3, 10, 30, 60, 100)
GUARD = 0.01  # a rule may lose at most this much AUROC on any set against the default


def rule_names() -> list[str]:
    return ["reweighted", "max"] + [f"topk{k}" for k in TOPKS] + ["map_max"]


def cached_features(name: str, size: int, graph, cfg: ExportConfig, paths: list[Path], cache: Path) -> np.ndarray:
    """(N, D, h, w) float16 features of ``paths``, one cached file per image (any subset reuses them)."""
    folder = cache / f"{name}_{size}"
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / (str(p.relative_to(cfg.data)).replace("/", "__") + ".npy") for p in paths]
    todo = [i for i, f in enumerate(files) if not f.is_file()]
    t0 = time.perf_counter()
    for a in range(0, len(todo), 32):
        chunk = todo[a:a + 32]
        feats = extract_features(graph, [paths[i] for i in chunk], cfg.preprocess).astype(np.float16)
        for i, f in zip(chunk, feats):
            np.save(files[i], f)
    if todo:
        print(f"  {name} {size}: {len(todo)} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return np.stack([np.load(f) for f in files])


def evenly(items: list, count: int) -> list:
    """At most ``count`` of ``items``, evenly spaced in their order (0: all)."""
    if not count or len(items) <= count:
        return items
    return [items[i * len(items) // count] for i in range(count)]


def nearest(patches: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest bank row of each patch: (distance, index)."""
    bn = (bank * bank).sum(1)
    dist, idx = [], []
    for a in range(0, len(patches), chunk):
        p = patches[a:a + chunk]
        d2 = (p * p).sum(1, keepdim=True) - 2 * p @ bank.T + bn
        m, i = d2.min(1)
        dist.append(m.clamp_min(0).sqrt().numpy())
        idx.append(i.numpy())
    return np.concatenate(dist), np.concatenate(idx)


def image_scores(feats: np.ndarray, bank: np.ndarray, size: int, sigma: float, b: int = 9) -> dict[str, np.ndarray]:
    """Every rule's score of each image (N, D, h, w) against ``bank`` (M, D)."""
    n, d, h, w = feats.shape
    bank_t = torch.from_numpy(bank)
    knn = torch.cdist(bank_t, bank_t).topk(min(b, len(bank)), largest=False).indices.numpy()  # itself first
    out = {r: np.empty(n) for r in rule_names()}
    for i in range(n):
        patches = torch.from_numpy(np.ascontiguousarray(feats[i].reshape(d, h * w).T, dtype=np.float32))
        dist, idx = nearest(patches, bank_t)
        j = int(np.argmax(dist))
        support = knn[idx[j]]
        support = np.concatenate(([idx[j]], support[support != idx[j]]))[:b]
        to_support = np.linalg.norm(bank[support] - patches[j].numpy(), axis=1)
        out["reweighted"][i] = softmax_reweight(to_support) * dist[j]
        top = np.sort(dist)[::-1]
        out["max"][i] = top[0]
        for k in TOPKS:
            out[f"topk{k}"][i] = top[:k].mean()
        out["map_max"][i] = upsample_and_smooth(dist.reshape(h, w), (size, size), sigma).max()
    return out


def oof_scores(train: np.ndarray, fit_rows: np.ndarray, bank: np.ndarray, size: int, sigma: float,
               folds: int = 5, every: int = 1) -> dict[str, np.ndarray]:
    """Out-of-fold scores of the training goods: each fold against the bank rows of the others."""
    n, _, h, w = train.shape
    fold = fold_of(n, folds)
    row_fold = fold[fit_rows // (h * w)]
    parts = {r: [] for r in rule_names()}
    for f in range(folds):
        members = np.flatnonzero(fold == f)[::every]
        s = image_scores(train[members], bank[row_fold != f], size, sigma)
        for r in parts:
            parts[r].append(s[r])
    return {r: np.concatenate(v) for r, v in parts.items()}


def halves(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two stratified halves (A, B) of the test images, as boolean masks."""
    a = np.zeros(len(labels), bool)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        a[idx[: len(idx) // 2]] = True
    return a, ~a


def run_set(root: Path, name: str, size: int, args) -> dict:
    cfg = ExportConfig(data=root / name, out=Path("/tmp/unused"), input_size=(size, size))
    train_paths = list_images(resolve_train_folder(cfg.data))
    train_paths = evenly(train_paths, args.max_train)
    items = find_test_images(cfg.data)
    half = args.max_test // 2
    items = evenly([t for t in items if t.label == 0], half) + evenly([t for t in items if t.label == 1], half)
    graph, _ = build_graph(cfg, train_paths)
    train = cached_features(name, size, graph, cfg, train_paths, args.cache)
    test = cached_features(name, size, graph, cfg, [t.path for t in items], args.cache)
    t0 = time.perf_counter()
    fit = fit_patchcore(train.astype(np.float32), cfg.coreset, cfg.proj_dim, cfg.seed, max_size=cfg.coreset_max)
    bank = fit.bank
    t1 = time.perf_counter()
    scores = image_scores(test, bank, size, cfg.map_sigma)
    t2 = time.perf_counter()
    oof = oof_scores(train, fit.indices, bank, size, cfg.map_sigma, every=args.oof_every)
    t3 = time.perf_counter()
    print(f"  {name} {size}: bank {bank.shape} ({t1 - t0:.0f} s), test {t2 - t1:.0f} s, oof {t3 - t2:.0f} s",
          file=sys.stderr)
    labels = np.array([t.label for t in items])
    a, b = halves(labels, np.random.default_rng(args.seed + zlib.crc32(name.encode())))  # each set its own split
    res = {"set": name, "size": size, "train": len(train_paths), "bank_rows": int(len(bank)),
           "test_good": int((labels == 0).sum()), "test_defective": int((labels == 1).sum()), "rules": {},
           "labels": labels.tolist(), "scores": {r: scores[r].tolist() for r in rule_names()}}
    for r in rule_names():
        s = scores[r]
        thr = threshold_for_frr(oof[r], 0.01).threshold
        res["rules"][r] = {
            "auroc_all": auroc(labels, s), "auroc_a": auroc(labels[a], s[a]), "auroc_b": auroc(labels[b], s[b]),
            "threshold": float(thr), "oof_goods": int(len(oof[r])),
            "false_rejects_b": int(((s > thr) & b & (labels == 0)).sum()), "good_b": int((b & (labels == 0)).sum()),
            "missed_b": int(((s <= thr) & b & (labels == 1)).sum()), "defective_b": int((b & (labels == 1)).sum()),
        }
    return res


def choose(results: list[dict], half: str) -> list[tuple[str, float, float]]:
    """Rules ranked by (worst-case, mean) AUROC across the sets on ``half``."""
    rows = []
    for r in rule_names():
        v = [res["rules"][r][f"auroc_{half}"] for res in results]
        rows.append((r, min(v), float(np.mean(v))))
    return sorted(rows, key=lambda t: (t[1], t[2]), reverse=True)


def markdown(results: list[dict]) -> str:
    """Two tables: AUROC per rule and set (half A / half B, mean, worst), and the operating point
    on half B at the out-of-fold 1 % threshold."""
    sets = [r["set"] for r in results]
    head = "| rule | " + " | ".join(sets) + " | mean A / B | worst A / B | worst change vs reweighted A / B |"
    lines = [head, "|" + "---|" * (len(sets) + 4)]
    base_a = [r["rules"]["reweighted"]["auroc_a"] for r in results]
    base_b = [r["rules"]["reweighted"]["auroc_b"] for r in results]
    for rule in rule_names():
        a = [r["rules"][rule]["auroc_a"] for r in results]
        b = [r["rules"][rule]["auroc_b"] for r in results]
        cells = [f"{x:.3f} / {y:.3f}" for x, y in zip(a, b)]
        da = min(x - y for x, y in zip(a, base_a))
        db = min(x - y for x, y in zip(b, base_b))
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {np.mean(a):.3f} / {np.mean(b):.3f} | "
                     f"{min(a):.3f} / {min(b):.3f} | {da:+.3f} / {db:+.3f} |")
    lines += ["", "| rule | " + " | ".join(sets) + " | pooled |", "|" + "---|" * (len(sets) + 2)]
    for rule in rule_names():
        v = [r["rules"][rule] for r in results]
        cells = [f"{x['false_rejects_b']}/{x['good_b']}, {x['missed_b']}/{x['defective_b']}" for x in v]
        fr, g = sum(x["false_rejects_b"] for x in v), sum(x["good_b"] for x in v)
        mi, d = sum(x["missed_b"] for x in v), sum(x["defective_b"] for x in v)
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {fr}/{g} ({100 * fr / g:.1f} %), "
                     f"{mi}/{d} ({100 * mi / d:.0f} %) |")
    return "\n".join(lines)


def repeated_selection(results: list[dict], splits: int = 200, seed: int = 0) -> str:
    """``splits`` times: every set split in two stratified halves, the rule with the best (worst,
    mean) AUROC across the sets on A chosen, its mean and worst AUROC on B recorded."""
    rng = np.random.default_rng(seed)
    chosen, mean_b, worst_b = {}, [], []
    guarded, gmean_b, gdelta_b = {}, [], []
    for _ in range(splits):
        on_a, on_b = {r: [] for r in rule_names()}, {r: [] for r in rule_names()}
        for res in results:
            labels = np.array(res["labels"])
            a = halves(labels, rng)[0]
            for r in rule_names():
                sc = np.array(res["scores"][r])
                on_a[r].append(auroc(labels[a], sc[a]))
                on_b[r].append(auroc(labels[~a], sc[~a]))
        best = max(rule_names(), key=lambda r: (min(on_a[r]), np.mean(on_a[r])))
        chosen[best] = chosen.get(best, 0) + 1
        mean_b.append(np.mean(on_b[best]))
        worst_b.append(min(on_b[best]))
        delta_a = {r: min(np.subtract(on_a[r], on_a["reweighted"])) for r in rule_names()}
        ok = [r for r in rule_names() if delta_a[r] >= -GUARD]
        pick = max(ok, key=lambda r: np.mean(on_a[r]))
        guarded[pick] = guarded.get(pick, 0) + 1
        gmean_b.append(np.mean(on_b[pick]) - np.mean(on_b["reweighted"]))
        gdelta_b.append(min(np.subtract(on_b[pick], on_b["reweighted"])))
    picks = ", ".join(f"{r} {n}" for r, n in sorted(chosen.items(), key=lambda t: -t[1]))
    gpicks = ", ".join(f"{r} {n}" for r, n in sorted(guarded.items(), key=lambda t: -t[1]))
    return (f"{splits} splits, chosen on A by (worst, mean): {picks}; on B: mean {np.mean(mean_b):.3f} "
            f"(sd {np.std(mean_b):.3f}), worst {np.mean(worst_b):.3f} (sd {np.std(worst_b):.3f})\n"
            f"chosen on A by mean among rules no set loses more than {GUARD} with: {gpicks}; on B against "
            f"reweighted: mean {np.mean(gmean_b):+.3f} (sd {np.std(gmean_b):.3f}), worst set "
            f"{np.mean(gdelta_b):+.3f} (sd {np.std(gdelta_b):.3f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path)
    p.add_argument("--sets", default="magnetic_tile,elpv_poly,deeppcb,casting,bsdata")
    p.add_argument("--sizes", default="224")
    p.add_argument("--max-train", type=int, default=0, help="fit on at most this many training images, evenly "
                                                            "spaced in name order (0: all)")
    p.add_argument("--max-test", type=int, default=0, help="at most this many test images, half good and half "
                                                           "defective at most, evenly spaced (0: all)")
    p.add_argument("--oof-every", type=int, default=1, help="score every n-th training image out of fold")
    p.add_argument("--cache", type=Path, default=Path("/tmp/edgead-quality-cache/feats"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="append one JSON line per set and size")
    p.add_argument("--table", type=Path, default=None, help="print the markdown tables of a --json file and exit")
    args = p.parse_args(argv)
    if args.table:
        results = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        print(markdown(results))
        if all("scores" in r for r in results):
            print()
            print(repeated_selection(results))
            print("whole test folder, AUROC: " + "; ".join(
                f"{rule} mean {np.mean([r['rules'][rule]['auroc_all'] for r in results]):.3f} worst "
                f"{min(r['rules'][rule]['auroc_all'] for r in results):.3f}" for rule in rule_names()))
        return 0
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        for name in args.sets.split(","):
            res = run_set(args.root, name, size, args)
            results.append(res)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps(res) + "\n")
            print(json.dumps({name: {r: round(v["auroc_b"], 3) for r, v in res["rules"].items()}}), file=sys.stderr)
        sized = [r for r in results if r["size"] == size]
        for half in ("a", "b"):
            print(f"size {size}, half {half.upper()}: rules by (worst, mean) AUROC:")
            for rule, worst, mean in choose(sized, half):
                print(f"  {rule:12s} worst {worst:.3f} mean {mean:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
