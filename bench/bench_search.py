#!/usr/bin/env python3
"""Benchmark of the nearest-neighbour stage: exact (float32 BLAS) vs hnswlib, one thread.

One "frame" is what the PatchCore scorer sends per image: the 28x28 = 784 patch vectors of a
224 px EfficientNet-Lite0 frame, D=152, k=1.  For each bank size it reports:

* time per frame (median over --frames frames) for exact and for hnsw at each ef_search,
* recall@1 of hnsw against exact over all query patches,
* the relative error of the image score (max over the frame's 784 NN distances), hnsw vs
  exact, worst case over the frames, separately for normal frames and for anomalous frames
  (frames with a small defect = a few far-out patches),
* the mean relative error of the per-patch distances (what the anomaly map sees).

Then the crossover bank size where hnsw (at the default ef_search) becomes faster than exact.

Synthetic data (no dataset needed, deterministic with --seed): features are non-negative like
post-ReLU6 CNN features; the bank is a mixture of --clusters anisotropic gaussians, each living
mostly in its own --intrinsic-dim dimensional subspace plus weak isotropic noise (CNN patch
features have a low intrinsic dimension; isotropic 152-D gaussians would be an unrealistically
hard case for HNSW -- try --intrinsic-dim 152 to see it).  Normal query patches are bank
points plus noise comparable to the bank's typical nearest-neighbour distance; anomalous
frames also carry --outliers far-off patches.

Real features instead (--real-bank/--real-normal/--real-anomalous): .npy files of backbone
patch features -- the bank as (N, D) rows in greedy-coreset order (so that its first n rows are
the n-row coreset) and test images as (n_images, patches, D); a frame is then one image and
its image score is checked per image.

The int8 search (edgead.scorer.search.int8) is timed for every patch (what the anomaly map needs)
and for the image score alone (``max_nn``, the decision path).

Two hnsw variants are timed: plain hnswlib ("hnsw") and HnswSearch's default (exact_max: the
largest distance of the frame re-checked by brute force on the few candidate patches, which
makes the image score exact; see edgead/scorer/search/hnsw.py).

BLAS is limited to one thread by setting OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS
before numpy is imported (and threadpoolctl when installed).  Each frame is timed --repeat
times and the best kept; on a shared machine add --clock cpu (CPU time of the calling thread,
which does all the work when threads=1).

    python bench/bench_search.py                      # 10k / 50k / 100k, table
    python bench/bench_search.py --json out.json      # also write JSON ('-' = stdout)
    python bench/bench_search.py --sizes 2000 5000 --no-crossover
    python bench/bench_search.py --real-bank bank.npy --real-normal good.npy \
        --real-anomalous defect.npy --clock cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def _parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000],
                   help="bank sizes (rows) for the main table")
    p.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128], help="ef_search values")
    p.add_argument("--M", type=int, default=16, help="HNSW M")
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--default-ef", type=int, default=None,
                   help="ef_search used for the crossover (default: edgead's DEFAULT_HNSW_PARAMS)")
    p.add_argument("--dim", type=int, default=152)
    p.add_argument("--patches", type=int, default=784, help="query vectors per frame")
    p.add_argument("--frames", type=int, default=10, help="frames per measurement (half anomalous)")
    p.add_argument("--outliers", type=int, default=12, help="far-off patches in an anomalous frame")
    p.add_argument("--clusters", type=int, default=48)
    p.add_argument("--intrinsic-dim", type=int, default=16)
    p.add_argument("--noise", type=float, default=1.0,
                   help="query noise, in units of the bank's median NN distance")
    p.add_argument("--crossover-sizes", type=int, nargs="+",
                   default=[1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 20_000, 50_000, 100_000])
    p.add_argument("--no-crossover", action="store_true")
    p.add_argument("--no-int8-recheck", dest="int8_recheck", action="store_false",
                   help="skip hnsw + exact max over the int8 codes (a second index build per size)")
    p.add_argument("--build-threads", type=int, default=os.cpu_count() or 1,
                   help="threads for building the index (queries always use one)")
    p.add_argument("--repeat", type=int, default=3,
                   help="time each frame this many times and keep the best (noise on a busy machine)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: perf_counter; cpu: CPU time of this thread (everything runs in the "
                        "calling thread with one thread, so on an idle machine cpu == wall; use it "
                        "on a shared, busy machine where wall time includes waiting for a core)")
    p.add_argument("--blas-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real-bank", default=None, metavar="NPY",
                   help="real bank features (N, D), rows in coreset order (prefixes = smaller banks)")
    p.add_argument("--real-normal", default=None, metavar="NPY",
                   help="per-image features of good test images (n, P, D)")
    p.add_argument("--real-anomalous", default=None, metavar="NPY",
                   help="per-image features of defective test images (n, P, D)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="write results as JSON to PATH ('-' or no value: stdout)")
    return p.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else None
_threads = str(ARGS.blas_threads if ARGS else 1)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = _threads

import numpy as np  # noqa: E402  (after the thread env vars)

try:  # optional, belt and braces
    from threadpoolctl import threadpool_limits  # type: ignore

    threadpool_limits(int(_threads))
except ImportError:  # pragma: no cover
    pass

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgead.bank.codes import dequantize_bank, quantize_bank  # noqa: E402
from edgead.scorer.search.exact import ExactSearch  # noqa: E402
from edgead.scorer.search.hnsw import DEFAULT_HNSW_PARAMS, HnswSearch  # noqa: E402
from edgead.scorer.search.int8 import Int8Search  # noqa: E402


# ---------------------------------------------------------------------------------------------
# data


class Mixture:
    """Non-negative, clustered, low-intrinsic-dimension synthetic features."""

    def __init__(self, dim: int, clusters: int, intrinsic: int, rng: np.random.Generator):
        self.dim, self.rng = dim, rng
        intrinsic = max(1, min(intrinsic, dim))
        # sparse-ish non-negative centres (post-ReLU6-like): many small, some large channels
        self.centres = (rng.gamma(0.6, 1.0, size=(clusters, dim)) * 1.2).astype(np.float32)
        self.bases = rng.standard_normal((clusters, intrinsic, dim)).astype(np.float32)
        self.bases *= (0.9 / np.sqrt(intrinsic))
        self.scales = rng.uniform(0.5, 1.5, size=clusters).astype(np.float32)
        self.weights = rng.dirichlet(np.full(clusters, 2.0))
        self.iso = 0.05

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        c = rng.choice(len(self.weights), size=n, p=self.weights)
        coef = rng.standard_normal((n, self.bases.shape[1])).astype(np.float32)
        x = np.einsum("ni,nid->nd", coef, self.bases[c]) * self.scales[c, None]
        x += self.centres[c]
        x += self.iso * rng.standard_normal((n, self.dim)).astype(np.float32)
        return np.clip(x, 0.0, 6.0, out=x).astype(np.float32), c


def make_bank(mix: Mixture, rows: int) -> np.ndarray:
    return mix.sample(rows)[0]


def typical_nn_distance(bank: np.ndarray, rng: np.random.Generator) -> float:
    probe = bank[rng.choice(len(bank), size=min(200, len(bank)), replace=False)]
    d, _ = ExactSearch(bank).query(probe, k=2)
    return float(np.median(d[:, 1]))


def make_frames(mix: Mixture, bank: np.ndarray, n_frames: int, patches: int, outliers: int,
                noise: float, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    dim = bank.shape[1]
    nn = typical_nn_distance(bank, rng)
    sigma = noise * nn / np.sqrt(dim)
    frames = []
    for f in range(n_frames):
        q = bank[rng.integers(0, len(bank), size=patches)].copy()
        q += sigma * rng.standard_normal(q.shape).astype(np.float32)
        kind = "anomalous" if f % 2 else "normal"
        if kind == "anomalous" and outliers > 0:
            # a small defect: a blob of neighbouring patches pushed far off the normal manifold
            start = int(rng.integers(0, patches - outliers))
            sel = np.arange(start, start + outliers)
            direction = rng.standard_normal(dim).astype(np.float32)
            direction /= np.linalg.norm(direction)
            mag = rng.uniform(4.0, 10.0, size=(outliers, 1)).astype(np.float32) * nn
            q[sel] += mag * direction + 0.3 * nn / np.sqrt(dim) * rng.standard_normal(
                (outliers, dim)).astype(np.float32)
        np.clip(q, 0.0, None, out=q)
        frames.append((kind, np.ascontiguousarray(q, dtype=np.float32)))
    return frames


# ---------------------------------------------------------------------------------------------
# real features (optional)


def load_real(args, rng) -> tuple[np.ndarray, list]:
    """Bank rows (in coreset order: a prefix of n rows is the n-row coreset) and frames built from
    per-image patch features (n_images, P, D): round(--patches / P) images per frame, each image a
    separate segment for the image score."""
    bank = np.load(args.real_bank, mmap_mode="r")
    frames = []
    for kind, path in (("normal", args.real_normal), ("anomalous", args.real_anomalous)):
        if not path:
            continue
        imgs = np.load(path).astype(np.float32)
        per = max(1, round(args.patches / imgs.shape[1]))
        order = rng.permutation(len(imgs))
        for s0 in range(0, len(order) - per + 1, per):
            sel = imgs[order[s0:s0 + per]]
            segs = [(j * sel.shape[1], (j + 1) * sel.shape[1]) for j in range(per)]
            frames.append((kind, np.ascontiguousarray(sel.reshape(-1, sel.shape[-1])), segs))
    # interleave kinds, cap the count
    normal = [f for f in frames if f[0] == "normal"]
    anom = [f for f in frames if f[0] == "anomalous"]
    mixed = [f for pair in zip(normal, anom) for f in pair] + normal[len(anom):] + anom[len(normal):]
    return bank, mixed[: args.frames]


# ---------------------------------------------------------------------------------------------
# measurement


REPEAT = 3
CLOCK = time.perf_counter


def _time(fn, q) -> tuple[float, tuple]:
    """Best of REPEAT runs (ms): robust against the machine being busy with something else."""
    best = float("inf")
    for _ in range(max(1, REPEAT)):
        t0 = CLOCK()
        out = fn(q)
        best = min(best, (CLOCK() - t0) * 1e3)
    return best, out


def _score_errors(d: np.ndarray, dref: np.ndarray, segs) -> list[float]:
    out = []
    for a, b in segs:
        s_ref, s = float(dref[a:b].max()), float(d[a:b].max())
        out.append(abs(s - s_ref) / s_ref)
    return out


def measure(bank: np.ndarray, frames, ef_values, args, tmpdir: Path) -> dict:
    """frames: list of (kind, queries (Q, D) float32, segments [(start, stop), ...])."""
    bank = np.ascontiguousarray(bank, dtype=np.float32)
    rows = len(bank)
    exact = ExactSearch(bank)
    t0 = time.perf_counter()
    hnsw = HnswSearch(bank, M=args.M, ef_construction=args.ef_construction,
                      ef_search=max(ef_values), threads=args.build_threads, seed=args.seed,
                      exact_max=False)
    build_s = time.perf_counter() - t0
    idx_path = tmpdir / f"bank{rows}.hnsw"
    hnsw.save(idx_path)
    index_mb = idx_path.stat().st_size / 2**20
    del hnsw
    # reload as the runtime does: single-threaded queries
    hnsw = HnswSearch(bank, idx_path, ef_search=max(ef_values), threads=1, exact_max=True)
    idx_path.unlink()

    ref, ex_ms = [], []
    exact.query(frames[0][1])  # warm-up
    for kind, q, _ in frames:
        ms, (d, i) = _time(lambda x: exact.query(x, k=1), q)
        ex_ms.append(ms)
        ref.append((d[:, 0], i[:, 0]))

    res = {"rows": rows, "exact_ms": float(np.median(ex_ms)), "hnsw_build_s": build_s,
           "hnsw_index_mib": index_mb, "hnsw": {}, "int8": measure_int8(bank, frames, ref)}
    for ef in ef_values:
        hnsw.index.set_ef(ef)
        row = {}
        for variant, certify in (("raw", False), ("exact_max", True)):
            hnsw.exact_max = certify
            hnsw.query(frames[0][1])  # warm-up
            times, hits, total, patch_err, refined = [], 0, 0, [], []
            score_err = {"normal": [], "anomalous": []}
            for (kind, q, segs), (dref, iref) in zip(frames, ref):
                ms, (d, i) = _time(lambda x: hnsw.query(x, k=1), q)
                times.append(ms)
                refined.append(hnsw.last_refined if certify else 0)
                d, i = d[:, 0], i[:, 0]
                # a different row at (numerically) the same distance is not a miss
                hits += int(np.sum((i == iref) | (d <= dref * (1 + 1e-6))))
                total += len(i)
                patch_err.append(np.mean((d - dref) / np.maximum(dref, 1e-12)))
                score_err[kind] += _score_errors(d, dref, segs)
            ms = float(np.median(times))
            row[variant] = {
                "ms": ms,
                "speedup": res["exact_ms"] / ms,
                "recall_at_1": hits / total,
                "score_rel_err_max": max(score_err["normal"] + score_err["anomalous"]),
                "score_rel_err_normal_max": max(score_err["normal"], default=0.0),
                "score_rel_err_anomalous_max": max(score_err["anomalous"], default=0.0),
                "patch_dist_rel_err_mean": float(np.mean(patch_err)),
                "refined_per_frame_mean": float(np.mean(refined)),
                "refined_per_frame_max": int(np.max(refined)),
            }
        res["hnsw"][str(ef)] = row
    if getattr(args, "int8_recheck", True):
        for ef, row in measure_int8_recheck(bank, frames, ef_values, args, tmpdir).items():
            row["speedup"] = res["exact_ms"] / row["ms"]
            res["hnsw"][ef]["exact_max_int8"] = row
    return res


def measure_int8_recheck(bank: np.ndarray, frames, ef_values, args, tmpdir: Path) -> dict:
    """hnsw + exact max as the runtime runs it on an export's bank (``make_search`` with the
    int8 codes): the graph built on the dequantized bank, the re-check over the codes
    (Int8Search.exact_nn); timed per frame against the float32 re-check on the same graph
    (``float_recheck_ms``) and plain hnsw on it (``raw_ms``); image-score error against brute
    force over that bank."""
    quantized = quantize_bank(bank)
    stored = dequantize_bank(*quantized)
    exact = ExactSearch(stored)
    ref = [exact.query(q, k=1)[0][:, 0] for _, q, _ in frames]
    idx_path = tmpdir / f"bank{len(stored)}.int8.hnsw"
    HnswSearch(stored, M=args.M, ef_construction=args.ef_construction, ef_search=max(ef_values),
               threads=args.build_threads, seed=args.seed, exact_max=False).save(idx_path)
    int8 = HnswSearch(stored, idx_path, ef_search=max(ef_values), threads=1, quantized=quantized)
    flt = HnswSearch(stored, idx_path, ef_search=max(ef_values), threads=1)
    idx_path.unlink()
    out = {}
    for ef in ef_values:
        for h in (int8, flt):
            h.index.set_ef(ef)
            h.query(frames[0][1])  # warm-up
        times, f_times, raw_times, refined, err = [], [], [], [], []
        for (kind, q, segs), dref in zip(frames, ref):
            ms, (d, _) = _time(lambda x: int8.query(x, k=1), q)
            times.append(ms)
            refined.append(int8.last_refined)
            err += _score_errors(d[:, 0], dref, segs)
            f_times.append(_time(lambda x: flt.query(x, k=1), q)[0])
            flt.exact_max = False
            raw_times.append(_time(lambda x: flt.query(x, k=1), q)[0])
            flt.exact_max = True
        out[str(ef)] = {"ms": float(np.median(times)), "float_recheck_ms": float(np.median(f_times)),
                        "raw_ms": float(np.median(raw_times)), "score_rel_err_max": max(err),
                        "refined_per_frame_mean": float(np.mean(refined)),
                        "refined_per_frame_max": int(np.max(refined))}
    return out


def measure_int8(bank: np.ndarray, frames, ref_float) -> dict:
    """Int8Search (int8 GEMM candidates, float32 distances, certified max) against exact search
    over the same (int8-stored, dequantized) bank; and what storing the bank as int8 changes in
    the image score against the float32 bank (``bank_quantization_score_rel_err_max``)."""
    quantized = quantize_bank(bank)
    search = Int8Search(None, quantized=quantized)
    exact = ExactSearch(dequantize_bank(*quantized))
    ref = [tuple(a[:, 0] for a in exact.query(q, k=1)) for _, q, _ in frames]
    bank_err = [e for (_, _, segs), (d, _), (d0, _) in zip(frames, ref, ref_float) for e in _score_errors(d, d0, segs)]
    search.query(frames[0][1])  # warm-up
    times, hits, total, patch_err, score_err, max_ms, max_err = [], 0, 0, [], [], [], []
    for (kind, q, segs), (dref, iref) in zip(frames, ref):
        ms, (d, i) = _time(lambda x: search.query(x, k=1), q)
        times.append(ms)
        for a, b in segs:  # the decision path: the image score alone (max_nn), per image
            ms_max, (_, d_max, _) = _time(search.max_nn, q[a:b])
            max_ms.append(ms_max)
            max_err.append(abs(d_max - float(dref[a:b].max())) / float(dref[a:b].max()))
        d, i = d[:, 0], i[:, 0]
        hits += int(np.sum((i == iref) | (d <= dref * (1 + 1e-6))))
        total += len(i)
        patch_err.append(np.mean((d - dref) / np.maximum(dref, 1e-12)))
        score_err += _score_errors(d, dref, segs)
    return {"ms": float(np.median(times)), "recall_at_1": hits / total,
            "score_rel_err_max": max(score_err), "patch_dist_rel_err_mean": float(np.mean(patch_err)),
            "max_nn_ms_p50": float(np.median(max_ms)), "max_nn_ms_p90": float(np.percentile(max_ms, 90)),
            "max_nn_score_rel_err_max": max(max_err), "bank_quantization_score_rel_err_max": max(bank_err)}


def crossover(banks_frames, ef, args, tmpdir) -> dict:
    points = []
    for bank, frames in banks_frames:
        r = measure(bank, frames, [ef], args, tmpdir)
        h = r["hnsw"][str(ef)]
        points.append({"rows": r["rows"], "exact_ms": r["exact_ms"], "hnsw_ms": h["raw"]["ms"],
                       "hnsw_exact_max_ms": h["exact_max"]["ms"], "int8_ms": r["int8"]["ms"]})
        print(f"  crossover sweep: {r['rows']:>7} rows  exact {r['exact_ms']:8.1f} ms  "
              f"hnsw(ef={ef}) {h['raw']['ms']:7.1f} ms  +exact max {h['exact_max']['ms']:7.1f} ms  "
              f"int8 {r['int8']['ms']:7.1f} ms", file=sys.stderr, flush=True)
    out = {"ef_search": ef, "points": points}
    for key in ("hnsw_ms", "hnsw_exact_max_ms"):
        cross = None
        for a, b in zip(points, points[1:]):
            da, db = a["exact_ms"] - a[key], b["exact_ms"] - b[key]
            if da <= 0 < db:  # linear interpolation of the time difference
                cross = a["rows"] + (b["rows"] - a["rows"]) * (-da) / (db - da)
                break
        if cross is None and points and points[0]["exact_ms"] > points[0][key]:
            cross = float(points[0]["rows"])  # already faster at the smallest size
        out["crossover_rows_" + key[:-3]] = cross
    # where hnsw (+ exact max, the runtime's variant) overtakes the int8 search
    cross = None
    for a, b in zip(points, points[1:]):
        da, db = a["int8_ms"] - a["hnsw_exact_max_ms"], b["int8_ms"] - b["hnsw_exact_max_ms"]
        if da <= 0 < db:
            cross = a["rows"] + (b["rows"] - a["rows"]) * (-da) / (db - da)
            break
    if cross is None and points and points[0]["int8_ms"] > points[0]["hnsw_exact_max_ms"]:
        cross = float(points[0]["rows"])
    out["crossover_rows_int8_vs_hnsw_exact_max"] = cross
    return out


def main() -> int:
    global REPEAT, CLOCK
    args = ARGS or _parse_args()
    REPEAT = args.repeat
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    rng = np.random.default_rng(args.seed)
    default_ef = args.default_ef or DEFAULT_HNSW_PARAMS["ef_search"]
    ef_values = sorted(set(args.ef) | {default_ef})
    real = bool(args.real_bank)

    if real:
        real_bank, real_frames = load_real(args, rng)
        if not real_frames:
            sys.exit("--real-bank needs --real-normal and/or --real-anomalous")
        dim = real_bank.shape[1]

        def data(rows):
            return np.asarray(real_bank[:rows], dtype=np.float32), real_frames
    else:
        mix = Mixture(args.dim, args.clusters, args.intrinsic_dim, rng)
        dim = args.dim

        def data(rows):
            bank = make_bank(mix, rows)
            frames = make_frames(mix, bank, args.frames, args.patches, args.outliers, args.noise,
                                 rng)
            return bank, [(k, q, [(0, len(q))]) for k, q in frames]

    out = {
        "machine": {"platform": platform.platform(), "processor": platform.processor()
                    or platform.machine(), "cpu_count": os.cpu_count(),
                    "numpy": np.__version__, "blas_threads": args.blas_threads,
                    "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")},
        "setup": {"data": f"real: {args.real_bank}" if real else "synthetic mixture",
                  "dim": dim, "patches_per_frame": args.patches, "k": 1,
                  "frames": args.frames, "outliers": args.outliers, "clusters": args.clusters,
                  "intrinsic_dim": args.intrinsic_dim, "noise": args.noise, "M": args.M,
                  "ef_construction": args.ef_construction, "seed": args.seed,
                  "repeat": args.repeat, "clock": args.clock,
                  "build_threads": args.build_threads},
        "results": [],
    }
    sizes = [n for n in args.sizes if not real or n <= len(real_bank)]
    with tempfile.TemporaryDirectory() as td:
        tmpdir = Path(td)
        for rows in sizes:
            bank, frames = data(rows)
            r = measure(bank, frames, ef_values, args, tmpdir)
            out["results"].append(r)
            print(f"  measured {rows} rows (build {r['hnsw_build_s']:.1f} s with "
                  f"{args.build_threads} threads)", file=sys.stderr, flush=True)
        if not args.no_crossover:
            cs = [n for n in args.crossover_sizes if not real or n <= len(real_bank)]
            out["crossover"] = crossover((data(n) for n in cs), default_ef, args, tmpdir)

    _print_table(out, default_ef)
    if args.json:
        text = json.dumps(out, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


def _print_table(out: dict, default_ef: int) -> None:
    s = out["setup"]
    print(f"\nNN search, one thread, frame = {s['patches_per_frame']} x D={s['dim']}, k=1, "
          f"M={s['M']}, ef_construction={s['ef_construction']}; data: {s['data']}  "
          f"({out['machine']['processor']}, {s['clock']} clock, best of {s['repeat']})")
    print("hnsw = plain hnswlib; +max = HnswSearch default (exact_max: the frame's largest distance "
          "re-checked exactly). int8 bank: an export's bank (int8, dequantized), its own graph: plain hnsw, "
          "+max (float32 re-check) and +max8 (re-checked over the int8 codes, as the runtime does; x and "
          "score err for it, error against brute force over that bank)")
    hdr = (f"{'rows':>7} {'ef':>4} {'exact ms':>8} | {'hnsw ms':>7} {'x':>5} {'recall@1':>8} "
           f"{'score err':>9} {'(norm/anom)':>15} {'patch err':>9} | {'+max ms':>7} {'x':>5} "
           f"{'refined':>9} {'score err':>9} | {'int8 bank: hnsw':>15} {'+max':>6} {'+max8':>6} {'x':>5} {'score err':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in out["results"]:
        for ef, h in r["hnsw"].items():
            raw, cm = h["raw"], h["exact_max"]
            mark = "*" if int(ef) == default_ef else " "
            print(f"{r['rows']:>7} {ef:>3}{mark} {r['exact_ms']:>8.1f} | {raw['ms']:>7.1f} "
                  f"{raw['speedup']:>4.1f}x {raw['recall_at_1']:>8.4f} "
                  f"{100 * raw['score_rel_err_max']:>8.3f}% "
                  f"{100 * raw['score_rel_err_normal_max']:>7.2f}/{100 * raw['score_rel_err_anomalous_max']:<6.2f}% "
                  f"{100 * raw['patch_dist_rel_err_mean']:>8.3f}% | {cm['ms']:>7.1f} "
                  f"{cm['speedup']:>4.1f}x {cm['refined_per_frame_mean']:>5.1f}/{cm['refined_per_frame_max']:<3d} "
                  f"{100 * cm['score_rel_err_max']:>8.3f}%" + (
                      f" | {h['exact_max_int8']['raw_ms']:>15.1f} {h['exact_max_int8']['float_recheck_ms']:>6.1f} "
                      f"{h['exact_max_int8']['ms']:>6.1f} {h['exact_max_int8']['speedup']:>4.1f}x "
                      f"{100 * h['exact_max_int8']['score_rel_err_max']:>8.3f}%" if "exact_max_int8" in h else ""))
        i8 = r["int8"]
        print(f"{'':>7} int8 {i8['ms']:.1f} ms ({r['exact_ms'] / i8['ms']:.1f}x exact), recall@1 "
              f"{i8['recall_at_1']:.4f}, score err {100 * i8['score_rel_err_max']:.3f}%, patch err "
              f"{100 * i8['patch_dist_rel_err_mean']:.4f}%; image score alone (max_nn) p50 "
              f"{i8['max_nn_ms_p50']:.1f} / p90 {i8['max_nn_ms_p90']:.1f} ms, err {100 * i8['max_nn_score_rel_err_max']:.3f}%"
              f" (int8 bank vs float32 bank: score {100 * i8['bank_quantization_score_rel_err_max']:.3f}%)")
        print(f"{'':>7} build {r['hnsw_build_s']:.1f} s, index {r['hnsw_index_mib']:.1f} MiB")
    c = out.get("crossover")
    if c:
        print(f"\ncrossover (ef_search={c['ef_search']}):")
        for p in c["points"]:
            print(f"  {p['rows']:>8} rows  exact {p['exact_ms']:8.1f} ms  hnsw {p['hnsw_ms']:7.1f} ms"
                  f"  hnsw+max {p['hnsw_exact_max_ms']:7.1f} ms  int8 {p['int8_ms']:7.1f} ms")
        cr = c.get("crossover_rows_int8_vs_hnsw_exact_max")
        print(f"  hnsw+max faster than int8 above ~{cr:,.0f} rows" if cr else
              "  hnsw+max never faster than int8 in this range")
        for key, label in (("crossover_rows_hnsw", "hnsw"),
                           ("crossover_rows_hnsw_exact_max", "hnsw+max")):
            cr = c[key]
            print(f"  {label} faster above ~{cr:,.0f} rows" if cr else
                  f"  {label} never faster in this range")
    print("* = default ef_search; refined = queries re-searched exactly per frame (mean/max); "
          "score err = worst |hnsw - exact| / exact image score (max patch distance) over frames")


if __name__ == "__main__":
    sys.exit(main())
