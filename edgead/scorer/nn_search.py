"""Nearest-neighbour search over the PatchCore memory bank.

Two backends share one small interface (:class:`NearestNeighbourSearch`):

* :class:`ExactSearch` -- brute force with float32 BLAS.  Squared distances are expanded as
  ``||q||^2 - 2 q.m^T + ||m||^2`` with the bank norms precomputed once; the bank is walked in
  blocks so that the scratch buffer stays a few MiB whatever the bank size (a full
  ``(queries x bank)`` matrix would be 300 MiB for one frame against a 100k bank).  The
  expanded form is only used to *select* the neighbours; the returned distances are then
  recomputed directly from ``q - m`` for the k winners, so they carry no cancellation error
  (a query equal to a bank row gives exactly 0, not ``sqrt(rounding noise)``).
* :class:`HnswSearch` -- approximate search with an hnswlib HNSW graph (``'l2'`` space).  The
  index is normally built on the workstation (:func:`build_hnsw_index`) and shipped in the
  artifact; it is validated against the bank before use.

:func:`make_search` picks one (``backend="auto"`` uses :func:`choose_backend`).

All distances returned are Euclidean (not squared), float32; indices are int64 rows of the bank.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from edgead.errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "HNSW_CROSSOVER",
    "BACKENDS",
    "DEFAULT_HNSW_PARAMS",
    "NearestNeighbourSearch",
    "ExactSearch",
    "HnswSearch",
    "build_hnsw_index",
    "certify_top",
    "choose_backend",
    "make_search",
]

# Bank size (rows) above which backend="auto" uses the HNSW index (when the artifact has one), and
# export builds one; below it the int8 search (edgead.scorer.int8_search), which beats both the
# float32 exact search (3-4x) and hnsw while its image scores stay exact and its maps near-exact.
#
# Measured with bench/bench_search.py on the development machine (AMD EPYC Zen 4, AVX-512 VNNI,
# onnxruntime 1.32 MLAS, OpenBLAS 0.3.31; --clock cpu, best of 2): one thread, one 224 px
# EfficientNet-Lite0 frame = 784 patch vectors, D=152, k=1, hnsw = HnswSearch defaults (M=16,
# ef_search=16, exact max).  ms per frame; "int8 max" = the image score alone (max_nn, p50):
#
#     bank rows           1.4k    5k    10k   14.1k    50k    100k
#     exact fp32           3.2  10.4   21.1   29.7   103.0   211.4
#     hnsw + exact max     5.9   7.7    8.6   11.0    38.8    54.8
#     int8 (every patch)   1.0   2.7    5.3    7.3    26.0    50.6
#     int8 max             0.7   0.8    2.7    1.1    11.8    22.9
#
# (1.4k / 5k / 14.1k: real magnetic-tile Lite0 features, greedy-ordered bank; 10k / 50k / 100k:
# the synthetic mixture.)  int8 is at least as fast as hnsw up to 100k rows, with recall@1
# 0.98-1.00 against hnsw's 0.94-0.96 (whose anomaly maps are 6-12 % off at 50k-100k), so hnsw
# only takes over above that (export's --coreset-max caps banks at 20k by default).
HNSW_CROSSOVER: int = 100_000

# Defaults for build_hnsw_index / HnswSearch.  bench/bench_search.py at a 100k-row bank, one
# thread, 784 x 152 frame, ms per frame (recall@1 and worst image-score error over the frames):
#
#                       exact   hnsw ef=16 (plain)              hnsw ef=16 + exact max (default)
#   real features       281.9   25.9  10.9x  0.963  1.9 %       45.1   6.2x  0.963  0.000 %
#   synthetic mixture   277.4   51.3   5.4x  0.959  223 %       76.8   3.6x  0.960  0.000 %
#
# Plain hnswlib misses on single patches are what breaks the image score (a max over 784
# patches): it needs ef_search >= 64 for < 1 % on the real features (2.6x at 100k) and no ef up
# to 128 brings it under 1 % on the synthetic mixture, hence exact_max.  With it, ef_search only
# trades speed against anomaly-map fidelity (mean patch-distance error 0.15 % at ef=16 on real
# features).  M=8/12 were faster on the real features but much worse on the synthetic mixture
# (recall 0.85/0.91 at ef=16); M=32 was slower at equal recall.
DEFAULT_HNSW_PARAMS: dict = {"M": 16, "ef_construction": 200, "ef_search": 16, "seed": 0}

_HNSW_PARAM_KEYS = ("M", "ef_construction", "ef_search", "seed")

# The values of make_search(backend=...): "auto" picks with choose_backend.
BACKENDS = ("auto", "int8", "exact", "hnsw")

# Scratch memory of ExactSearch: (query chunk x bank block) float32.  4 MiB keeps the block in
# L2/L3 and costs <10 % against one giant GEMM on x86 while the giant buffer would be hundreds
# of MiB on a 1 GB Pi.
_EXACT_BLOCK_BYTES = 4 << 20

# ExactSearch: up to this many queries, GEMM as bank @ q^T (see _block_scores).
_FEW_QUERIES = 64

# HnswSearch(exact_max=True): queries re-searched exactly in the first certification round
# (16 queries cost ~5 % of a brute-force frame at 100k rows; on real features it always sufficed).
_REFINE_FIRST = 16


@runtime_checkable
class NearestNeighbourSearch(Protocol):
    """What the scorer needs from a nearest-neighbour backend."""

    name: str  # "exact" or "hnsw"

    def query(self, queries: np.ndarray, k: int = 1, certify: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """queries float32 (Q, D) -> (distances (Q, k) float32 Euclidean, indices (Q, k) int64),
        each row sorted ascending.  An approximate backend makes the ``certify`` largest
        nearest-neighbour distances of the batch exact (k == 1): the PatchCore image score."""
        ...

    def distances_to(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Euclidean distances from one query (D,) to bank rows ``rows`` -> float32 (len(rows),)."""
        ...

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Bank rows ``rows`` as float32 (len(rows), D)."""
        ...


# --------------------------------------------------------------------------------------------
# helpers


def _as_bank(bank: np.ndarray) -> np.ndarray:
    """The bank as a C-contiguous, read-only float32 (N, D) array: converted (one copy) from
    float16/float64, or a read-only *view* of the caller's array when it is already float32."""
    arr = np.asarray(bank)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ArtifactError(f"memory bank must be a non-empty 2-D array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating)):
        raise ArtifactError(f"memory bank must be a floating-point array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        # e.g. a float16 overflow at export time: every distance to that row would be inf/nan
        raise ArtifactError("memory bank contains non-finite values (inf/nan)")
    view = arr.view()
    view.flags.writeable = False
    return view


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q.reshape(1, -1)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (Q, {dim}), got {np.shape(queries)}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise ValueError("queries contain non-finite values (inf/nan)")
    return q


def _check_k(k: int, rows: int) -> int:
    k = int(k)
    if k < 1 or k > rows:
        raise ValueError(f"k must be in [1, {rows}] (bank rows), got {k}")
    return k


def _as_rows(rows: np.ndarray, n: int) -> np.ndarray:
    r = np.asarray(rows).reshape(-1)
    if r.size and not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"rows must be integers, got dtype {r.dtype}")
    r = r.astype(np.int64, copy=False)
    if r.size and (r.min() < 0 or r.max() >= n):
        raise IndexError(f"bank row index out of range [0, {n})")
    return r


def _direct_distances(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Euclidean distances ``||vectors - query||`` along the last axis, float32, no cancellation."""
    diff = vectors - query
    return np.sqrt(np.einsum("...d,...d->...", diff, diff)).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# exact


class ExactSearch:
    """Brute-force nearest neighbours with float32 BLAS.

    Queries are processed ``chunk`` at a time (one 784-patch frame fits in the default 1024,
    which matters: each chunk streams the whole bank through the cache once).  Within a chunk
    the bank is walked in blocks of ``block`` rows; by default as many rows as fit a 4 MiB
    scratch buffer for the actual number of queries (1337 rows for a 784-patch frame, the whole
    bank for a handful of queries), so the scratch stays cache-sized instead of
    ``queries x bank``.  k=1 keeps a running argmin over the blocks, k>1 a running argpartition.
    Scratch buffers are allocated once here and reused; a lock makes :meth:`query` safe to call
    from several threads (calls are serialised).

    Memory: the float32 bank (a view of the caller's array if it already is contiguous float32,
    otherwise one converted copy), its N half squared norms, and the scratch buffer.
    """

    name = "exact"

    def __init__(self, bank: np.ndarray, chunk: int = 1024, *, block: int | None = None):
        self.bank = _as_bank(bank)
        n, d = self.bank.shape
        self.rows, self.dim = int(n), int(d)
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.chunk = int(chunk)
        if block is not None and int(block) < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.block = None if block is None else int(min(int(block), self.rows))
        if self.block is None:  # per call: as many bank rows as fit the scratch for that many queries
            scratch = max(_EXACT_BLOCK_BYTES // 4, self.chunk * 256)
        else:
            scratch = self.chunk * self.block
        scratch = min(scratch, self.chunk * self.rows)
        # 0.5*||m||^2: argmin_m ||q-m||^2 == argmin_m (0.5*||m||^2 - q.m), one pass less per block
        self._half_norms = 0.5 * np.einsum("ij,ij->i", self.bank, self.bank, dtype=np.float32)
        self._buf = np.empty(scratch, dtype=np.float32)
        self._best_val = np.empty(self.chunk, dtype=np.float32)
        self._best_idx = np.empty(self.chunk, dtype=np.int64)
        self._mask = np.empty(self.chunk, dtype=bool)
        self._arange = np.arange(self.chunk)
        self._lock = threading.Lock()

    # -- public API -----------------------------------------------------------------------------
    def query(self, queries: np.ndarray, k: int = 1, certify: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Exact already: ``certify`` has nothing to do."""
        q = _as_queries(queries, self.dim)
        k = _check_k(k, self.rows)
        nq = q.shape[0]
        out_d = np.empty((nq, k), dtype=np.float32)
        out_i = np.empty((nq, k), dtype=np.int64)
        with self._lock:
            for s in range(0, nq, self.chunk):
                e = min(nq, s + self.chunk)
                qc = q[s:e]
                if k == 1:
                    idx = self._argmin_chunk(qc)[:, None]
                else:
                    idx = self._topk_chunk(qc, k)
                dist = _direct_distances(qc[:, None, :], self.bank[idx])
                if k > 1:  # re-sort on the exact distances (near-ties may swap)
                    order = np.argsort(dist, axis=1, kind="stable")
                    dist = np.take_along_axis(dist, order, axis=1)
                    idx = np.take_along_axis(idx, order, axis=1)
                out_d[s:e] = dist
                out_i[s:e] = idx
        return out_d, out_i

    def distances_to(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        q = _as_queries(query, self.dim)[0]
        r = _as_rows(rows, self.rows)
        return _direct_distances(q, self.bank[r])

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.bank[np.asarray(rows)]

    # -- internals ------------------------------------------------------------------------------
    def _block_rows(self, n: int, buffers: int = 1) -> int:
        """Bank rows per block for a chunk of ``n`` queries (the scratch holds n x block)."""
        if self.block is not None:
            return self.block
        return int(min(self.rows, max(1, self._buf.size // (max(1, n) * buffers))))

    def _block_scores(self, qc: np.ndarray, c0: int, c1: int) -> np.ndarray:
        """(n, c1-c0) float32 scores 0.5||m||^2 - q.m for bank rows [c0, c1), in the scratch buffer."""
        n, m = qc.shape[0], c1 - c0
        buf = self._buf[: n * m].reshape(n, m)  # contiguous, as BLAS wants it
        if n <= _FEW_QUERIES and self._buf.size >= 2 * n * m:
            # few queries (HnswSearch's exact re-check): bank-major GEMM is 1.2-1.7x faster here
            # with OpenBLAS (measured for 4-64 queries); transpose while subtracting
            tmp = self._buf[n * m: 2 * n * m].reshape(m, n)
            np.matmul(self.bank[c0:c1], qc.T, out=tmp)
            np.subtract(self._half_norms[c0:c1], tmp.T, out=buf)
            return buf
        np.matmul(qc, self.bank[c0:c1].T, out=buf)
        np.subtract(self._half_norms[c0:c1], buf, out=buf)
        return buf

    def _argmin_chunk(self, qc: np.ndarray) -> np.ndarray:
        n = qc.shape[0]
        best_v, best_i, mask = self._best_val[:n], self._best_idx[:n], self._mask[:n]
        best_v.fill(np.inf)
        best_i.fill(0)
        ar = self._arange[:n]
        block = self._block_rows(n, 2 if n <= _FEW_QUERIES else 1)
        for c0 in range(0, self.rows, block):
            c1 = min(self.rows, c0 + block)
            buf = self._block_scores(qc, c0, c1)
            a = buf.argmin(axis=1)
            v = buf[ar, a]
            np.less(v, best_v, out=mask)
            np.copyto(best_v, v, where=mask)
            a += c0
            np.copyto(best_i, a, where=mask)
        return best_i.copy()

    def _topk_chunk(self, qc: np.ndarray, k: int) -> np.ndarray:
        n = qc.shape[0]
        run_v = np.full((n, k), np.inf, dtype=np.float32)
        run_i = np.zeros((n, k), dtype=np.int64)
        block = self._block_rows(n, 2 if n <= _FEW_QUERIES else 1)
        for c0 in range(0, self.rows, block):
            c1 = min(self.rows, c0 + block)
            buf = self._block_scores(qc, c0, c1)
            if c1 - c0 > k:
                cand = np.argpartition(buf, k - 1, axis=1)[:, :k]
            else:
                cand = np.broadcast_to(np.arange(c1 - c0), (n, c1 - c0))
            vals = np.take_along_axis(buf, cand, axis=1)
            all_v = np.concatenate((run_v, vals), axis=1)
            all_i = np.concatenate((run_i, cand + c0), axis=1)
            keep = np.argpartition(all_v, k - 1, axis=1)[:, :k]
            run_v = np.take_along_axis(all_v, keep, axis=1)
            run_i = np.take_along_axis(all_i, keep, axis=1)
        return run_i


def certify_top(measure: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], dist: np.ndarray,
                idx: np.ndarray, *, k: int = 1, exact: np.ndarray | None = None,
                first: int = _REFINE_FIRST, later: int | None = None) -> int:
    """Make the ``k`` largest of a batch's NN distances exact (in place); return how many queries
    were measured.

    ``dist[i]`` must be an upper bound of query i's true NN distance (an approximate search's
    distance to its row ``idx[i]``, or a bound); ``exact`` marks the queries already measured.
    ``k`` is clamped to [1, len(dist)].  ``measure(rows)`` returns the exact (distances, neighbour rows) of those
    queries.  Round 1 measures the ``first`` largest unmeasured queries; each later round up to
    ``later`` (None: all) of those whose bound still exceeds the k-th largest exact distance.
    Afterwards no unmeasured query can enter the top k: its true distance <= its bound <= that
    k-th distance, so the k largest -- the PatchCore image score -- and their patches and
    neighbours are exactly what brute force gives.
    """
    exact = np.zeros(len(dist), dtype=bool) if exact is None else exact
    k = max(1, min(int(k), len(dist)))
    refined, batch = 0, first
    while True:
        kth = np.partition(dist[exact], -k)[-k] if exact.sum() >= k else -np.inf
        cand = np.flatnonzero(~exact & (dist > kth))
        if not cand.size:
            return refined
        take = cand[np.argsort(-dist[cand], kind="stable")[:batch]]
        dist[take], idx[take] = measure(take)
        exact[take] = True
        refined += len(take)
        batch = later


# --------------------------------------------------------------------------------------------
# hnsw

# hnswlib (0.8.x) index file header, little-endian, 64-bit size_t:
# offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset, offsetData
# (size_t x6), maxlevel (int), enterpoint_node (uint32), maxM, maxM0, M (size_t x3), mult (double),
# ef_construction (size_t).  Element data sits between offsetData and label_offset.
_HNSW_HEADER = struct.Struct("<6QiI3QdQ")


def _read_hnsw_header(path: Path) -> dict:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(_HNSW_HEADER.size)
    except OSError as exc:
        raise ArtifactError(f"cannot read HNSW index {path}: {exc.strerror or exc}") from exc
    if len(raw) < _HNSW_HEADER.size:
        raise ArtifactError(f"HNSW index {path} is truncated or not an hnswlib index ({size} bytes)")
    (off0, max_el, count, per_el, label_off, data_off, maxlevel, entry, max_m, max_m0, m, _mult,
     efc) = _HNSW_HEADER.unpack(raw)
    ok = (
        off0 == 0
        and 0 < count <= max_el
        and 0 < data_off < label_off
        and per_el == label_off + 8
        and data_off == max_m0 * 4 + 4
        and max_m0 == 2 * m
        and max_m == m
        and 0 < m < 10_000
        and 0 <= maxlevel < 64
        and entry < count
        and size >= _HNSW_HEADER.size + count * (per_el + 4)
    )
    if not ok:
        raise ArtifactError(f"HNSW index {path} is corrupt or not an hnswlib index (bad header)")
    return {"count": int(count), "data_bytes": int(label_off - data_off), "M": int(m),
            "maxM0": int(max_m0), "per_element": int(per_el), "maxlevel": int(maxlevel),
            "ef_construction": int(efc), "size": int(size)}


def _check_hnsw_links(path: Path, h: dict) -> None:
    """Check the graph structure of an hnswlib file before hnswlib reads it: link-list sizes and
    every neighbour id in range.  hnswlib itself does not check the ids, and an out-of-range id
    in a damaged file would make queries read out of bounds (crash) instead of failing here."""
    n, m, m0, per = h["count"], h["M"], h["maxM0"], h["per_element"]
    bad = ArtifactError(f"HNSW index {path} is corrupt (inconsistent graph links)")
    start1 = _HNSW_HEADER.size + n * per
    try:
        level0 = np.memmap(path, dtype=np.uint8, mode="r", offset=_HNSW_HEADER.size,
                           shape=(n, per))
        links0 = np.ascontiguousarray(level0[:, : 4 + 4 * m0]).view("<u4")  # (n, 1 + maxM0)
        del level0
        with open(path, "rb") as f:
            f.seek(start1)
            tail = f.read()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read HNSW index {path}: {exc}") from exc
    cnt0 = links0[:, 0] & 0xFFFF  # low 16 bits: neighbour count (byte 2: deleted mark)
    if (cnt0 > m0).any():
        raise bad
    used = np.arange(m0)[None, :] < cnt0[:, None]
    if (links0[:, 1:][used] >= n).any():
        raise bad
    del links0, used
    # upper levels: per element a uint32 byte size, then `level` blocks of (count, maxM ids)
    block = 4 + 4 * m
    starts, off, unpack = [], 0, struct.Struct("<I").unpack_from
    try:
        for _ in range(n):
            sz = unpack(tail, off)[0]
            off += 4
            if sz:
                if sz % block or sz // block > h["maxlevel"]:
                    raise bad
                starts.extend(range(off, off + sz, block))
                off += sz
    except struct.error:
        raise bad from None
    if off != len(tail):
        raise bad
    if starts:
        words = np.frombuffer(tail, dtype="<u4")
        first = np.asarray(starts, dtype=np.int64) // 4
        cnt = words[first] & 0xFFFF
        if (cnt > m).any():
            raise bad
        ids = words[first[:, None] + 1 + np.arange(m)[None, :]]
        if (ids[np.arange(m)[None, :] < cnt[:, None]] >= n).any():
            raise bad


class HnswSearch:
    """Approximate nearest neighbours with an hnswlib HNSW graph ('l2' space).

    With ``index_path`` the index is loaded and checked against ``bank`` (header, graph links,
    element count, dimension, labels 0..N-1, and a sample of stored vectors); any mismatch or
    unreadable file raises :class:`ArtifactError` naming the file.  Without it the index is built
    here (slow on a Pi for a large bank: build it on the workstation with
    :func:`build_hnsw_index`).  ``threads`` is the number of hnswlib query threads (1: the
    calling thread does the work).

    ``exact_max`` (default): for ``k == 1`` the largest distance of each query batch -- the
    PatchCore image score -- and its neighbour are made exact: a graph search that gets stuck
    far from the true neighbour (rare, but it happens on clustered banks, and the image score is
    a max over 784 patches, so one bad patch decides it) can only *over*-estimate a distance, so
    the patches with the largest HNSW distances are re-searched by brute force until the
    maximum is certified (see :func:`certify_top`: at most two passes over the bank; on real
    features one pass for 16 patches, ~15 ms at 100k rows on the dev machine).  Other patches
    keep their HNSW distances (anomaly map).  The re-check is brute force over the float32 bank,
    kept in memory next to the index's own copy (a view if the caller's bank already is
    float32, else a converted copy of 4*N*D bytes); with ``quantized`` = the int8 (codes,
    scale, mean) that ``bank`` is the dequantization of (an export's bank), it is
    :meth:`edgead.scorer.int8_search.Int8Search.exact_nn` over those codes instead: the same
    answers, a 100k-row frame 56.6 -> 44.1 ms (synthetic, ef 16, dev machine), and no float32
    copy, though the same RSS (the int8 search's onnxruntime sessions hold about as much:
    +150 MiB either way with the index at 100k rows).  ``exact_max=False`` keeps neither.
    """

    name = "hnsw"

    def __init__(self, bank: np.ndarray, index_path: str | Path | None = None, *,
                 M: int = DEFAULT_HNSW_PARAMS["M"],
                 ef_construction: int = DEFAULT_HNSW_PARAMS["ef_construction"],
                 ef_search: int = DEFAULT_HNSW_PARAMS["ef_search"],
                 threads: int = 1, seed: int = DEFAULT_HNSW_PARAMS["seed"],
                 exact_max: bool = True, quantized: tuple | None = None):
        import hnswlib  # runtime dependency; imported lazily so exact-only use does not need it

        arr = np.asarray(bank)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ArtifactError(f"memory bank must be a non-empty 2-D array, got shape {arr.shape}")
        n, d = (int(x) for x in arr.shape)
        self.rows, self.dim = n, d
        self.threads = max(1, int(threads))
        for key, val in (("M", M), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if int(val) < 1:
                raise ConfigError(f"hnsw {key} must be >= 1, got {val}")
        self.ef_search = int(ef_search)
        self.index = hnswlib.Index(space="l2", dim=d)

        self.exact_max = bool(exact_max)
        self.last_refined = 0  # queries re-searched exactly by the last query() call
        bank32 = _as_bank(arr)  # validates; float32 copy if the bank is float16
        if index_path is not None:
            path = Path(index_path)
            self.index_path: Path | None = path
            self._load(path, bank32)
            self.M = self._header["M"]
            self.ef_construction = self._header["ef_construction"]
            self.seed = None  # not stored in the file
        else:
            self.index_path = None
            self.M, self.ef_construction, self.seed = int(M), int(ef_construction), int(seed)
            self.index.init_index(max_elements=n, M=self.M, ef_construction=self.ef_construction,
                                  random_seed=self.seed)
            self.index.add_items(bank32, np.arange(n, dtype=np.int64), num_threads=self.threads)
        self.index.set_ef(self.ef_search)
        self.index.set_num_threads(self.threads)
        # exact re-check of the largest distances (see query): over the int8 codes the bank
        # stands for, or the float32 bank
        self._exact: ExactSearch | None = None
        self._refine = None
        if exact_max and quantized is not None:
            from edgead.scorer.int8_search import Int8Search

            self._refine = Int8Search(None, quantized=quantized, threads=self.threads)
            if (self._refine.rows, self._refine.dim) != (n, d):
                raise ArtifactError(f"int8 bank {self._refine.rows}x{self._refine.dim} does not match the "
                                    f"HNSW bank {n}x{d}")
        elif exact_max:
            self._exact = ExactSearch(bank32)
        del bank32
        # (queries, k) -> exact (distances, rows): what query() certifies the maximum with
        self._recheck = self._refine.exact_nn if self._refine is not None else \
            self._exact.query if self._exact is not None else None

    @property
    def params(self) -> dict:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "seed": self.seed}

    def _load(self, path: Path, bank: np.ndarray) -> None:
        if not path.is_file():
            raise ArtifactError(f"HNSW index {path} does not exist")
        from edgead.scorer.hnsw_file import expanded_index  # links-only files (export's default)

        with expanded_index(path, bank) as full:
            try:
                self._load_full(full, bank)
            except ArtifactError as exc:  # name the artifact's file, not the temporary copy
                raise ArtifactError(str(exc).replace(str(full), str(path))) from None

    def _load_full(self, path: Path, bank: np.ndarray) -> None:
        header = _read_hnsw_header(path)
        if header["count"] != self.rows:
            raise ArtifactError(f"HNSW index {path} holds {header['count']} vectors but the memory "
                                f"bank has {self.rows} rows: index and bank do not belong together")
        if header["data_bytes"] != 4 * self.dim:
            raise ArtifactError(f"HNSW index {path} has dimension {header['data_bytes'] / 4:g} but "
                                f"the memory bank has dimension {self.dim}")
        _check_hnsw_links(path, header)
        try:
            self.index.load_index(str(path), max_elements=self.rows)
        except (RuntimeError, OSError, MemoryError, ValueError) as exc:
            raise ArtifactError(f"cannot load HNSW index {path}: {exc}") from exc
        if self.index.get_current_count() != self.rows or self.index.dim != self.dim:
            raise ArtifactError(f"HNSW index {path} does not match the memory bank "
                                f"({self.index.get_current_count()}x{self.index.dim} vs "
                                f"{self.rows}x{self.dim})")
        ids = np.asarray(self.index.get_ids_list(), dtype=np.int64)
        if ids.size != self.rows or ids.min() != 0 or ids.max() != self.rows - 1 \
                or np.unique(ids).size != self.rows:
            raise ArtifactError(f"HNSW index {path} is not labelled with bank rows 0..{self.rows - 1}")
        # spot-check stored vectors against the bank (tolerance covers a float16 round trip)
        sample = np.unique(np.linspace(0, self.rows - 1, num=min(self.rows, 64)).astype(np.int64))
        stored = np.asarray(self.index.get_items(sample), dtype=np.float32)
        expect = np.asarray(bank[sample], dtype=np.float32)
        tol = 1e-2 * np.abs(expect).max(axis=1, keepdims=True) + 1e-6
        if stored.shape != expect.shape or not (np.abs(stored - expect) <= tol).all():
            raise ArtifactError(f"HNSW index {path} was not built from this memory bank "
                                f"(stored vectors differ)")
        self._header = header

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically (temporary file + rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            self.index.save_index(str(tmp))
            os.replace(tmp, path)
        except (RuntimeError, OSError) as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise ArtifactError(f"cannot write HNSW index {path}: {exc}") from exc

    def query(self, queries: np.ndarray, k: int = 1, certify: int = 1) -> tuple[np.ndarray, np.ndarray]:
        q = _as_queries(queries, self.dim)
        k = _check_k(k, self.rows)
        if q.shape[0] == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        labels, sq = self.index.knn_query(q, k=k, num_threads=self.threads)
        dist = np.sqrt(np.maximum(sq, 0.0, dtype=np.float32)).astype(np.float32, copy=False)
        idx = labels.astype(np.int64, copy=False)
        self.last_refined = 0
        if k == 1 and self.exact_max and self._recheck is not None:
            self.last_refined = certify_top(lambda rows: tuple(a[:, 0] for a in self._recheck(q[rows], 1)),
                                            dist[:, 0], idx[:, 0], k=certify)
        return dist, idx

    def distances_to(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        q = _as_queries(query, self.dim)[0]
        r = _as_rows(rows, self.rows)
        if r.size == 0:
            return np.empty(0, np.float32)
        return _direct_distances(q, self.vectors(r))

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        r = np.asarray(rows)
        if self._exact is not None:
            return self._exact.bank[r]
        if self._refine is not None:  # the dequantized rows: the bank itself
            return self._refine.vectors(r.reshape(-1)).reshape(*r.shape, self.dim)
        return np.asarray(self.index.get_items(r.reshape(-1)), dtype=np.float32).reshape(*r.shape, self.dim)


def build_hnsw_index(bank: np.ndarray, path: str | Path, *, M: int = DEFAULT_HNSW_PARAMS["M"],
                     ef_construction: int = DEFAULT_HNSW_PARAMS["ef_construction"],
                     ef_search: int = DEFAULT_HNSW_PARAMS["ef_search"],
                     seed: int = DEFAULT_HNSW_PARAMS["seed"], threads: int = 1) -> dict:
    """Build an HNSW index over ``bank`` and save it to ``path``; return the params dict to store in
    the artifact manifest: ``{"M", "ef_construction", "ef_search", "seed"}``.

    Pass the bank exactly as it is stored in the artifact (e.g. after the float16 cast) so the
    graph is built on the same vectors the runtime sees.  ``threads > 1`` builds faster but the
    graph then depends on thread scheduling (not bit-reproducible); ``threads=1`` with a fixed
    ``seed`` is deterministic.
    """
    search = HnswSearch(bank, None, M=M, ef_construction=ef_construction, ef_search=ef_search,
                        threads=threads, seed=seed)
    search.save(path)
    return {"M": int(M), "ef_construction": int(ef_construction), "ef_search": int(ef_search),
            "seed": int(seed)}


# --------------------------------------------------------------------------------------------
# selection


def choose_backend(bank_rows: int, has_index: bool, int8_bank: bool = True) -> str:
    """Backend for ``backend="auto"``: "hnsw" when an index exists and the bank has more than
    :data:`HNSW_CROSSOVER` rows; else "int8" (:class:`edgead.scorer.int8_search.Int8Search`) for
    a bank stored as int8 (export's default), "exact" for a float16/float32 bank (older
    artifacts: int8 would first quantize it and move their calibrated scores a little)."""
    if has_index and int(bank_rows) > HNSW_CROSSOVER:
        return "hnsw"
    return "int8" if int8_bank else "exact"


def _hnsw_kwargs(hnsw_params: dict | None) -> dict:
    params = dict(DEFAULT_HNSW_PARAMS)
    if hnsw_params:
        unknown = sorted(set(hnsw_params) - set(_HNSW_PARAM_KEYS))
        if unknown:
            raise ConfigError(f"unknown hnsw parameter(s) {unknown}; expected some of "
                              f"{list(_HNSW_PARAM_KEYS)}")
        for key, val in hnsw_params.items():
            if val is None:
                continue
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
                raise ConfigError(f"hnsw parameter {key} must be an integer, got {val!r}")
            params[key] = int(val)
    return params


def make_search(bank: np.ndarray | None, backend: str = "auto", index_path: str | Path | None = None,
                hnsw_params: dict | None = None, threads: int = 1,
                quantized: tuple | None = None, bank_knn: np.ndarray | None = None) -> NearestNeighbourSearch:
    """Build the search backend for ``bank``.

    ``backend``: "int8", "exact", "hnsw" or "auto" (see :func:`choose_backend`; an index counts
    as present when ``index_path`` is given).  "hnsw" without ``index_path`` builds the index in
    memory (logged: slow for a large bank on a Pi).  ``hnsw_params`` is the manifest dict from
    :func:`build_hnsw_index` (``ef_search`` may be overridden there; M / ef_construction /
    seed only matter when building).  ``threads`` applies to hnsw queries and the int8 GEMM; the
    exact backend's BLAS threads are process-wide (set OPENBLAS_NUM_THREADS before numpy is
    imported, or edgead.threads.limit_threads).  ``quantized``: the bank's stored int8 form
    (codes, scale, mean), used by the int8 backend instead of quantizing ``bank`` again, and
    with ``bank`` None by the hnsw backend for its exact re-check (see :class:`HnswSearch`).
    ``bank_knn``: the export's support table (each row's nearest rows), which the int8 backend
    uses to choose its bounding prefix (:func:`edgead.scorer.int8_search.prefix_order`).
    """
    choice = str(backend).strip().lower() if isinstance(backend, str) else backend
    if choice not in BACKENDS:
        raise ConfigError(f"unknown nearest-neighbour backend {backend!r}: "
                          f"expected one of {', '.join(repr(b) for b in BACKENDS)}")
    params = _hnsw_kwargs(hnsw_params)
    if bank is None and quantized is not None:
        rows = int(quantized[0].shape[0])
    else:
        rows = int(np.shape(bank)[0]) if np.ndim(bank) >= 1 else 0
    if choice == "auto":
        choice = choose_backend(rows, index_path is not None, quantized is not None)
    from_codes = bank is None and quantized is not None  # the float bank is exactly the codes' dequantization
    if bank is None and choice != "int8":  # exact and hnsw search float32 rows
        from edgead.scorer.int8_search import dequantize_bank

        bank = dequantize_bank(*quantized)
    if choice == "exact":
        return ExactSearch(bank)
    if choice == "int8":
        from edgead.scorer.int8_search import Int8Search

        return Int8Search(None if quantized is not None else bank, quantized=quantized, threads=threads,
                          bank_knn=bank_knn)
    if index_path is None:
        log.warning("no HNSW index in the artifact: building one for %d bank rows at start-up "
                    "(M=%d, ef_construction=%d)", rows, params["M"], params["ef_construction"])
    return HnswSearch(bank, index_path, M=params["M"], ef_construction=params["ef_construction"],
                      ef_search=params["ef_search"], threads=threads, seed=params["seed"],
                      quantized=quantized if from_codes else None)  # re-checked over the codes
