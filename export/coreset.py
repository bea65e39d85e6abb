"""Greedy k-center coreset selection for the PatchCore memory bank (Roth et al., 2022).

Exact greedy farthest-point selection in a Johnson-Lindenstrauss projection, made fast on a
few CPU cores without changing the result:

* Lazy epochs: only the ``ACTIVE_POINTS`` rows with the largest min-distance take part in each
  greedy step (a small, cache-resident GEMV). The other rows cannot be the argmax while the
  active maximum stays at or above their largest (stale, upper-bound) min-distance; when it
  drops below, the epoch ends and every other row is brought up to date against the epoch's
  new centres with one blocked GEMM instead of thousands of memory-bound GEMVs.
* Triangle-inequality pruning of that GEMM: rows are sorted into cells (nearest of the first
  ``CELL_COUNT`` centres) and annular blocks around each cell mean; a (block, centre) pair is
  skipped when the annulus bound shows the centre is farther than every row's min-distance.
* The original-space covering radius reuses the cells: each row's distance to its nearest
  centre in the projection is an upper bound, so only rows whose bound exceeds the best exact
  value found so far are compared, and only against centres the triangle inequality allows.

Selection equals the plain greedy algorithm on the projected features up to float32 rounding
ties (``tests/test_coreset.py`` checks it against a reference implementation).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

ACTIVE_POINTS = 4096   # rows taking part in each greedy step (per epoch)
CELL_COUNT = 512       # cells for the pruned refresh: nearest of the first CELL_COUNT centres
BLOCK_ROWS = 512       # max rows per annular block of a cell
_REL_MARGIN = 1e-5     # slack on triangle-inequality bounds for float rounding


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

    size >= N returns every row (np.arange(N)) with radius 0.
    """
    t0 = time.perf_counter()
    x = _check_features(features)
    n = x.shape[0]
    size = int(size)
    if size < 1:
        raise ValueError(f"coreset size must be >= 1, got {size}")
    if size >= n:
        return CoresetResult(np.arange(n, dtype=np.int64), 0.0, 0.0, time.perf_counter() - t0)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    try:
        with torch.no_grad():
            y = _project(x, proj_dim, seed)
            if not bool(torch.isfinite(y).all()):
                raise ValueError("features contain NaN or inf (or overflow in the projection)")
            start = _start_row(n, seed)
            state = _Greedy(y, size, start, progress)
            state.run()
            indices = state.selected_original()
            proj_radius = state.radius()
            projected = _projects(x.shape[1], proj_dim)
            radius = state.original_radius(x) if projected else proj_radius
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
        if sel.size == 0:
            raise ValueError("selected is empty")
        s = x[torch.from_numpy(sel.astype(np.int64))]
    else:
        s = torch.from_numpy(np.ascontiguousarray(sel, dtype=np.float32))
        if s.ndim != 2 or s.shape[1] != x.shape[1] or s.shape[0] == 0:
            raise ValueError(f"selected rows must be (M, {x.shape[1]}), got {tuple(s.shape)}")
    with torch.no_grad():
        mean = x.to(torch.float64).mean(0).to(torch.float32)
        s = s - mean
        sn = (s * s).sum(1)
        col = max(1, min(s.shape[0], (1 << 24) // max(1, chunk)))
        best = 0.0
        for a in range(0, x.shape[0], chunk):
            xa = x[a:a + chunk] - mean
            best = max(best, float(_min_sqdist(xa, s, sn, col).max()))
    return math.sqrt(max(best, 0.0))


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


def _project(x: np.ndarray, proj_dim: int | None, seed: int) -> torch.Tensor:
    """Centred (N, d) float32 tensor: x @ P with P ~ N(0, 1/proj_dim), or x itself."""
    xt = torch.from_numpy(x)
    if _projects(x.shape[1], proj_dim):
        rng = np.random.default_rng([seed, 1])
        p = rng.standard_normal((x.shape[1], proj_dim)) / math.sqrt(proj_dim)
        y = xt @ torch.from_numpy(p.astype(np.float32))
    else:
        y = xt.clone()
    y -= y.to(torch.float64).mean(0).to(torch.float32)
    return y


def _min_sqdist(x: torch.Tensor, c: torch.Tensor, cn: torch.Tensor, col: int,
                want_arg: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Row-wise min over c of ||x - c||^2 (expanded form, column-chunked); optionally the argmin."""
    xn = (x * x).sum(1)
    best = torch.full((x.shape[0],), math.inf)
    arg = torch.zeros(x.shape[0], dtype=torch.int64)
    for b in range(0, c.shape[0], col):
        d2 = torch.addmm(cn[b:b + col], x, c[b:b + col].T, alpha=-2)
        vals, idx = d2.min(1)
        better = vals < best
        best = torch.where(better, vals, best)
        if want_arg:
            arg = torch.where(better, idx + b, arg)
    best = (best + xn).clamp_(min=0)
    return (best, arg) if want_arg else best


def _segment_max(values: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Max of values over consecutive segments [bounds[i], bounds[i+1])."""
    lengths = bounds[1:] - bounds[:-1]
    return torch.segment_reduce(values, "max", lengths=lengths, unsafe=True)


@dataclass
class _Cells:
    """Rows sorted by cell; blocks are row slices (annuli around their cell's mean)."""
    centres: torch.Tensor      # (C, d) float64 cell means
    bounds: torch.Tensor       # (B+1,) int64 row offsets of the blocks
    cell_of_block: torch.Tensor  # (B,) int64
    rmin: torch.Tensor         # (B,) float64 min distance of a block's rows to its cell mean
    rmax: torch.Tensor         # (B,) float64 max distance
    row_cell: torch.Tensor     # (N,) int64 cell of each (sorted) row


class _Greedy:
    """State of the exact lazy greedy k-center selection on projected features y (N, d)."""

    def __init__(self, y: torch.Tensor, size: int, start: int, progress: bool) -> None:
        self.y = y.contiguous()
        self.yn = (self.y * self.y).sum(1)
        self.n = y.shape[0]
        self.size = size
        self.perm = torch.arange(self.n)           # sorted row -> original row
        self.sel: list[int] = []                    # sorted-row indices, selection order
        self.mind = torch.full((self.n,), math.inf)  # squared min-distance (exact at epoch ends)
        self.assign = torch.zeros(self.n, dtype=torch.int64)  # position in sel of nearest centre
        self.cells: _Cells | None = None
        self.bar = _progress_bar(size) if progress else None
        self._add_first(start)

    # --- main loop

    def _add_first(self, row: int) -> None:
        c = self.y[row]
        self.mind = (torch.addmv(self.yn, self.y, c, alpha=-2) + c.dot(c)).clamp_(min=0)
        self._mark(row)
        self.mind[row] = -math.inf

    def run(self) -> None:
        try:
            while len(self.sel) < self.size:
                new = self._epoch()
                self._refresh(new)
                if self.cells is None and len(self.sel) >= min(CELL_COUNT, self.size) and len(self.sel) < self.size:
                    self._build_cells()
        finally:
            if self.bar is not None:
                self.bar.close()

    def _mark(self, row: int) -> None:
        self.sel.append(row)
        if self.bar is not None:
            self.bar.update(1)

    def _epoch(self) -> list[int]:
        """Greedy steps on the active rows until their max drops below the rest's bound."""
        m = min(ACTIVE_POINTS, self.n)
        if m < self.n:
            vals, act = torch.topk(self.mind, m + 1, sorted=True)
            bound, act = float(vals[-1]), act[:m]
        else:
            bound, act = -math.inf, torch.arange(self.n)
        ya, yna, ma = self.y[act], self.yn[act], self.mind[act]
        asg = self.assign[act]
        buf = torch.empty(m)
        new: list[int] = []
        while len(self.sel) < self.size:
            j = int(torch.argmax(ma))
            if not float(ma[j]) >= bound:
                break
            row = int(act[j])
            pos = len(self.sel)
            self._mark(row)
            new.append(row)
            c = self.y[row]
            torch.addmv(yna, ya, c, alpha=-2, out=buf)
            buf += c.dot(c)
            closer = buf < ma
            ma = torch.where(closer, buf, ma)
            asg = torch.where(closer, pos, asg)
            ma[j] = -math.inf
        self.mind[act] = ma
        self.assign[act] = asg
        self._active = act
        return new

    def _refresh(self, new: list[int]) -> None:
        """Bring every non-active row up to date against the epoch's new centres."""
        if not new or self._active.shape[0] == self.n:
            return
        keep_m, keep_a = self.mind[self._active].clone(), self.assign[self._active].clone()
        first = len(self.sel) - len(new)
        c = self.y[new]
        cn = (c * c).sum(1)
        if self.cells is None:
            self._refresh_dense(c, cn, first)
        else:
            self._refresh_pruned(c, cn, first)
        self.mind[self._active] = keep_m
        self.assign[self._active] = keep_a

    def _update_rows(self, a: int, b: int, c: torch.Tensor, cn: torch.Tensor, cols: torch.Tensor | None,
                     first: int) -> None:
        d2, arg = _min_sqdist(self.y[a:b], c, cn, c.shape[0], want_arg=True)
        if cols is not None:
            arg = cols[arg]
        cur = self.mind[a:b]
        closer = d2 < cur
        self.mind[a:b] = torch.where(closer, d2, cur)
        self.assign[a:b] = torch.where(closer, arg + first, self.assign[a:b])

    def _refresh_dense(self, c: torch.Tensor, cn: torch.Tensor, first: int) -> None:
        step = max(256, (1 << 21) // max(1, c.shape[0]))
        for a in range(0, self.n, step):
            self._update_rows(a, min(self.n, a + step), c, cn, None, first)

    def _refresh_pruned(self, c: torch.Tensor, cn: torch.Tensor, first: int) -> None:
        cells = self.cells
        dcc = torch.cdist(cells.centres, c.to(torch.float64))[cells.cell_of_block]      # (B, k)
        lower = torch.maximum(dcc - cells.rmax[:, None], cells.rmin[:, None] - dcc)
        reach = _segment_max(self.mind.clamp(min=0), cells.bounds).to(torch.float64).sqrt()
        slack = _REL_MARGIN * (dcc + cells.rmax[:, None])
        ok = (lower - slack) < reach[:, None]
        blocks = torch.nonzero(ok.any(1)).flatten().tolist()
        bounds = cells.bounds.tolist()
        for b in blocks:
            cols = torch.nonzero(ok[b]).flatten()
            self._update_rows(bounds[b], bounds[b + 1], c[cols], cn[cols], cols, first)

    # --- cells

    def _build_cells(self) -> None:
        """Sort rows by nearest of the first CELL_COUNT centres, then by distance to the cell mean."""
        k0 = min(CELL_COUNT, len(self.sel))
        cen = self.y[self.sel[:k0]]
        _, cell = _min_sqdist(self.y, cen, (cen * cen).sum(1), k0, want_arg=True)
        counts = torch.bincount(cell, minlength=k0)
        sums = torch.zeros(k0, self.y.shape[1], dtype=torch.float64).index_add_(0, cell, self.y.to(torch.float64))
        means = sums / counts.clamp(min=1)[:, None]
        dist = (self.y - means[cell].to(torch.float32)).norm(dim=1)
        order = torch.from_numpy(np.lexsort((dist.numpy(), cell.numpy())))
        self._reorder(order)
        cell, dist = cell[order], dist[order].to(torch.float64)
        self.cells = _make_blocks(means, cell, dist, counts)

    def _reorder(self, order: torch.Tensor) -> None:
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(self.n)
        self.y, self.yn = self.y[order], self.yn[order]
        self.mind, self.assign = self.mind[order], self.assign[order]
        self.perm = self.perm[order]
        self.sel = inverse[torch.tensor(self.sel)].tolist()

    # --- results

    def selected_original(self) -> np.ndarray:
        return self.perm[torch.tensor(self.sel, dtype=torch.int64)].numpy().astype(np.int64)

    def radius(self) -> float:
        return math.sqrt(max(float(self.mind.max()), 0.0))

    def original_radius(self, x: np.ndarray) -> float:
        """Exact covering radius in the original space (pruned with the projected assignment)."""
        return _original_radius(x, self.perm, self.selected_original(), self.assign, self.cells)


def _make_blocks(means: torch.Tensor, cell: torch.Tensor, dist: torch.Tensor, counts: torch.Tensor) -> _Cells:
    """Split each cell (rows contiguous, sorted by dist) into annular blocks of <= BLOCK_ROWS rows."""
    starts, cob = [], []
    offset = 0
    for ci, cnt in enumerate(counts.tolist()):
        for a in range(0, cnt, BLOCK_ROWS):
            starts.append(offset + a)
            cob.append(ci)
        offset += cnt
    bounds = torch.tensor(starts + [offset], dtype=torch.int64)
    lengths = bounds[1:] - bounds[:-1]
    rmin = -torch.segment_reduce(-dist, "max", lengths=lengths, unsafe=True)
    rmax = torch.segment_reduce(dist, "max", lengths=lengths, unsafe=True)
    return _Cells(means, bounds, torch.tensor(cob, dtype=torch.int64), rmin, rmax, cell)


def _original_radius(x: np.ndarray, perm: torch.Tensor, selected: np.ndarray, assign: torch.Tensor,
                     cells: _Cells | None) -> float:
    """max_i min_j ||x_i - x_sel_j|| using upper bounds u_i = ||x_i - x_sel[assign_i]||."""
    if cells is None:
        return covering_radius(x, selected)
    xt = torch.from_numpy(x)
    mean = xt[:: max(1, xt.shape[0] // 65536)].to(torch.float64).mean(0).to(torch.float32)
    s = xt[torch.from_numpy(selected)] - mean
    sn = (s * s).sum(1)
    groups = _cell_groups(cells)
    upper, centres, radii = [], [], []
    for rows in groups:
        xb = xt[perm[rows]] - mean
        upper.append((xb - s[assign[rows]]).norm(dim=1))
        m = xb.to(torch.float64).mean(0)
        centres.append(m)
        radii.append(float((xb - m.to(torch.float32)).norm(dim=1).max()))
    best = 0.0
    umax = torch.tensor([float(u.max()) for u in upper])
    dcs = None
    for g in torch.argsort(umax, descending=True).tolist():
        if float(umax[g]) <= best:
            break
        hard = upper[g] > best
        rows = groups[g][hard]
        if dcs is None:
            dcs = torch.cdist(torch.stack(centres), s.to(torch.float64))        # (G, k)
        reach = radii[g] + float(upper[g][hard].max())
        cols = torch.nonzero(dcs[g] < reach * (1 + _REL_MARGIN)).flatten()
        xb = xt[perm[rows]] - mean
        d2 = _min_sqdist(xb, s[cols], sn[cols], max(1, (1 << 22) // max(1, xb.shape[0])))
        best = max(best, math.sqrt(float(d2.max())))
    return best


def _cell_groups(cells: _Cells) -> list[torch.Tensor]:
    """Row index ranges (sorted order) of each non-empty cell."""
    counts = torch.bincount(cells.row_cell, minlength=cells.centres.shape[0]).tolist()
    out, offset = [], 0
    for cnt in counts:
        if cnt:
            out.append(torch.arange(offset, offset + cnt))
        offset += cnt
    return out


def _progress_bar(total: int):
    from tqdm import tqdm
    return tqdm(total=total, desc="coreset", unit="row", file=sys.stderr, mininterval=0.5)
