"""Int8 nearest-neighbour search: onnxruntime's int8 GEMM for the candidates, float32 for the answer.

The search is one matrix product, queries x bank, which in float32 BLAS costs several times the
INT8 backbone.  Here the bank is the artifact's int8 codes (:mod:`edgead.bank.codes`: centred
on its mean, one scale per row, ``m_j ~ mean + scale_j * code_j``), and each frame runs
onnxruntime's ``DynamicQuantizeMatMul`` (the queries quantized to uint8 on the fly, MLAS int8
kernels: VNNI on x86, SDOT on a Pi 5's Cortex-A76) over blocks of the bank
(:mod:`.int8_layout`).

What is returned is exact where it matters:

* each query's neighbour is the int8 winner, but its distance is recomputed in float32 from
  ``q - m`` (an upper bound of the true nearest distance: it is the distance to a real bank row);
* the largest distance of the batch -- the PatchCore image score -- is certified: the int8
  product's error has a hard bound (the queries' quantization step times the row's L1 norm),
  which leaves a handful of rows that could be the true neighbour; those are measured in float32
  (:meth:`Int8Search.exact_nn`), so image scores equal the exact search's.  Other patches (the
  anomaly map) may sit a near-tie away: a tiny relative distance error.

The PatchCore image score needs only the largest distances: :meth:`Int8Search.topk_nn` certifies
them without searching every patch against the whole bank (bounds from the prefix block).

Memory: the int8 codes here (to dequantize the rows that are measured) and inside onnxruntime
(initializer and prepacked copy), no float32 copy of the bank, and one (chunk x block) float32
product of 1 MiB.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from edgead.backbone import session_options
from edgead.bank.codes import dequantize_bank, quantize_bank
from edgead.errors import ArtifactError
from edgead.scorer.search import int8_layout
from edgead.scorer.search.base import (
    as_bank,
    as_queries,
    as_rows,
    certify_top,
    check_k,
    direct_distances,
)
from edgead.scorer.search.int8_layout import (
    block_starts,
    gemm_model,
    prefix_order,
    prefix_rows,
)

# The float32 GEMM output, one scratch buffer for every call: queries go in chunks of
# SCRATCH_FLOATS // block rows.  1 MiB: a little slower than larger buffers on the map pass, for
# less RSS.
SCRATCH_FLOATS = 1 << 18
_MIN_QUERY_CHUNK = 16
# queries per (queries x bank) float32 product of the exact search (it holds four such arrays)
_EXACT_CHUNK = 16

# Queries certified in the first round (the largest distances first; with full-bank bounds one
# round almost always suffices), then up to _CERTIFY_MAX_BATCH per round (topk_nn's bounds are
# looser).
_CERTIFY_BATCH = 4
_CERTIFY_MAX_BATCH = 64
# topk_nn: with more queries than this still above the k-th exact distance, the _RAISE_BATCH
# (or k) largest bounds that the last block left unchanged are measured before the next block:
# the prefix's bounds can be loose and its first picks far from the top, which would leave
# nearly every patch for the full search.
_RAISE_KTH_ABOVE = 32
_RAISE_BATCH = 4
# topk_nn searches every query against the whole bank when k is over 1/_WIDE_TOPK of them: the
# pruned passes and their bookkeeping cost more than they save for a top-k of 20 or more (real
# frames, 784 and 3136 patches against 500-8,467 rows: docs/benchmarks.md, "What a candidate
# costs"); for k up to ~10 of 3,136 patches against a large bank they save a fifth to a half.
_WIDE_TOPK = 160


class Int8Search:
    """Nearest neighbours by int8 GEMM (onnxruntime) with float32 answers; see the module doc.

    ``bank`` float (N, D), or None with ``quantized`` = (codes, scale, mean) as the artifact stores
    it (:mod:`edgead.bank.store`; the bank is then their dequantization); a float bank
    alone is quantized here.  ``threads``: onnxruntime intra-op threads per GEMM.  ``bank_knn``:
    each row's nearest bank rows (the export's support table), to choose the prefix (see
    :func:`prefix_order`); row indices in and out are the bank's own whatever the order inside.
    """

    name = "int8"
    partial_top = True  # topk_nn bounds most queries with the prefix block alone

    def __init__(self, bank: np.ndarray | None, *, quantized: tuple | None = None, threads: int = 1,
                 block_rows: int | None = None, bank_knn: np.ndarray | None = None):
        if quantized is None:
            quantized = quantize_bank(as_bank(bank))
        codes, scale, mean = quantized
        if codes.ndim != 2 or codes.shape[0] < 1 or codes.dtype != np.int8:
            raise ArtifactError(f"int8 memory bank must be a non-empty 2-D int8 array, got {codes.dtype} {codes.shape}")
        self.rows, self.dim = (int(x) for x in codes.shape)
        # the bank itself is only the codes: rows are dequantized when measured (4x less memory)
        self.codes = np.ascontiguousarray(codes)
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        # 0.5 ||scale * code||^2: argmin_j ||q - m_j||^2 = argmax_j (q.m_j - 0.5 ||m_j||^2), centred
        # in row chunks: a float32 copy of the whole bank, freed at once, would stay in the heap
        self._half_norms = np.empty(self.rows, np.float32)
        self._l1 = np.empty(self.rows, np.float32)  # ||m_j - mean||_1: the GEMM's error bound per unit step
        for r0 in range(0, self.rows, 4096):
            approx = codes[r0: r0 + 4096].astype(np.float32) * self.scale[r0: r0 + 4096, None]
            self._half_norms[r0: r0 + 4096] = 0.5 * np.einsum("ij,ij->i", approx, approx, dtype=np.float32)
            self._l1[r0: r0 + 4096] = np.abs(approx).sum(axis=1)
        block_rows = int8_layout.DEFAULT_BLOCK_ROWS if block_rows is None else block_rows
        self.block_rows = max(1, int(block_rows))
        # the first block is topk_nn's prefix (its rows: prefix_order), bounding every query
        self.prefix_rows = prefix_rows(self.rows, self.block_rows)
        starts = block_starts(self.rows, self.prefix_rows, self.block_rows)
        # the blocks take the rows in this order: position p holds bank row self._order[p]
        self._order = prefix_order(self.rows, self.prefix_rows, bank_knn)
        self._l1_by_pos = self._l1[self._order]
        opts = session_options(threads)
        # no per-session arena: each block writes into self._out (io binding), nothing to cache
        opts.enable_cpu_mem_arena = False
        self._blocks = []
        for c0, c1 in zip(starts, starts[1:] + [self.rows]):
            rows = self._order[c0:c1]
            model = gemm_model(self.codes[rows], np.ascontiguousarray(scale[rows], dtype=np.float32),
                               -self._half_norms[rows])
            sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
            self._blocks.append((c0, c1, sess, sess.io_binding()))
        self._out = np.empty(0, np.float32)  # one (chunk x block) product, reused by every call
        self.last_refined = 0  # queries made exact by the last query() (certified maximum)
        self.last_candidates = 0  # most bank rows measured in float32 for one of them
        self._lock = threading.Lock()

    def query(self, queries: np.ndarray, k: int = 1, certify: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Every query's nearest row; the ``certify`` largest distances (k == 1) exactly as
        brute force gives them, the others a near-tie away at most (the anomaly map)."""
        q = as_queries(queries, self.dim)
        k = check_k(k, self.rows)
        if q.shape[0] == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        if k > 1:  # the b-neighbour support set of the reweighting: one query, exact k-NN
            with self._lock:
                return self._exact_nn(q, k)
        with self._lock:
            a = self._centred(q)  # once: the full pass and the certification take it
            idx = self._best(a)[0]
            dist = direct_distances(q, self.vectors(idx))
            self.last_refined = self._certify_top(q, a, dist, idx, np.zeros(len(q), dtype=bool), certify)
        return dist[:, None], idx[:, None]

    def max_nn(self, queries: np.ndarray) -> tuple[int, float, int]:
        """(i, d, j): the query whose nearest-neighbour distance is the largest, that distance and
        the neighbour row -- exactly as from :meth:`query` (see :meth:`topk_nn`)."""
        i, d, j = self.topk_nn(queries, 1)
        return int(i[0]), float(d[0]), int(j[0])

    def topk_nn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``k`` queries with the largest nearest-neighbour distances: (query indices,
        distances, neighbour rows), largest first, exactly as brute force gives them, without
        searching every query against the whole bank (the PatchCore image score; the anomaly
        map needs :meth:`query`).

        Upper bounds first: every query against the first block only (an export's bank is in
        greedy k-center order, so its first rows cover the rest; any rows give valid bounds).
        The queries with the largest bounds are searched exactly; queries whose bound still
        exceeds the k-th exact distance meet the other blocks one by one, dropping out as soon
        as a block brings their bound below it; any left are certified exactly.
        Banks under three prefixes search every query in the first pass.
        """
        q = as_queries(queries, self.dim)
        if q.shape[0] == 0:
            raise ValueError("topk_nn needs at least one query")
        k = max(1, min(int(k), q.shape[0]))
        with self._lock:
            # a small bank, or a wide top-k (the texture recipe's 40 of 784 patches: most patches
            # stay candidates, slower pruned than searched in full): every query meets the whole bank
            small = self.rows < 3 * self.prefix_rows or k * _WIDE_TOPK > len(q)
            a = self._centred(q)  # once: every pass below takes its rows
            idx, upper = self._winners(a, self._blocks if small else self._blocks[:1])
            exact = np.zeros(len(q), dtype=bool)
            first = np.argpartition(-upper, k + _CERTIFY_BATCH - 2)[: k + _CERTIFY_BATCH - 1] \
                if len(q) > k + _CERTIFY_BATCH - 1 else np.arange(len(q))
            upper[first], idx[first] = self._measure(q, a, first)
            exact[first] = True
            refined = len(first)
            kth = np.partition(upper[exact], -k)[-k] if exact.sum() >= k else -np.inf
            rest = np.flatnonzero(~exact & (upper > kth))  # the only queries that may still enter
            if rest.size:  # the GEMM's bound -> the distance to the winner row, measured
                upper[rest] = np.minimum(upper[rest], direct_distances(q[rest], self.vectors(idx[rest])))
                rest = rest[upper[rest] > kth]
            if not small:
                settled = np.zeros(len(q), dtype=bool)  # bound unchanged by the last block
                for block in self._blocks[1:]:  # tighten their bounds block by block
                    if rest.size > _RAISE_KTH_ABOVE:
                        # many left: the first exact ones were not the top (loose prefix bounds);
                        # measure the largest bounds now to raise the k-th distance, preferring
                        # bounds the last block did not move (likely near their true distance)
                        batch = min(rest.size, max(_RAISE_BATCH, k))
                        pool = rest[settled[rest]] if settled[rest].sum() >= batch else rest
                        take = pool[np.argpartition(-upper[pool], batch - 1)[:batch]]
                        upper[take], idx[take] = self._measure(q, a, take)
                        exact[take] = True
                        refined += len(take)
                        kth = np.partition(upper[exact], -k)[-k]
                        rest = rest[~exact[rest] & (upper[rest] > kth)]
                    if not rest.size:
                        break
                    b_idx = self._best(a[rest], [block])[0]
                    b_dist = direct_distances(q[rest], self.vectors(b_idx))
                    closer = b_dist < upper[rest]
                    upper[rest[closer]], idx[rest[closer]] = b_dist[closer], b_idx[closer]
                    settled[rest] = ~closer
                    rest = rest[upper[rest] > kth]
            self.last_refined = refined + self._certify_top(q, a, upper, idx, exact, k)
        top = np.argsort(-upper, kind="stable")[:k]
        return top, upper[top], idx[top]

    def exact_nn(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The true ``k`` nearest rows (Q, k) of a few queries, as brute force over the
        dequantized bank gives them (the GEMM's error bound prunes the rows measured in float32;
        cost per query grows with the bank, not with the other queries): the exact re-check of
        another search (:class:`edgead.scorer.search.hnsw.HnswSearch`)."""
        q = as_queries(queries, self.dim)
        k = check_k(k, self.rows)
        if q.shape[0] == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        with self._lock:
            return self._exact_nn(q, k)

    def _measure(self, q: np.ndarray, a: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact nearest neighbours of queries ``q[rows]`` (``a``: all queries centred):
        (distances, bank rows)."""
        d, i = self._exact_nn(q[rows], a=a[rows])
        return d[:, 0], i[:, 0]

    def _certify_top(self, q: np.ndarray, a: np.ndarray, dist: np.ndarray, idx: np.ndarray,
                     exact: np.ndarray, k: int) -> int:
        """Make the ``k`` largest of ``dist`` exact, in place (base.certify_top with the
        bound-pruned exact search); return how many queries were measured."""
        return certify_top(lambda rows: self._measure(q, a, rows), dist, idx, k=k, exact=exact,
                           first=_CERTIFY_BATCH + k - 1, later=_CERTIFY_MAX_BATCH)

    def _scores(self, a: np.ndarray, blocks: list | None = None):
        """Per (block, query chunk): (first query, first row, (chunk, rows) approximate
        a.m_j - 0.5 ||m_j - mean||^2) for centred queries ``a``; a block's chunk is what fits
        SCRATCH_FLOATS.  The array is a view of one scratch buffer, overwritten by the next call."""
        for c0, c1, sess, binding in self._blocks if blocks is None else blocks:
            step = max(_MIN_QUERY_CHUNK, SCRATCH_FLOATS // (c1 - c0))
            for s0 in range(0, a.shape[0], step):
                chunk = a[s0: s0 + step]
                n = chunk.shape[0]
                if self._out.size < n * (c1 - c0):
                    self._out = np.empty(n * (c1 - c0), np.float32)
                out = self._out[: n * (c1 - c0)].reshape(n, c1 - c0)
                binding.bind_cpu_input("A", chunk)
                binding.bind_output("Y", "cpu", 0, np.float32, out.shape, out.ctypes.data)
                sess.run_with_iobinding(binding)
                yield s0, c0, out

    def _centred(self, q: np.ndarray) -> np.ndarray:
        """Queries minus the bank mean, contiguous: what the GEMM multiplies."""
        return np.ascontiguousarray(q - self.mean)

    @staticmethod
    def _quant_step(a: np.ndarray) -> float:
        """An upper bound of the 8-bit step the GEMM quantizes (centred queries) ``a`` -- or any
        chunk of them -- with: asymmetric uint8 with a rounded zero point, or symmetric int8,
        both ``<= 2 max|a| / 255``.  The GEMM's error is at most this times ``||m_j - mean||_1``."""
        return 2.0 * float(np.abs(a).max()) / 255.0

    def _best(self, a: np.ndarray, blocks: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per centred query: (int8 winner row, its GEMM score ~ a.m_j - 0.5 ||m_j - mean||^2)."""
        n = a.shape[0]
        best_v = np.full(n, -np.inf, dtype=np.float32)
        best_i = np.zeros(n, dtype=np.int64)
        for s0, c0, y in self._scores(a, blocks):
            arg = y.argmax(axis=1)
            val = y[np.arange(len(y)), arg]
            v, i = best_v[s0: s0 + len(y)], best_i[s0: s0 + len(y)]  # views
            better = val > v
            v[better] = val[better]
            i[better] = self._order[arg[better] + c0]
        return best_i, best_v

    def _winners(self, a: np.ndarray, blocks: list) -> tuple[np.ndarray, np.ndarray]:
        """Per centred query ``a = q - mean``: (int8 winner row in ``blocks``, an upper bound of
        its distance to it).

        From the GEMM alone, without dequantizing the winners: the true score of row j is at
        least the GEMM's minus its error bound (:meth:`_quant_step`), so
        ``||q - m_j||^2 <= ||a||^2 - 2 (score - step ||m_j - mean||_1)``."""
        step = self._quant_step(a)
        idx, val = self._best(a, blocks)
        sq = np.einsum("ij,ij->i", a, a)
        slack = 1e-5 * (np.abs(val) + sq + self._half_norms.max())  # float32 rounding of both sides
        upper = np.sqrt(np.maximum(sq - 2.0 * (val - step * self._l1[idx]) + slack, 0.0))
        return idx, upper.astype(np.float32)

    def _exact_nn(self, q: np.ndarray, k: int = 1, a: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """True k nearest neighbours (Q, k) of a few queries (``a``: them centred, if the caller
        has it), pruned by the int8 GEMM's error bound.

        The GEMM multiplies the bank's codes exactly; its only error is the queries' 8-bit
        quantization, at most one step ``s`` per component (:meth:`_quant_step`), so
        ``|approx - exact| <= s * ||m_j - mean||_1`` for every row j.  Rows whose upper bound
        cannot reach the k-th best row's lower bound are not among the k nearest; the rest (a
        few) are measured in float32.
        """
        self.last_candidates = 0
        a = self._centred(q) if a is None else a
        step = self._quant_step(a)  # any chunk's own step is at most this
        parts = [self._exact_chunk(q[s0: s0 + _EXACT_CHUNK], a[s0: s0 + _EXACT_CHUNK], step, k)
                 for s0 in range(0, len(q), _EXACT_CHUNK)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _exact_chunk(self, q: np.ndarray, a: np.ndarray, step: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_exact_nn` for a few queries (``a``: centred): a (queries x bank) product."""
        approx = np.empty((len(q), self.rows), np.float32)
        for s0, c0, y in self._scores(a):
            approx[s0: s0 + len(y), c0: c0 + y.shape[1]] = y
        err_row = step * self._l1_by_pos  # per bank position
        # float32 rounding of the GEMM and its bias: |approx| <= ||a|| max||m|| + max 0.5 ||m||^2
        half = float(self._half_norms.max())
        slack = 1e-5 * (np.sqrt(np.einsum("ij,ij->i", a, a)) * np.sqrt(2.0 * half) + 2.0 * half)
        if k == 1:  # all queries at once: (query, row) candidate pairs, the nearest per query
            # the int8 winner's true score is at least `floor` + its row's error; a row whose
            # approximate score plus its error cannot reach that is not the nearest
            win = approx.argmax(axis=1)
            floor = approx[np.arange(len(q)), win] - err_row[win] - 2.0 * slack
            # (query, position) pairs, pre-filtered with the largest error, then each row's own
            # (a flat nonzero: 2-D np.nonzero costs 10x more)
            flat = np.flatnonzero(approx >= (floor - float(err_row.max()))[:, None])
            qi, pos = np.divmod(flat, self.rows)
            keep = approx.reshape(-1)[flat] + err_row[pos] >= floor[qi]  # >= 1 per query: the winner
            qi, pos = qi[keep], pos[keep]
            rows = self._order[pos]
            d = direct_distances(q[qi], self.vectors(rows))
            order = np.lexsort((rows, d, qi))  # by query, then distance, then row (ties: lowest)
            best = order[np.r_[0, np.flatnonzero(np.diff(qi[order])) + 1]]
            self.last_candidates = max(self.last_candidates, int(np.bincount(qi).max()))
            return d[best][:, None], rows[best][:, None].astype(np.int64)
        err = err_row + slack[:, None] + 1e-5 * np.abs(approx).max(axis=1, keepdims=True)
        upper, lower = approx + err, approx - err
        dist = np.empty((len(q), k), np.float32)
        idx = np.empty((len(q), k), np.int64)
        for i in range(len(q)):
            kth = np.partition(lower[i], self.rows - k)[self.rows - k]
            cand = np.sort(self._order[np.flatnonzero(upper[i] >= kth)])  # ties: the lowest row
            d = direct_distances(q[i], self.vectors(cand))
            order = np.argsort(d, kind="stable")[:k]
            dist[i], idx[i] = d[order], cand[order]
            self.last_candidates = max(self.last_candidates, cand.size)
        return dist, idx

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Bank rows as float32 (len(rows), D), dequantized exactly as the artifact defines them."""
        r = np.asarray(rows)
        return dequantize_bank(self.codes[r], self.scale[r], self.mean)

    def distances_to(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        q = as_queries(query, self.dim)[0]
        return direct_distances(q, self.vectors(as_rows(rows, self.rows)))

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scale.nbytes + self._half_norms.nbytes + self._l1.nbytes
                   + self._l1_by_pos.nbytes + self._order.nbytes + self._out.nbytes)
