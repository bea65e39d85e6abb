"""Exact nearest neighbours with float32 BLAS.

Squared distances are expanded as ``||q||^2 - 2 q.m^T + ||m||^2`` with the bank norms
precomputed once; the bank is walked in blocks so that the scratch buffer stays a few MiB
whatever the bank size (a full ``(queries x bank)`` matrix would be hundreds of MiB for one
frame against a large bank).  The expanded form is only used to *select* the neighbours; the
returned distances are then recomputed directly from ``q - m`` for the k winners, so they carry
no cancellation error (a query equal to a bank row gives exactly 0, not ``sqrt(rounding noise)``).
"""

from __future__ import annotations

import threading

import numpy as np

from edgead.scorer.search.base import (
    as_bank,
    as_queries,
    as_rows,
    check_k,
    direct_distances,
    top_by_query,
)

# Scratch memory of ExactSearch: (query chunk x bank block) float32.  A few MiB keeps the block
# in L2/L3 at a small cost against one giant GEMM, where the giant buffer would be hundreds of
# MiB on a 1 GB Pi.
_EXACT_BLOCK_BYTES = 4 << 20

# Up to this many queries, GEMM as bank @ q^T (see ExactSearch._block_scores).
_FEW_QUERIES = 64


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
    partial_top = False  # every query meets the whole bank

    def __init__(self, bank: np.ndarray, chunk: int = 1024, *, block: int | None = None):
        self.bank = as_bank(bank)
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
        q = as_queries(queries, self.dim)
        k = check_k(k, self.rows)
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
                dist = direct_distances(qc[:, None, :], self.bank[idx])
                if k > 1:  # re-sort on the exact distances (near-ties may swap)
                    order = np.argsort(dist, axis=1, kind="stable")
                    dist = np.take_along_axis(dist, order, axis=1)
                    idx = np.take_along_axis(idx, order, axis=1)
                out_d[s:e] = dist
                out_i[s:e] = idx
        return out_d, out_i

    def distances_to(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        q = as_queries(query, self.dim)[0]
        r = as_rows(rows, self.rows)
        return direct_distances(q, self.bank[r])

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.bank[np.asarray(rows)]

    def topk_nn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return top_by_query(self, queries, k)

    @property
    def nbytes(self) -> int:
        return int(self.bank.nbytes + self._half_norms.nbytes + self._buf.nbytes)

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
            # few queries (HnswSearch's exact re-check): bank-major GEMM suits OpenBLAS better
            # for a thin query matrix; transpose while subtracting
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

