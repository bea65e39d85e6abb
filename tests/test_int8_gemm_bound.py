"""The error bound the int8 search certifies with, checked against onnxruntime's int8 GEMM on the
CPU that runs the test.

Int8Search trusts one inequality: for every query ``a`` (centred) and bank row ``j``, the GEMM's
``a . m_j - 0.5 ||m_j||^2`` is off by at most ``step(a) * ||m_j||_1`` (plus float32 rounding),
where ``step`` is the 8-bit step of the queries.  It holds when the integer products are exact,
whatever the kernel; MLAS has different ones on x86 (VNNI, AVX2), on arm64 with SDOT/UDOT (a Pi
5's Cortex-A76), with I8MM, and with plain NEON (a Pi 4's Cortex-A72), and some integer kernels
saturate 16-bit sums.  These tests run on whichever of them this machine uses
(deploy/arm64/check.sh runs them under each emulated Pi CPU) with data chosen to break it: full
8-bit ranges, every product at its largest, long reductions.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgead.bank.codes import quantize_bank
from edgead.scorer.search.int8 import Int8Search
from edgead.scorer.search.exact import ExactSearch


def gemm_and_bound(search: Int8Search, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|GEMM - exact| per (query, bank row), the search's bound for it), in the bank's row order."""
    a = search._centred(np.ascontiguousarray(queries, dtype=np.float32))
    approx = np.empty((len(a), search.rows), np.float32)
    for s0, c0, y in search._scores(a):
        approx[s0: s0 + len(y), search._order[c0: c0 + y.shape[1]]] = y
    rows = search.codes.astype(np.float64) * search.scale[:, None]  # m_j - mean, as the GEMM's B
    exact = a.astype(np.float64) @ rows.T - search._half_norms.astype(np.float64)[None, :]
    half = float(search._half_norms.max())
    # float32 rounding of the GEMM's output and bias (the slack Int8Search allows for it)
    slack = 1e-5 * (np.linalg.norm(a, axis=1) * np.sqrt(2.0 * half) + 2.0 * half)
    bound = search._quant_step(a) * search._l1[None, :] + slack[:, None]
    return np.abs(approx - exact), bound


def clustered(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Non-negative clustered rows, like post-ReLU6 patch features."""
    centres = rng.gamma(0.8, 1.0, size=(8, d)) * 2.0
    return np.maximum(centres[rng.integers(0, 8, n)] + 0.5 * rng.standard_normal((n, d)), 0).astype(np.float32)


def cases():
    rng = np.random.default_rng(3)
    feats = clustered(rng, 600, 152)  # the default model's feature width
    yield "features", feats[:500], feats[500:] + 0.3 * rng.standard_normal((100, 152)).astype(np.float32)
    # every product at its largest: rows +-c around the mean (codes +-127), queries at the ends of
    # their range (uint8 0 / 255) -- two adjacent products sum past int16 (a saturating kernel)
    d = 256
    signs = np.where(rng.random((300, d)) < 0.5, -1.0, 1.0).astype(np.float32)
    signs[:150] = 1.0
    bank = 3.0 * signs
    queries = np.where(rng.random((64, d)) < 0.9, 3.0, -3.0).astype(np.float32)
    queries[:8] = 3.0
    yield "extremes", bank, queries
    # queries half a step off the 8-bit grid, every rounding error the same sign as the row: the
    # error adds up to about half the bound (uint8 with zero point 128 over [-A, A]; other schemes
    # round elsewhere and err less)
    d, amp = 192, 4.0
    step = 2 * amp / 255
    bank = np.concatenate([np.full((50, d), 2.0), np.full((50, d), -2.0), rng.uniform(-2, 2, (100, d))]).astype(np.float32)
    grid = (rng.integers(1, 250, (40, d)) - 128 + 0.49) * step
    grid[:, 0], grid[:, 1] = amp, -amp  # the range: [-A, A]
    yield "half-steps", bank, (grid + quantize_bank(bank)[2]).astype(np.float32)
    # a long reduction (wide features, e.g. a three-tap texture recipe) and a wide query range
    bank = clustered(rng, 400, 1536)
    yield "wide", bank, np.concatenate([bank[:40] * 4.0, -bank[40:80]])
    # one outlier component: a coarse step for every other component
    bank = clustered(rng, 300, 64)
    queries = bank[:50].copy()
    queries[:, 0] += 200.0
    yield "outlier", bank, queries


@pytest.mark.parametrize("name,bank,queries", list(cases()), ids=[c[0] for c in cases()])
def test_gemm_error_within_the_certified_bound(name, bank, queries):
    search = Int8Search(None, quantized=quantize_bank(bank))
    err, bound = gemm_and_bound(search, queries)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), (
        f"{name}: GEMM off by {err[worst]:.6g} > bound {bound[worst]:.6g} at query {worst[0]}, row {worst[1]}")


@pytest.mark.parametrize("name,bank,queries", list(cases()), ids=[c[0] for c in cases()])
def test_certified_answers_equal_brute_force(name, bank, queries):
    """What the bound is for: the image score (largest nearest-neighbour distance, and the k
    largest) exactly as brute force over the dequantized bank gives it."""
    quantized = quantize_bank(bank)
    search = Int8Search(None, quantized=quantized)
    exact = ExactSearch(search.vectors(np.arange(search.rows)))
    d_e, i_e = exact.query(queries)
    i, d, j = search.max_nn(queries)
    assert d == pytest.approx(float(d_e.max()), rel=1e-6)
    k = min(5, len(queries))
    top, dist, _ = search.topk_nn(queries, k)
    np.testing.assert_allclose(dist, np.sort(d_e[:, 0])[::-1][:k], rtol=1e-6)
