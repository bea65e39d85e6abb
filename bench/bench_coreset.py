"""Benchmark of export.coreset.greedy_coreset on synthetic patch features.

Acceptance target: 160k x 152 float32 (200 images at 224 px, EfficientNet-Lite0 taps) to a 10 %
coreset in <= 60 s on the 2-core workstation. Also try --dim 1536 (WideResNet-50 taps).

    python bench/bench_coreset.py                  # 160000 x 152
    python bench/bench_coreset.py --dim 1536
    python bench/bench_coreset.py --naive 200      # also time the plain torch loop, extrapolated
    python bench/bench_coreset.py --check          # also verify the covering radius by brute force
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgead_export.coreset import coreset_size, covering_radius, greedy_coreset, project  # noqa: E402


def make_features(n: int, dim: int, clusters: int = 100, seed: int = 0) -> np.ndarray:
    """Mixture of anisotropic gaussians with a decaying spectrum (real EfficientNet-Lite0 patch
    features: top 5 principal directions ~50 % of the variance, top 50 ~90 %), uneven cluster sizes."""
    rng = np.random.default_rng(seed)
    spectrum = (1.0 / np.arange(1, dim + 1) ** 0.4).astype(np.float32)
    sizes = rng.multinomial(n, rng.dirichlet(np.ones(clusters)))
    out = np.empty((n, dim), dtype=np.float32)
    row = 0
    for size in sizes:
        centre = rng.standard_normal(dim, dtype=np.float32) * spectrum * 2.0
        spread = spectrum * rng.uniform(0.3, 1.0, dim).astype(np.float32) * rng.uniform(0.5, 1.5)
        block = out[row:row + size]
        block[:] = rng.standard_normal((size, dim), dtype=np.float32)
        block *= spread
        block += centre
        row += size
    return out[rng.permutation(n)] * 10.0


def naive_ms_per_iter(features: np.ndarray, proj_dim: int | None, iters: int) -> float:
    """Plain torch greedy loop (distances to all N rows every step): ms per iteration."""
    y = torch.from_numpy(project(features, proj_dim))
    yn = (y * y).sum(1)
    mind = torch.full((y.shape[0],), math.inf)
    row = 0
    t0 = time.perf_counter()
    for _ in range(iters):
        c = y[row]
        torch.minimum(mind, yn - 2 * (y @ c) + c.dot(c), out=mind)
        row = int(torch.argmax(mind))
    return (time.perf_counter() - t0) / iters * 1e3


def random_radius(features: np.ndarray, size: int, rows: int, seed: int) -> tuple[float, str]:
    """Covering radius of a random subset of the same size: exact, or over a row sample (lower bound)."""
    rng = np.random.default_rng(seed + 1)
    subset = features[rng.choice(len(features), size, replace=False)]
    if rows and rows < len(features):
        sample = features[rng.choice(len(features), rows, replace=False)]
        return covering_radius(sample, subset), f"lower bound from {rows} sampled rows"
    return covering_radius(features, subset), "exact"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=160_000, help="rows (patches); default 160000")
    p.add_argument("--dim", type=int, default=152, help="feature dimension; default 152")
    p.add_argument("--ratio", type=float, default=0.1, help="coreset ratio; default 0.1")
    p.add_argument("--proj-dim", type=int, default=128, help="projection dims (0: none); default 128")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="default: torch.get_num_threads()")
    p.add_argument("--random-rows", type=int, default=None,
                   help="rows to evaluate the random subset's radius on (0: all, exact); "
                        "default all if dim <= 256, else 20000")
    p.add_argument("--naive", type=int, default=0, metavar="ITERS",
                   help="also time ITERS steps of the plain torch loop")
    p.add_argument("--check", action="store_true", help="verify the covering radius by brute force")
    args = p.parse_args(argv)

    threads = args.threads or torch.get_num_threads()
    proj_dim = args.proj_dim or None
    t0 = time.perf_counter()
    feats = make_features(args.n, args.dim, seed=args.seed)
    size = coreset_size(args.n, args.ratio)
    print(f"features: {args.n} x {args.dim} float32 (made in {time.perf_counter() - t0:.1f} s), "
          f"coreset {size}, proj_dim {proj_dim}, threads {threads}, cpus {os.cpu_count()}", flush=True)

    cpu0 = time.process_time()
    res = greedy_coreset(feats, size, proj_dim=proj_dim, seed=args.seed, threads=threads)
    cpu = time.process_time() - cpu0
    verdict = "PASS" if res.seconds <= 60 else "FAIL"
    print(f"greedy_coreset: {res.seconds:.1f} s (cpu {cpu:.1f} s)  covering radius {res.covering_radius:.4f}  "
          f"projected radius {res.projected_radius:.4f}  [{verdict} <= 60 s]", flush=True)

    rows = args.random_rows if args.random_rows is not None else (0 if args.dim <= 256 else 20_000)
    t0 = time.perf_counter()
    rand, how = random_radius(feats, size, rows, args.seed)
    print(f"random subset:  covering radius {rand:.4f} ({how}, {time.perf_counter() - t0:.1f} s)  "
          f"greedy/random = {res.covering_radius / rand:.3f}", flush=True)

    if args.check:
        t0 = time.perf_counter()
        brute = covering_radius(feats, res.indices)
        print(f"check: brute-force covering radius {brute:.4f} ({time.perf_counter() - t0:.1f} s), "
              f"relative difference {abs(brute - res.covering_radius) / brute:.2e}", flush=True)
    if args.naive:
        ms = naive_ms_per_iter(feats, proj_dim, args.naive)
        print(f"naive torch loop: {ms:.1f} ms/iter -> ~{ms * size / 1e3:.0f} s extrapolated to {size}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
