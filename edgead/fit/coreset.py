"""Greedy k-center coreset selection for the PatchCore memory bank (Roth et al., 2022), in numpy.

Exact greedy farthest-point selection in a Johnson-Lindenstrauss projection. A row's stored
min-distance is exact against the first ``stamp`` centres, hence an upper bound against all of
them ("lazy greedy"): each epoch runs the greedy steps on the ``ACTIVE_POINTS`` rows with the
largest exact min-distance, and between epochs stale rows are brought up to date largest bound
first, only while their bound could reach the top. The selection equals the plain greedy
algorithm on the projected features up to float32 rounding ties.

Features may be a ``numpy.memmap`` (teach spills them to disk beyond its memory budget): they
are read in row blocks, and only the (N, proj_dim) projection is held in memory.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np

ACTIVE_POINTS = 4096   # rows taking part in the greedy steps of an epoch
REFRESH_CHUNK = 4096   # stale rows brought up to date per round between epochs
BLOCK_ROWS = 1024      # GEMM block: rows ...
BLOCK_COLS = 2048      # ... x centres
READ_ROWS = 4096       # feature rows read (and projected) at a time
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


def projection_matrix(dim: int, proj_dim: int | None, seed: int) -> np.ndarray | None:
    """The seeded Gaussian JL matrix (dim, proj_dim) ~ N(0, 1/proj_dim), or None (no projection)."""
    if not _projects(dim, proj_dim):
        return None
    rng = np.random.default_rng([seed, 1])
    return (rng.standard_normal((dim, proj_dim)) / math.sqrt(proj_dim)).astype(np.float32)


def project(features: np.ndarray, proj_dim: int | None = 128, seed: int = 0) -> np.ndarray:
    """The centred float32 rows greedy_coreset selects on (projected block by block)."""
    x = _check_features(features)
    p = projection_matrix(x.shape[1], proj_dim, seed)
    y = np.empty((x.shape[0], x.shape[1] if p is None else p.shape[1]), dtype=np.float32)
    for a in range(0, x.shape[0], READ_ROWS):
        block = np.asarray(x[a:a + READ_ROWS], dtype=np.float32)
        y[a:a + READ_ROWS] = block if p is None else block @ p
    y -= _rough_mean(y)
    return y


def greedy_coreset(features: np.ndarray, size: int, proj_dim: int | None = 128, seed: int = 0,
                   progress: bool = False, threads: int | None = None) -> CoresetResult:
    """Greedy k-center (minimax facility location) selection as in PatchCore: rows projected
    with a seeded Gaussian JL projection to proj_dim dims (none when proj_dim is None or >= D),
    start from a seeded random row, repeatedly add the row farthest from the selected set.

    size >= N returns every row with radius 0. BLAS runs on one thread meanwhile: the greedy
    steps are small GEMVs, and waking a BLAS pool for each one costs more than it brings
    (``threads`` is accepted for the workstation's signature). ``progress``: a bar on stderr."""
    t0 = time.perf_counter()
    x = _check_features(features)
    n, size = x.shape[0], int(size)
    if size < 1:
        raise ValueError(f"coreset size must be >= 1, got {size}")
    if proj_dim is not None and proj_dim < 1:
        raise ValueError(f"proj_dim must be >= 1 or None, got {proj_dim}")
    if size >= n:
        return CoresetResult(np.arange(n, dtype=np.int64), 0.0, 0.0, time.perf_counter() - t0)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        y = project(x, proj_dim, seed)
        if not np.isfinite(y).all():
            raise ValueError("features contain NaN or inf (or overflow in the projection)")
        state = _Greedy(y, size, _start_row(n, seed), _progress_bar(size) if progress else None)
        state.run()
        indices = np.asarray(state.sel, dtype=np.int64)
        del y
        radius = _original_radius(x, indices, state.assign)
    proj_radius = state.radius() if _projects(x.shape[1], proj_dim) else radius
    return CoresetResult(indices, float(radius), float(proj_radius), time.perf_counter() - t0)


def covering_radius(features: np.ndarray, selected: np.ndarray, chunk: int = 8192) -> float:
    """max_i min_j ||x_i - selected_j||, chunked BLAS (||a||^2 - 2ab + ||b||^2), refined at the argmin.

    selected: 1-D integer indices into features, or a 2-D array of rows.
    """
    x = _check_features(features)
    sel = np.asarray(selected)
    if sel.ndim == 1:
        if sel.size == 0 or not np.issubdtype(sel.dtype, np.integer):
            raise ValueError(f"selected must be non-empty integer indices or (M, D) rows, got {sel.dtype} {sel.shape}")
        s = np.asarray(x[sel.astype(np.int64)], dtype=np.float32)
    else:
        s = np.ascontiguousarray(sel, dtype=np.float32)
        if s.ndim != 2 or s.shape[1] != x.shape[1] or s.shape[0] == 0:
            raise ValueError(f"selected rows must be (M, {x.shape[1]}), got {tuple(s.shape)}")
    mean = _rough_mean(x)
    s = s - mean
    sn = np.einsum("ij,ij->i", s, s)
    best = 0.0
    for a in range(0, x.shape[0], max(1, chunk)):
        xa = np.asarray(x[a:a + max(1, chunk)], dtype=np.float32) - mean
        best = max(best, float(_min_sqdist(xa, s, sn, refine=True).max()))
    return math.sqrt(best)


# ----------------------------------------------------------------------------- helpers

def _progress_bar(total: int):
    from tqdm import tqdm  # the workstation's export shows it; teach never asks for one

    return tqdm(total=total, desc="coreset", unit="row", file=sys.stderr, mininterval=0.5)


def _check_features(features: np.ndarray) -> np.ndarray:
    x = features if isinstance(features, np.memmap) else np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
    if isinstance(x, np.memmap) and x.dtype == np.float32:
        return x
    return np.ascontiguousarray(x, dtype=np.float32)


def _projects(dim: int, proj_dim: int | None) -> bool:
    return proj_dim is not None and 0 < proj_dim < dim


def _start_row(n: int, seed: int) -> int:
    return int(np.random.default_rng([seed, 0]).integers(n))


def _rough_mean(x: np.ndarray) -> np.ndarray:
    """Mean of up to ~64k evenly spaced rows: centring for the expanded-form distances."""
    return np.asarray(x[:: max(1, x.shape[0] // 65536)], dtype=np.float64).mean(0).astype(np.float32)


def _min_sqdist(x: np.ndarray, c: np.ndarray, cn: np.ndarray, xn: np.ndarray | None = None,
                want_arg: bool = False, refine: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Row-wise min over c of ||x - c||^2 (expanded form, clipped at 0); optionally the argmin.

    refine: recompute the distance to the argmin as ||x - c||^2 (exact near 0, where the
    expanded form has an absolute error of ~1e-7 ||x||^2)."""
    best = np.full(x.shape[0], np.inf, dtype=np.float32)
    arg = np.zeros(x.shape[0], dtype=np.int64)
    rows = np.arange(x.shape[0])
    for b in range(0, c.shape[0], BLOCK_COLS):
        o = x @ c[b:b + BLOCK_COLS].T
        o *= -2
        o += cn[b:b + BLOCK_COLS]
        if want_arg or refine:
            idx = o.argmin(1)
            vals = o[rows, idx]
            np.putmask(arg, vals < best, idx + b)
        else:
            vals = o.min(1)
        np.minimum(best, vals, out=best)
    if refine:
        diff = x - c[arg]
        best = np.einsum("ij,ij->i", diff, diff)
    else:
        best += np.einsum("ij,ij->i", x, x) if xn is None else xn
        np.maximum(best, 0, out=best)
    return (best, arg) if want_arg else best


class _Greedy:
    """Exact lazy greedy k-center selection on projected rows y (N, d), squared distances.

    mind[i] is exact against the first stamp[i] centres, so an upper bound against all of them;
    rows are brought up to date only when their bound could reach the top of the ranking.
    """

    def __init__(self, y: np.ndarray, size: int, start: int, bar=None) -> None:
        self.y = y
        self.yn = np.einsum("ij,ij->i", y, y)
        self.n, self.size = y.shape[0], size
        self.sel: list[int] = []
        self.centres = np.empty((size, y.shape[1]), dtype=np.float32)
        self.cn = np.empty(size, dtype=np.float32)
        self.filled = 0                                   # centres[:filled] are set
        self.assign = np.zeros(self.n, dtype=np.int64)    # position in sel of the nearest known centre
        self.stamp = np.ones(self.n, dtype=np.int64)      # centres mind[i] is exact against
        c = y[start]
        self.mind = np.maximum(self.yn - 2 * (y @ c) + float(c @ c), 0).astype(np.float32)
        self.bar = bar
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

    def _add(self, row: int) -> None:
        self.sel.append(row)
        if self.bar is not None:
            self.bar.update(1)

    def radius(self) -> float:
        return math.sqrt(max(float(self.mind.max()), 0.0))

    def _settle(self, m: int) -> tuple[np.ndarray, float]:
        """Make the m largest min-distances exact, refreshing stale rows largest bound first.

        Returns those rows (sorted) and a bound on every other row's min-distance."""
        k = len(self.sel)
        new = np.asarray(self.sel[self.filled:k], dtype=np.int64)
        self.centres[self.filled:k] = self.y[new]
        self.cn[self.filled:k] = self.yn[new]
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
        for group, s in _stamp_groups(rows, self.stamp[rows], BLOCK_ROWS // 2):
            for a in range(0, len(group), BLOCK_ROWS):
                block = group[a:a + BLOCK_ROWS]
                d2, arg = _min_sqdist(self.y[block], self.centres[s:k], self.cn[s:k], self.yn[block], want_arg=True)
                cur = self.mind[block]
                closer = d2 < cur
                self.assign[block[closer]] = arg[closer] + s
                self.mind[block] = np.minimum(cur, d2)
        self.stamp[rows] = k

    def _epoch(self, act: np.ndarray, bound: float) -> None:
        """Greedy steps on the active rows while their max stays >= every other row's bound."""
        ya, yna = self.y[act], self.yn[act]
        ma, asg = self.mind[act], self.assign[act]
        steps = 0
        while len(self.sel) < self.size and len(act):
            j = int(ma.argmax())
            if not ma[j] >= bound:
                break
            row = int(act[j])
            d2 = yna - 2 * (ya @ self.y[row]) + self.yn[row]
            np.putmask(asg, d2 < ma, len(self.sel))
            np.minimum(ma, d2, out=ma)
            ma[j] = -np.inf
            self._add(row)
            steps += 1
            if steps % _COMPACT_EVERY == 0:
                alive = ma >= bound
                if alive.sum() < 0.75 * len(act):   # park dead rows: exact up to now, stale later
                    self._park(act, ma, asg)
                    act, ma, asg, yna, ya = act[alive], ma[alive], asg[alive], yna[alive], ya[alive]
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


def _original_radius(x: np.ndarray, selected: np.ndarray, assign: np.ndarray) -> float:
    """Exact max_i min_j ||x_i - x[selected_j]||, checking rows only while their upper bound
    u_i = ||x_i - x[selected[assign_i]]|| exceeds the best exact value found so far."""
    mean = _rough_mean(x)
    s = np.asarray(x[selected], dtype=np.float32) - mean
    sn = np.einsum("ij,ij->i", s, s)
    upper = np.empty(x.shape[0], dtype=np.float32)
    for a in range(0, x.shape[0], READ_ROWS):
        diff = (np.asarray(x[a:a + READ_ROWS], dtype=np.float32) - mean) - s[assign[a:a + READ_ROWS]]
        upper[a:a + READ_ROWS] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    order = np.argsort(-upper, kind="stable")
    best, a, batch = 0.0, 0, 64
    while a < len(order):
        rows = order[a:a + batch]
        a, batch = a + batch, min(1024, 2 * batch)
        rows = rows[upper[rows] > best]
        if len(rows) == 0:
            break
        rows = np.sort(rows)   # sequential reads of a memmap
        d2 = _min_sqdist(np.asarray(x[rows], dtype=np.float32) - mean, s, sn, refine=True)
        exact = np.minimum(np.sqrt(d2), upper[rows])     # both are distances to selected rows
        best = max(best, float(exact.max()))
    return best
