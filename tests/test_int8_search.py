"""Int8 nearest-neighbour search (edgead.scorer.search.int8) and its protobuf writer."""

from __future__ import annotations

import numpy as np
import pytest

from edgead.scorer import onnx_proto
from edgead.bank.codes import dequantize_bank, quantize_bank
from edgead.scorer.search.base import NearestNeighbourSearch
from edgead.scorer.search.exact import ExactSearch
from edgead.scorer.search.int8 import SCRATCH_FLOATS, Int8Search
from edgead.scorer.search.int8_layout import gemm_model, prefix_order
from edgead.scorer.search.registry import make_search


def features(rng: np.random.Generator, n: int, d: int = 48) -> np.ndarray:
    """Non-negative, clustered, like post-ReLU6 CNN patch features."""
    centres = rng.gamma(0.8, 1.0, size=(10, d)) * 2.0
    return np.maximum(centres[rng.integers(0, 10, n)] + 0.5 * rng.standard_normal((n, d)), 0).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """(quantized bank, the float32 bank it stands for, queries)."""
    rng = np.random.default_rng(7)
    raw = features(rng, 3000)
    quantized = quantize_bank(raw)
    bank = dequantize_bank(*quantized)
    q = raw[rng.integers(0, len(raw), 500)] + 0.3 * rng.standard_normal((500, raw.shape[1])).astype(np.float32)
    q[:4] += 6.0  # far-off "defect" patches: the image score
    return quantized, bank, q.astype(np.float32)


def test_quantize_round_trip(data):
    rng = np.random.default_rng(3)
    raw = features(rng, 500)
    codes, scale, mean = quantize_bank(raw)
    assert codes.dtype == np.int8 and scale.shape == (len(raw),) and mean.shape == (raw.shape[1],)
    assert np.abs(codes.astype(int)).max() == 127  # the range is used
    err = np.abs(dequantize_bank(codes, scale, mean) - raw)
    assert (err <= scale[:, None] / 2 + 1e-5).all()  # half a step at most
    # a constant row has no range: scale 1, codes 0, dequantized exactly to the mean
    codes, scale, mean = quantize_bank(np.ones((3, 4), np.float32))
    assert (codes == 0).all() and np.allclose(dequantize_bank(codes, scale, mean), 1.0)


@pytest.mark.parametrize("block_rows", [700, 1024, 5000])  # several blocks (last one short), one block
def test_same_answers_as_exact(data, block_rows):
    quantized, bank, q = data
    exact, int8 = ExactSearch(bank), Int8Search(None, quantized=quantized, block_rows=block_rows)
    assert isinstance(int8, NearestNeighbourSearch) and int8.name == "int8"
    d_e, i_e = exact.query(q)
    d_8, i_8 = int8.query(q)
    assert d_8.shape == (len(q), 1) and i_8.dtype == np.int64
    # every distance is the float32 distance to the row returned (an upper bound of the true one)
    direct = np.linalg.norm(q - bank[i_8[:, 0]], axis=1)
    np.testing.assert_allclose(d_8[:, 0], direct, rtol=1e-5)
    assert (d_8[:, 0] >= d_e[:, 0] * (1 - 1e-6)).all()
    # near-ties at most: nearly every neighbour is the exact one, distances within 2 %
    assert np.mean(i_8[:, 0] == i_e[:, 0]) > 0.9
    assert np.max(d_8[:, 0] / d_e[:, 0]) < 1.02
    # the image score (largest distance) and its neighbour are certified exactly
    top = int(np.argmax(d_e[:, 0]))
    assert float(d_8.max()) == pytest.approx(float(d_e.max()), rel=1e-6)
    assert int(i_8[top, 0]) == int(i_e[top, 0])
    assert int8.last_refined >= 1 and 1 <= int8.last_candidates < len(bank) // 10


def test_certified_on_near_ties():
    """Queries half-way between two rows, and duplicate rows: the max must still be exact."""
    rng = np.random.default_rng(11)
    raw = features(rng, 400, d=16)
    raw[200:] = raw[:200] + 0.01 * rng.standard_normal((200, 16)).astype(np.float32)  # near-duplicates
    quantized = quantize_bank(raw)
    bank = dequantize_bank(*quantized)
    q = 0.5 * (bank[rng.integers(0, 400, 300)] + bank[rng.integers(0, 400, 300)])
    int8, exact = Int8Search(None, quantized=quantized), ExactSearch(bank)
    for chunk in np.array_split(q, 10):
        assert float(int8.query(chunk)[0].max()) == pytest.approx(float(exact.query(chunk)[0].max()), rel=1e-6)


def test_exact_nn_of_every_query_is_brute_force():
    """The few-query exact search (the certification's): near-duplicate rows and queries half-way
    between rows, so the int8 winner is often not the nearest; each answer must be brute force's."""
    rng = np.random.default_rng(5)
    raw = features(rng, 2000, d=32)
    raw[1000:] = raw[:1000] + 0.02 * rng.standard_normal((1000, 32)).astype(np.float32)
    quantized = quantize_bank(raw)
    bank = dequantize_bank(*quantized)
    q = (0.5 * (bank[rng.integers(0, 2000, 400)] + bank[rng.integers(0, 2000, 400)])).astype(np.float32)
    int8 = Int8Search(None, quantized=quantized, block_rows=700)
    d8, i8 = int8._exact_nn(q)
    full = np.linalg.norm(q[:, None, :].astype(np.float64) - bank[None].astype(np.float64), axis=2)
    np.testing.assert_allclose(d8[:, 0], full.min(axis=1), rtol=1e-5)
    np.testing.assert_allclose(full[np.arange(len(q)), i8[:, 0]], full.min(axis=1), rtol=1e-5)
    approx_winner = int8._best(int8._centred(q))[0]
    assert np.mean(approx_winner != full.argmin(axis=1)) > 0.05  # the case is not trivial


def test_knn_vectors_and_distances_to(data):
    quantized, bank, q = data
    int8, exact = Int8Search(None, quantized=quantized), ExactSearch(bank)
    d8, i8 = int8.query(bank[5:6], k=9)
    de, ie = exact.query(bank[5:6], k=9)
    np.testing.assert_array_equal(i8, ie)
    np.testing.assert_allclose(d8, de, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(int8.vectors(np.array([3, 7])), bank[[3, 7]])
    np.testing.assert_allclose(int8.distances_to(q[0], i8[0]), exact.distances_to(q[0], ie[0]), rtol=1e-6)
    with pytest.raises(ValueError):
        int8.query(q[:, :10])
    with pytest.raises(ValueError):
        int8.query(q, k=0)


def test_make_search_int8(data):
    quantized, bank, q = data
    s = make_search(bank, "INT8", quantized=quantized, threads=1)
    assert isinstance(s, Int8Search)
    assert make_search(bank, "auto", quantized=quantized).name == "int8"  # an int8 bank: int8 search
    assert float(s.query(q)[0].max()) == pytest.approx(float(ExactSearch(bank).query(q)[0].max()), rel=1e-6)
    # a float bank given alone is quantized at load: its scores move by the quantization error only
    raw = make_search(bank, "int8")
    assert float(raw.query(q)[0].max()) == pytest.approx(float(ExactSearch(bank).query(q)[0].max()), rel=1e-2)


def test_protobuf_is_valid_onnx(data):
    onnx = pytest.importorskip("onnx")
    quantized, _, _ = data
    codes, scale = quantized[0][:64], quantized[1][:64]
    model = onnx.load_from_string(gemm_model(codes, scale, -np.ones(64, np.float32)))
    onnx.checker.check_model(model)
    node = model.graph.node[0]
    assert (node.op_type, node.domain, list(node.input)) == (
        "DynamicQuantizeMatMul", "com.microsoft", ["A", "B", "B_scale", "", "bias"])
    b = onnx.numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_array_equal(b, codes.T)
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["Q", 48]


def test_varint_negative_and_large():
    assert onnx_proto._varint(300) == b"\xac\x02"
    assert len(onnx_proto._varint(-1)) == 10  # int64 -1: ten bytes, as protobuf encodes it


def test_large_frames_go_in_chunks(data):
    quantized, bank, _ = data
    rng = np.random.default_rng(5)
    q = (bank[rng.integers(0, len(bank), 2500)] + 0.3 * rng.standard_normal((2500, bank.shape[1]))).astype(np.float32)
    int8, exact = Int8Search(None, quantized=quantized), ExactSearch(bank)
    d8, i8 = int8.query(q)
    de, ie = exact.query(q)
    assert d8.shape == (2500, 1) and np.mean(i8 == ie) > 0.9
    assert float(d8.max()) == pytest.approx(float(de.max()), rel=1e-6)
    assert int8._out.size <= SCRATCH_FLOATS  # the scratch did not grow with the frame (4 MiB)


@pytest.mark.parametrize("outliers", [0, 3])  # a good frame (many near-maxima) and a defect frame
def test_max_nn_is_the_exact_maximum(data, outliers):
    quantized, bank, _ = data
    rng = np.random.default_rng(outliers)
    int8 = Int8Search(None, quantized=quantized, block_rows=256)  # 12 blocks: the prefix path
    exact = ExactSearch(bank)
    for _ in range(5):
        # 2,000 queries: a top-10 is narrow enough for the pruned passes (see _WIDE_TOPK)
        q = (bank[rng.integers(0, len(bank), 2000)] + 0.4 * rng.standard_normal((2000, bank.shape[1]))).astype(np.float32)
        q[:outliers] += 5.0
        d_e, i_e = exact.query(q)
        i, d, j = int8.max_nn(q)
        top = int(np.argmax(d_e[:, 0]))
        assert d == pytest.approx(float(d_e[top, 0]), rel=1e-6)
        assert (i, j) == (top, int(i_e[top, 0]))
    default = Int8Search(None, quantized=quantized)  # the block layout served by default
    i, d, j = default.max_nn(q)
    assert d == pytest.approx(float(d_e.max()), rel=1e-6)
    codes, scale, mean = quantized
    small = Int8Search(None, quantized=(codes[:300], scale[:300], mean))  # under 3 prefixes: full search
    assert small.rows < 3 * small.prefix_rows
    d_e = ExactSearch(bank[:300]).query(q)[0]
    i, d, j = small.max_nn(q)
    assert d == pytest.approx(float(d_e.max()), rel=1e-6)



@pytest.mark.parametrize("block_rows, with_table", [(None, True), (None, False), (256, True)])
def test_every_row_is_found_wherever_the_blocks_split_the_bank(data, block_rows, with_table):
    """Brute force's answers, whatever the block layout: every bank row as a query's nearest
    neighbour (every block boundary and both sides of it, in one full pass), and rows from all
    over the bank as the neighbour of a frame's far patch (the image score: the pruned search,
    block by block)."""
    quantized, bank, _ = data
    rows, dim = bank.shape
    exact = ExactSearch(bank)
    table = exact.query(bank, k=9)[1] if with_table else None
    int8 = Int8Search(None, quantized=quantized, block_rows=block_rows, bank_knn=table)
    rng = np.random.default_rng(12)
    near = (bank + 0.01 * rng.standard_normal((rows, dim))).astype(np.float32)
    far_off = bank[:8] * 3.0 + 10.0  # the largest distances, which the search makes exact first
    np.testing.assert_array_equal(int8.query(np.concatenate([near, far_off]))[1][:rows, 0], np.arange(rows))
    # one far patch a frame, 1.0 from bank row r; the frame's other patches lie within 0.5 of a row
    far = rng.standard_normal((rows, dim))
    far = (bank + far / np.linalg.norm(far, axis=1, keepdims=True)).astype(np.float32)
    d_far, i_far = exact.query(far)
    assert np.mean(i_far[:, 0] == np.arange(rows)) > 0.95  # nearly always row r's own
    frame = (bank[rng.integers(0, rows, 60)] + 0.05 * rng.standard_normal((60, dim))).astype(np.float32)
    assert exact.query(frame)[0].max() < d_far.min()
    for r in [0, rows - 1, *rng.choice(rows, 150, replace=False)]:
        i, d, j = int8.max_nn(np.concatenate([frame, far[r : r + 1]]))
        assert (i, j) == (60, i_far[r, 0]) and d == pytest.approx(float(d_far[r, 0]), rel=1e-6), r


@pytest.mark.parametrize("rows, block_rows", [(3000, 256), (3000, 5000), (300, 5000)])  # prefix path x2, full search
def test_topk_nn_are_the_exact_k_largest(data, rows, block_rows):
    (codes, scale, mean), bank, _ = data
    quantized, bank = (codes[:rows], scale[:rows], mean), bank[:rows]
    rng = np.random.default_rng(9)
    int8, exact = Int8Search(None, quantized=quantized, block_rows=block_rows), ExactSearch(bank)
    for outliers in (0, 2, 15):
        # 2,000 queries: a top-10 is narrow enough for the pruned passes (see _WIDE_TOPK)
        q = (bank[rng.integers(0, len(bank), 2000)] + 0.4 * rng.standard_normal((2000, bank.shape[1]))).astype(np.float32)
        q[:outliers] += 5.0
        d_e, i_e = exact.query(q)
        order = np.argsort(-d_e[:, 0], kind="stable")[:10]
        top, dist, rows = int8.topk_nn(q, 10)
        np.testing.assert_allclose(dist, d_e[order, 0], rtol=1e-6)  # largest first, exact
        assert set(top.tolist()) == set(order.tolist()) and (rows == i_e[top, 0]).all()


def test_gemm_upper_bounds_hold(data):
    """topk_nn's first bounds come from the GEMM alone: each must be at least the float32
    distance to its winner row, also for far-off and near-duplicate queries."""
    quantized, bank, q = data
    int8 = Int8Search(None, quantized=quantized)
    rng = np.random.default_rng(11)
    near = bank[:200] + 1e-4 * rng.standard_normal((200, bank.shape[1])).astype(np.float32)
    for queries in (q, q * 3.0 + 10.0, near):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        idx, upper = int8._winners(int8._centred(queries), int8._blocks[:1])
        direct = np.linalg.norm(queries.astype(np.float64) - bank[idx], axis=1)
        assert (upper >= direct * (1 - 1e-6) - 1e-6).all()
        if queries is q:  # and not uselessly loose (the bound's slack is absolute: near-duplicates
            assert np.median(upper / direct) < 1.5  # sit far under it)


@pytest.mark.parametrize("k", [1, 10, 40])
def test_full_query_certifies_the_k_largest(data, k):
    """query(certify=k), the anomaly-map pass: its k largest distances are brute force's (the
    top-k mean image score computed alongside a map equals the decision path's)."""
    quantized, bank, _ = data
    rng = np.random.default_rng(1)
    q = (bank[rng.integers(0, len(bank), 600)] + 0.4 * rng.standard_normal((600, bank.shape[1]))).astype(np.float32)
    q[0] *= 20.0  # one far-off patch: the batch's 8-bit step grows, int8 winners go wrong (4 % here)
    d_e = np.sort(ExactSearch(bank).query(q)[0][:, 0])[::-1][:k]
    int8 = Int8Search(None, quantized=quantized)
    d_8 = np.sort(int8.query(q, certify=k)[0][:, 0])[::-1][:k]
    np.testing.assert_allclose(d_8, d_e, rtol=1e-6)
    np.testing.assert_allclose(int8.topk_nn(q, k)[1], d_e, rtol=1e-6)
    if k > 1:  # the maximum alone certified: the k-th largest is not brute force's
        d_1 = np.sort(int8.query(q, certify=1)[0][:, 0])[::-1][:k]
        assert np.abs(d_1 / d_e - 1).max() > 1e-3


def test_prefix_order_mixes_extremes_and_dense_rows(data):

    rng = np.random.default_rng(2)
    rows, prefix = 400, 40
    knn = np.concatenate([np.arange(rows)[:, None], rng.integers(0, rows, (rows, 8))], axis=1)
    knn[:, 1:4] = 300 + np.arange(3)  # rows 300-302: every row's neighbours (the dense region)
    order = prefix_order(rows, prefix, knn)
    assert sorted(order.tolist()) == list(range(rows))  # a permutation
    head = order[:prefix]
    assert head[:10].tolist() == list(range(10))  # the greedy extremes first
    assert {300, 301, 302} <= set(head.tolist())  # then the dense rows
    assert (np.diff(order[prefix:]) > 0).all()  # the rest in greedy order
    np.testing.assert_array_equal(prefix_order(rows, prefix, None), np.arange(rows))  # no table: greedy


def test_prefix_order_gives_the_same_answers(data):
    """A bank_knn-ordered prefix changes the search's work, never its answers or row numbers."""
    quantized, bank, q = data
    rng = np.random.default_rng(4)
    exact = ExactSearch(bank)
    knn = exact.query(bank, k=9)[1]
    plain = Int8Search(None, quantized=quantized)
    mixed = Int8Search(None, quantized=quantized, bank_knn=knn)
    assert not np.array_equal(mixed._order[: mixed.prefix_rows], np.arange(mixed.prefix_rows))
    np.testing.assert_array_equal(mixed.vectors(np.arange(len(bank))), bank)
    for _ in range(4):
        frame = (bank[rng.integers(0, len(bank), 300)] + 0.4 * rng.standard_normal((300, bank.shape[1]))).astype(np.float32)
        for k in (1, 5):
            a, b = plain.topk_nn(frame, k), mixed.topk_nn(frame, k)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[2], b[2])
            np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
        d_e, i_e = exact.query(frame)
        d_m, i_m = mixed.query(frame)
        assert float(d_m.max()) == pytest.approx(float(d_e.max()), rel=1e-6)
        assert int(i_m[np.argmax(d_m[:, 0]), 0]) == int(i_e[np.argmax(d_e[:, 0]), 0])
    # a frame with a clear maximum (4 far patches): the others are the GEMM's winners, uncertified;
    # each is a bank row number (not a block position), at the distance given
    d_m, i_m = mixed.query(q)
    assert mixed.last_refined < len(q) // 2
    np.testing.assert_allclose(d_m[:, 0], np.linalg.norm(q - bank[i_m[:, 0]], axis=1), rtol=1e-5)
    assert np.mean(i_m[:, 0] == exact.query(q)[1][:, 0]) > 0.9
    np.testing.assert_array_equal(mixed.query(bank[5:6], k=9)[1], exact.query(bank[5:6], k=9)[1])
