"""Greedy k-center coreset selection for the PatchCore memory bank (Roth et al., 2022).

Exact greedy farthest-point selection in a Johnson-Lindenstrauss projection, made fast on a
few CPU cores without changing the result. A row's stored min-distance is exact against the
first ``stamp`` centres, hence an upper bound against all of them ("lazy greedy"):

* Epochs: only the ``ACTIVE_POINTS`` rows with the largest exact min-distance take part in the
  greedy steps (a small, cache-resident GEMV instead of a memory-bound pass over all N rows).
  No other row can be the argmax while the active maximum stays at or above the other rows'
  largest bound; when it drops below, the epoch ends. Rows that fall below the bound during
  the epoch are parked (made stale) to keep the GEMV small.
* Between epochs, stale rows are brought up to date largest bound first, against only the
  centres added since their stamp, until every remaining bound is below the new active set:
  blocked single-threaded GEMMs on a small thread pool (no per-call thread barriers, which
  collapse on a busy 2-core machine). Most rows fall below the final covering radius early and
  are never touched again: about 4x less arithmetic than refreshing every row every epoch.
* The original-space covering radius uses each row's distance to its (last known) nearest
  centre as an upper bound: rows are checked exactly, largest bound first, only while the bound
  exceeds the best exact value found so far.

Triangle-inequality (bucket) pruning does not pay here: on EfficientNet-Lite0 features the
covering radius is about as large as any cheap bucket radius, so most (bucket, centre) pairs
survive the bound, and the small GEMMs it leaves are slower than the dense ones.

The selection equals the plain greedy algorithm on the projected features up to float32
rounding ties (tests/test_coreset.py checks it against a reference implementation).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

ACTIVE_POINTS = 4096   # rows taking part in the greedy steps of an epoch
REFRESH_CHUNK = 4096   # stale rows brought up to date per round between epochs
BLOCK_ROWS = 1024      # GEMM block: rows ...
BLOCK_COLS = 2048      # ... x centres (an 8 MB float32 output stays in cache)
_COMPACT_EVERY = 128   # greedy steps between drops of dead active rows


@dataclass
class CoresetResult:
    indices: np.ndarray        # int64, indices into the input rows, in selection order
    covering_radius: float     # max over all rows of the distance (original space) to the nearest selected row
    projected_radius: float    # same, in the projected space used for the selection
    seconds: float


def coreset_size(n_rows: int, coreset: float | int) -> int:
    """coreset <= 1.0 (float) -> ratio of n_rows (at least 1); > 1 or int -> absolute count, capped at n_rows."""
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if isinstance(coreset, bool) or not isinstance(coreset, (int, float, np.integer, np.floating)):
        raise ValueError(f"coreset must be a number, got {coreset!r}")
    if not math.isfinite(coreset) or coreset <= 0:
        raise ValueError(f"coreset must be a positive ratio (<= 1) or count (> 1), got {coreset!r}")
    if isinstance(coreset, (int, np.integer)) or coreset > 1.0:
        size = int(round(coreset))
    else:
        size = max(1, int(round(float(coreset) * n_rows)))
    return min(size, n_rows)


def project(features: np.ndarray, proj_dim: int | None = 128, seed: int = 0) -> np.ndarray:
    """The centred float32 features greedy_coreset selects on (Gaussian JL projection, or none)."""
    return _project(_check_features(features), proj_dim, seed).numpy()


def greedy_coreset(features: np.ndarray, size: int, proj_dim: int | None = 128, seed: int = 0,
                   progress: bool = False, threads: int | None = None) -> CoresetResult:
    """Greedy k-center (minimax facility location) selection as in PatchCore (Roth et al.):
    features projected with a Johnson-Lindenstrauss Gaussian random projection to proj_dim dims
    (skip when proj_dim is None or >= D), start from a random row (seeded), repeatedly add the row
    farthest from the selected set. Deterministic for a fixed seed.

    size >= N returns every row (np.arange(N)) with radius 0. threads: worker threads
    (default torch.get_num_threads()); torch runs single-threaded inside them meanwhile.
    """
    t0 = time.perf_counter()
    x = _check_features(features)
    n = x.shape[0]
    size = int(size)
    if size < 1:
        raise ValueError(f"coreset size must be >= 1, got {size}")
    if proj_dim is not None and proj_dim < 1:
        raise ValueError(f"proj_dim must be >= 1 or None, got {proj_dim}")
    if size >= n:
        return CoresetResult(np.arange(n, dtype=np.int64), 0.0, 0.0, time.perf_counter() - t0)
    workers = max(1, int(threads)) if threads else torch.get_num_threads()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), _pool(workers) as pool:
            y = _project(x, proj_dim, seed, pool)
            if not bool(torch.isfinite(y).all()):
                raise ValueError("features contain NaN or inf (or overflow in the projection)")
            state = _Greedy(y, size, _start_row(n, seed), pool, progress)
            state.run()
            indices = np.asarray(state.sel, dtype=np.int64)
            radius = _original_radius(x, indices, state.assign, pool, workers)
            proj_radius = state.radius() if _projects(x.shape[1], proj_dim) else radius
    finally:
        torch.set_num_threads(old_threads)
    return CoresetResult(indices, float(radius), float(proj_radius), time.perf_counter() - t0)


def covering_radius(features: np.ndarray, selected: np.ndarray, chunk: int = 8192) -> float:
    """max_i min_j ||x_i - selected_j||, chunked BLAS (||a||^2 - 2ab + ||b||^2), clipped at 0.

    selected: 1-D integer indices into features, or a 2-D array of rows.
    """
    x = torch.from_numpy(_check_features(features))
    sel = np.asarray(selected)
    if sel.ndim == 1:
        if sel.size == 0 or not np.issubdtype(sel.dtype, np.integer):
            raise ValueError(f"selected must be non-empty integer indices or (M, D) rows, got {sel.dtype} {sel.shape}")
        s = x[torch.from_numpy(sel.astype(np.int64))]
    else:
        s = torch.from_numpy(np.ascontiguousarray(sel, dtype=np.float32))
        if s.ndim != 2 or s.shape[1] != x.shape[1] or s.shape[0] == 0:
            raise ValueError(f"selected rows must be (M, {x.shape[1]}), got {tuple(s.shape)}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), _pool(old_threads) as pool:
            mean = _rough_mean(x)
            s = s - mean
            sn = (s * s).sum(1)
            maxima: list[float] = []   # list.append is thread-safe
            for a in range(0, x.shape[0], max(1, chunk)):
                xa = x[a:a + chunk] - mean

                def work(i: int, j: int, xa: torch.Tensor = xa) -> None:
                    maxima.append(float(_min_sqdist(xa[i:j], s, sn, refine=True).max()))

                _map_blocks(work, xa.shape[0], BLOCK_ROWS, pool)
    finally:
        torch.set_num_threads(old_threads)
    return math.sqrt(max(maxima))


# ----------------------------------------------------------------------------- helpers

def _check_features(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _projects(dim: int, proj_dim: int | None) -> bool:
    return proj_dim is not None and 0 < proj_dim < dim


def _start_row(n: int, seed: int) -> int:
    return int(np.random.default_rng([seed, 0]).integers(n))


def _run(tasks: list[Callable[[], None]], pool: ThreadPoolExecutor | None) -> None:
    """Run the tasks on the pool (BLAS and numpy release the GIL), or inline without one."""
    if pool is None or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    for job in [pool.submit(task) for task in tasks]:
        job.result()


def _map_blocks(fn: Callable[[int, int], None], n: int, step: int, pool: ThreadPoolExecutor | None) -> None:
    """fn(a, b) over the row blocks [a, b) of [0, n)."""
    step = max(1, step)
    _run([lambda a=a: fn(a, min(n, a + step)) for a in range(0, n, step)], pool)


def _pool(workers: int) -> ThreadPoolExecutor | contextlib.nullcontext:
    return ThreadPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext()


def _project(x: np.ndarray, proj_dim: int | None, seed: int, pool: ThreadPoolExecutor | None = None) -> torch.Tensor:
    """Centred (N, d) float32 tensor: x @ P with P ~ N(0, 1/proj_dim), or a copy of x."""
    xt = torch.from_numpy(x)
    if _projects(x.shape[1], proj_dim):
        rng = np.random.default_rng([seed, 1])
        p = torch.from_numpy((rng.standard_normal((x.shape[1], proj_dim)) / math.sqrt(proj_dim)).astype(np.float32))
        y = torch.empty(x.shape[0], proj_dim)
        _map_blocks(lambda a, b: torch.mm(xt[a:b], p, out=y[a:b]), x.shape[0], 4096, pool)
    else:
        y = xt.clone()
    y -= _rough_mean(y)
    return y


def _rough_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of up to ~64k evenly spaced rows: centring for the expanded-form distances."""
    return x[:: max(1, x.shape[0] // 65536)].to(torch.float64).mean(0).to(torch.float32)


def _min_sqdist(x: torch.Tensor, c: torch.Tensor, cn: torch.Tensor, xn: np.ndarray | None = None,
                want_arg: bool = False, refine: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Row-wise min over c of ||x - c||^2 (expanded form, clipped at 0); optionally the argmin.

    refine: recompute the distance to the argmin as ||x - c||^2 (exact near 0, where the
    expanded form has an absolute error of ~1e-7 ||x||^2)."""
    best = np.full(x.shape[0], np.inf, dtype=np.float32)
    arg = np.zeros(x.shape[0], dtype=np.int64)
    rows = np.arange(x.shape[0])
    buf = torch.empty(x.shape[0], min(BLOCK_COLS, c.shape[0]))
    for b in range(0, c.shape[0], BLOCK_COLS):
        out = buf[:, :min(BLOCK_COLS, c.shape[0] - b)]
        torch.addmm(cn[b:b + BLOCK_COLS], x, c[b:b + BLOCK_COLS].T, alpha=-2, out=out)
        o = out.numpy()             # numpy row reductions: much faster than torch's on CPU
        if want_arg or refine:
            idx = o.argmin(1)
            vals = o[rows, idx]
            np.putmask(arg, vals < best, idx + b)
        else:
            vals = o.min(1)
        np.minimum(best, vals, out=best)
    if refine:
        best = (x - c[torch.from_numpy(arg)]).square().sum(1).numpy()
    else:
        best += (x * x).sum(1).numpy() if xn is None else xn
        np.maximum(best, 0, out=best)
    return (best, arg) if want_arg else best


class _Greedy:
    """Exact lazy greedy k-center selection on projected features y (N, d), squared distances.

    mind[i] is exact against the first stamp[i] centres, so an upper bound against all of them;
    rows are brought up to date only when their bound could reach the top of the ranking.
    """

    def __init__(self, y: torch.Tensor, size: int, start: int, pool: ThreadPoolExecutor | None,
                 progress: bool) -> None:
        self.y = y.contiguous()
        self.yn = (self.y * self.y).sum(1).numpy()
        self.n, self.size, self.pool = y.shape[0], size, pool
        self.sel: list[int] = []
        self.centres = torch.empty(size, y.shape[1])     # selected rows, contiguous
        self.cn = torch.empty(size)
        self.filled = 0                                   # centres[:filled] are set
        self.assign = np.zeros(self.n, dtype=np.int64)    # position in sel of the nearest known centre
        self.stamp = np.ones(self.n, dtype=np.int64)      # centres mind[i] is exact against
        self.bar = _progress_bar(size) if progress else None
        c = self.y[start]
        self.mind = (self.yn - 2 * (self.y @ c).numpy() + float(c.dot(c))).clip(min=0)
        self._add(start)
        self.mind[start] = -np.inf   # selected rows are never picked again

    def run(self) -> None:
        try:
            while len(self.sel) < self.size:
                before = len(self.sel)
                self._epoch(*self._settle(min(ACTIVE_POINTS, self.n)))
                if len(self.sel) == before:    # cannot happen: the top row is exact and >= bound
                    raise RuntimeError("coreset selection made no progress (internal error)")
            self._settle(1)          # the largest min-distance exact: the covering radius
        finally:
            if self.bar is not None:
                self.bar.close()

    def radius(self) -> float:
        return math.sqrt(max(float(self.mind.max()), 0.0))

    def _add(self, row: int) -> None:
        self.sel.append(row)
        if self.bar is not None:
            self.bar.update(1)

    def _settle(self, m: int) -> tuple[np.ndarray, float]:
        """Make the m largest min-distances exact, refreshing stale rows largest bound first.

        Returns those rows (sorted) and a bound on every other row's min-distance."""
        k = len(self.sel)
        new = torch.tensor(self.sel[self.filled:k], dtype=torch.int64)
        self.centres[self.filled:k] = self.y[new]
        self.cn[self.filled:k] = torch.from_numpy(self.yn[new.numpy()])
        self.filled = k
        stale = np.flatnonzero(self.stamp < k)
        stale = stale[np.argsort(-self.mind[stale], kind="stable")]
        top = self._mth_exact(m)
        for a in range(0, len(stale), REFRESH_CHUNK):
            rows = stale[a:a + REFRESH_CHUNK]
            rows = rows[self.mind[rows] > top]
            if len(rows) == 0:
                break               # sorted: every remaining bound is <= top as well
            self._refresh(rows)
            top = self._mth_exact(m)
        exact = np.flatnonzero(self.stamp == k)
        if len(exact) > m:
            exact = exact[np.argpartition(self.mind[exact], len(exact) - m)[len(exact) - m:]]
        rest = self.mind.copy()
        rest[exact] = -np.inf
        return np.sort(exact), float(rest.max())

    def _mth_exact(self, m: int) -> float:
        """The m-th largest exact min-distance (-inf if fewer than m rows are exact)."""
        vals = self.mind[self.stamp == len(self.sel)]
        return float(np.partition(vals, len(vals) - m)[len(vals) - m]) if len(vals) >= m else -math.inf

    def _refresh(self, rows: np.ndarray) -> None:
        """Bring rows up to date: each against the centres added since its stamp (blocked GEMMs)."""
        k = len(self.sel)

        def work(block: np.ndarray, s: int) -> None:
            d2, arg = _min_sqdist(self.y[torch.from_numpy(block)], self.centres[s:k], self.cn[s:k],
                                  self.yn[block], want_arg=True)
            cur = self.mind[block]
            closer = d2 < cur
            self.assign[block[closer]] = arg[closer] + s
            self.mind[block] = np.minimum(cur, d2)

        tasks = [lambda b=group[a:a + BLOCK_ROWS], s=s: work(b, s)
                 for group, s in _stamp_groups(rows, self.stamp[rows], BLOCK_ROWS // 2)
                 for a in range(0, len(group), BLOCK_ROWS)]
        _run(tasks, self.pool)
        self.stamp[rows] = k

    def _epoch(self, act: np.ndarray, bound: float) -> None:
        """Greedy steps on the active rows while their max stays >= every other row's bound."""
        ya, yna = self.y[torch.from_numpy(act)], self.yn[act]
        ma, asg = self.mind[act], self.assign[act]
        buf = torch.empty(len(act))
        steps = 0
        while len(self.sel) < self.size and len(act):
            j = int(ma.argmax())
            if not ma[j] >= bound:
                break
            row = int(act[j])
            c = self.y[row]
            torch.mv(ya, c, out=buf)
            d2 = yna - 2 * buf.numpy() + self.yn[row]
            np.putmask(asg, d2 < ma, len(self.sel))
            np.minimum(ma, d2, out=ma)
            ma[j] = -np.inf
            self._add(row)
            steps += 1
            if steps % _COMPACT_EVERY == 0:
                alive = ma >= bound
                if alive.sum() < 0.75 * len(act):   # park dead rows: exact up to now, stale later
                    self._park(act, ma, asg)
                    act, ma, asg, yna = act[alive], ma[alive], asg[alive], yna[alive]
                    ya, buf = ya[torch.from_numpy(alive)], torch.empty(len(act))
        self._park(act, ma, asg)

    def _park(self, act: np.ndarray, ma: np.ndarray, asg: np.ndarray) -> None:
        self.mind[act], self.assign[act], self.stamp[act] = ma, asg, len(self.sel)


def _stamp_groups(rows: np.ndarray, stamps: np.ndarray, min_rows: int) -> list[tuple[np.ndarray, int]]:
    """Rows grouped by stamp, small groups merged into the next larger stamp's group under the
    smaller stamp (recomputing a few centres twice is harmless and beats tiny GEMMs)."""
    order = np.argsort(stamps, kind="stable")
    rows, stamps = rows[order], stamps[order]
    cuts = np.flatnonzero(np.diff(stamps)) + 1
    groups, start = [], 0
    for end in [*cuts.tolist(), len(rows)]:
        if end - start >= min_rows or end == len(rows):
            groups.append((rows[start:end], int(stamps[start])))
            start = end
    return groups


def _original_radius(x: np.ndarray, selected: np.ndarray, assign: np.ndarray, pool: ThreadPoolExecutor | None,
                     workers: int) -> float:
    """Exact max_i min_j ||x_i - x[selected_j]||, checking rows only while their upper bound
    u_i = ||x_i - x[selected[assign_i]]|| exceeds the best exact value found so far."""
    xt = torch.from_numpy(x)
    mean = _rough_mean(xt)
    s = xt[torch.from_numpy(selected)] - mean
    sn = (s * s).sum(1)
    upper = np.empty(x.shape[0], dtype=np.float32)

    def bound(a: int, b: int) -> None:
        upper[a:b] = ((xt[a:b] - mean) - s[torch.from_numpy(assign[a:b])]).norm(dim=1).numpy()

    _map_blocks(bound, x.shape[0], 4096, pool)
    order = np.argsort(-upper, kind="stable")
    best, a, batch = 0.0, 0, 64
    while a < len(order):
        rows = order[a:a + batch]
        a, batch = a + batch, min(1024, 2 * batch)
        rows = rows[upper[rows] > best]
        if len(rows) == 0:
            break
        xb = xt[torch.from_numpy(rows)] - mean
        d2 = np.empty(len(rows), dtype=np.float32)

        def work(i: int, j: int, xb: torch.Tensor = xb, d2: np.ndarray = d2) -> None:
            d2[i:j] = _min_sqdist(xb[i:j], s, sn, refine=True)

        _map_blocks(work, len(rows), -(-len(rows) // workers), pool)
        exact = np.minimum(np.sqrt(d2), upper[rows])     # both are distances to selected rows
        best = max(best, float(exact.max()))
    return best


def _progress_bar(total: int):
    from tqdm import tqdm
    return tqdm(total=total, desc="coreset", unit="row", file=sys.stderr, mininterval=0.5)
