"""Nearest-neighbour search backends (edgead.scorer.search): fast, synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from edgead.errors import ArtifactError, ConfigError
from edgead.bank.codes import dequantize_bank, quantize_bank
from edgead.scorer.search import registry
from edgead.scorer.search.base import NearestNeighbourSearch
from edgead.scorer.search.exact import ExactSearch
from edgead.scorer.search.hnsw import HnswSearch, build_hnsw_index
from edgead.scorer.search.registry import HNSW_CROSSOVER, choose_backend, make_search


def clustered(rng: np.random.Generator, n: int, d: int, clusters: int = 12) -> np.ndarray:
    centres = rng.gamma(0.8, 1.0, size=(clusters, d)) * 2.0
    c = rng.integers(0, clusters, size=n)
    return (centres[c] + 0.6 * rng.standard_normal((n, d))).astype(np.float32)


def queries_near(rng: np.random.Generator, bank: np.ndarray, n: int, noise: float = 0.4,
                 outliers: int = 3) -> np.ndarray:
    q = bank[rng.integers(0, len(bank), size=n)] + noise * rng.standard_normal((n, bank.shape[1]))
    q[:outliers] += 8.0  # a few far-off "defect" patches
    return q.astype(np.float32)


def brute_force(bank: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    b, qq = bank.astype(np.float64), q.astype(np.float64)
    d = np.concatenate([np.sqrt(((qq[s:s + 32, None, :] - b[None, :, :]) ** 2).sum(-1))
                        for s in range(0, len(qq), 32)])
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(1)
    bank = clustered(rng, 2000, 32)
    q = queries_near(rng, bank, 400)
    return bank, q


@pytest.fixture(scope="module")
def small_index(small, tmp_path_factory):
    bank, _ = small
    path = tmp_path_factory.mktemp("hnsw") / "bank.hnsw"
    params = build_hnsw_index(bank, path, M=16, ef_construction=100, ef_search=64, seed=3)
    return path, params


# ---------------------------------------------------------------------------------------- exact


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("chunk,block", [(1024, None), (37, 101), (64, 101), (7, None)])
def test_exact_matches_brute_force(small, k, chunk, block):
    bank, q = small
    ref_d, ref_i = brute_force(bank, q, k)
    d, i = ExactSearch(bank, chunk=chunk, block=block).query(q, k=k)
    assert d.dtype == np.float32 and i.dtype == np.int64
    assert d.shape == i.shape == (len(q), k)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(d, axis=1) >= 0)


def test_exact_distance_is_zero_for_bank_rows(small):
    bank, _ = small
    d, i = ExactSearch(bank).query(bank[:50], k=1)
    np.testing.assert_array_equal(i[:, 0], np.arange(50))
    assert np.all(d == 0.0)  # recomputed directly, no sqrt(cancellation noise)


def test_exact_k_equals_bank_and_bad_k():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((10, 4)).astype(np.float32)
    q = rng.standard_normal((3, 4)).astype(np.float32)
    ex = ExactSearch(bank, block=3)
    d, i = ex.query(q, k=10)
    ref_d, ref_i = brute_force(bank, q, 10)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, rtol=1e-5)
    with pytest.raises(ValueError):
        ex.query(q, k=11)
    with pytest.raises(ValueError):
        ex.query(q, k=0)
    with pytest.raises(ValueError):
        ex.query(np.zeros((2, 5), np.float32))


def test_exact_distances_to(small):
    bank, q = small
    rows = np.array([0, 17, 1999, 17])
    got = ExactSearch(bank).distances_to(q[3], rows)
    ref = np.sqrt(((bank[rows].astype(np.float64) - q[3]) ** 2).sum(-1))
    assert got.dtype == np.float32 and got.shape == (4,)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    with pytest.raises(IndexError):
        ExactSearch(bank).distances_to(q[3], np.array([2000]))


def test_float16_bank(small):
    bank, q = small
    bank16 = bank.astype(np.float16)
    ref_d, ref_i = brute_force(bank16.astype(np.float32), q, 3)
    ex = ExactSearch(bank16)
    assert ex.bank.dtype == np.float32 and ex.bank.flags.c_contiguous
    d, i = ex.query(q, k=3)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, rtol=1e-5, atol=1e-5)
    hn = HnswSearch(bank16, ef_search=64)
    hd, _ = hn.query(q, k=1)
    assert hd.dtype == np.float32
    assert abs(hd.max() - d[:, 0].max()) <= 1e-3 * d[:, 0].max()


def test_float32_bank_is_not_copied(small):
    bank, _ = small
    ex = ExactSearch(bank)
    assert np.shares_memory(ex.bank, bank)
    assert not ex.bank.flags.writeable


def test_non_finite_bank_rejected():
    bank = np.ones((10, 4), np.float16)
    bank[3, 1] = np.inf
    with pytest.raises(ArtifactError):
        ExactSearch(bank)


# ----------------------------------------------------------------------------------------- hnsw


@pytest.mark.parametrize("exact_max", [True, False])
def test_hnsw_close_to_exact(small, exact_max):
    bank, q = small
    d_ref, i_ref = ExactSearch(bank).query(q, k=1)
    h = HnswSearch(bank, M=16, ef_construction=100, ef_search=64, exact_max=exact_max)
    d, i = h.query(q, k=1)
    assert d.dtype == np.float32 and i.dtype == np.int64 and d.shape == (len(q), 1)
    recall = np.mean(i[:, 0] == i_ref[:, 0])
    assert recall >= 0.95
    score, score_ref = float(d.max()), float(d_ref.max())
    assert abs(score - score_ref) <= 1e-3 * score_ref
    # an HNSW result is a real bank row: never closer than the true nearest neighbour
    assert np.all(d[:, 0] >= d_ref[:, 0] * (1 - 1e-5))


def test_hnsw_exact_max_is_exact_even_when_graph_search_is_poor(small):
    bank, q = small
    d_ref, i_ref = ExactSearch(bank).query(q, k=1)
    h = HnswSearch(bank, M=4, ef_construction=10, ef_search=1)  # deliberately weak graph
    d, i = h.query(q, k=1)
    assert h.last_refined >= 1
    j = int(np.argmax(d[:, 0]))
    assert float(d[j, 0]) == pytest.approx(float(d_ref.max()), rel=1e-6)
    assert j == int(np.argmax(d_ref[:, 0]))
    assert i[j, 0] == i_ref[j, 0]


def test_hnsw_exact_max_small_batches(small):
    bank, q = small
    d_ref, i_ref = ExactSearch(bank).query(q[:5], k=1)
    h = HnswSearch(bank, M=4, ef_construction=10, ef_search=1)
    d, i = h.query(q[:5], k=1)  # fewer queries than the first re-check round: all exact
    assert h.last_refined == 5
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-6)
    h.exact_max = False  # plain hnsw: nothing re-checked, and the count says so
    h.query(q[:5], k=1)
    assert h.last_refined == 0
    assert np.shares_memory(h._exact.bank, bank)  # float32 bank: no second copy


def test_hnsw_int8_recheck_is_exact_without_a_float_copy(small):
    """With the bank's int8 codes (an export's bank), the re-check runs over them: the maximum
    is still brute force's over the dequantized bank, on a deliberately weak graph, and no
    float32 copy of the bank is kept (vectors come from the codes)."""

    raw, q = small
    quantized = quantize_bank(raw)
    bank = dequantize_bank(*quantized)
    d_ref, i_ref = ExactSearch(bank).query(q, k=1)
    h = make_search(None, "hnsw", quantized=quantized, hnsw_params={"M": 4, "ef_construction": 10, "ef_search": 1})
    assert h._exact is None and h._refine is not None
    for chunk in np.array_split(np.arange(len(q)), 8):
        d, i = h.query(q[chunk], k=1)
        j = int(np.argmax(d[:, 0]))
        assert float(d[j, 0]) == pytest.approx(float(d_ref[chunk].max()), rel=1e-6)
        assert i[j, 0] == i_ref[chunk][int(np.argmax(d_ref[chunk, 0])), 0]
    assert h.last_refined >= 1
    h.exact_max = False  # the graph alone misses the maximum somewhere: the re-check did the work
    assert any(float(h.query(q[c], k=1)[0].max()) > float(d_ref[c].max()) * (1 + 1e-6)
               for c in np.array_split(np.arange(len(q)), 8))
    np.testing.assert_array_equal(h.vectors(np.array([3, 7])), bank[[3, 7]])
    np.testing.assert_allclose(h.distances_to(q[0], np.array([3, 7])), np.linalg.norm(bank[[3, 7]] - q[0], axis=1),
                               rtol=1e-6)


def test_hnsw_k_and_distances_to(small):
    bank, q = small
    h = HnswSearch(bank, ef_search=64)
    d, i = h.query(q[:20], k=5)
    assert d.shape == i.shape == (20, 5)
    assert np.all(np.diff(d, axis=1) >= 0)
    np.testing.assert_allclose(d[0], h.distances_to(q[0], i[0]), rtol=1e-5)
    with pytest.raises(ValueError):
        h.query(q, k=len(bank) + 1)


def test_hnsw_save_load_round_trip(small, small_index, tmp_path):
    bank, q = small
    path, params = small_index
    assert params == {"M": 16, "ef_construction": 100, "ef_search": 64, "seed": 3}
    built = HnswSearch(bank, M=16, ef_construction=100, ef_search=64, seed=3)
    loaded = HnswSearch(bank, path, ef_search=64)
    assert loaded.M == 16 and loaded.ef_construction == 100
    for exact_max in (False, True):
        built.exact_max = loaded.exact_max = exact_max
        d1, i1 = built.query(q, k=3)
        d2, i2 = loaded.query(q, k=3)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(d1, d2)
    again = tmp_path / "again.hnsw"
    loaded.save(again)
    assert again.read_bytes() == path.read_bytes()
    assert not (tmp_path / "again.hnsw.tmp").exists()


def test_hnsw_load_from_float16_bank(small, tmp_path):
    bank, q = small
    bank16 = bank.astype(np.float16)
    path = tmp_path / "b16.hnsw"
    build_hnsw_index(bank16, path)
    d, _ = HnswSearch(bank16, path).query(q)
    d_ref, _ = ExactSearch(bank16).query(q)
    assert float(d.max()) == pytest.approx(float(d_ref.max()), rel=1e-6)


def _corrupt_variants(good: bytes, rows: int, per_element: int) -> dict[str, bytes]:
    bad_link = bytearray(good)  # element 0, first level-0 neighbour id -> out of range
    bad_link[96 + 4: 96 + 8] = (rows + 5).to_bytes(4, "little")
    bad_count = bytearray(good)  # element 0 claims more neighbours than maxM0
    bad_count[96: 98] = (999).to_bytes(2, "little")
    bad_tail = bytearray(good)  # element 0's upper-level link list size not a whole block
    start1 = 96 + rows * per_element
    bad_tail[start1: start1 + 4] = (3).to_bytes(4, "little")
    return {
        "empty": b"",
        "garbage": b"not an hnsw index at all" * 10,
        "truncated": good[: len(good) // 2],
        "header_only": good[:96],
        "bad_header": bytes(8) + b"\xff" * 40 + good[48:],
        "trailing": good + b"\0" * 16,
        "bad_link": bytes(bad_link),
        "bad_count": bytes(bad_count),
        "bad_tail": bytes(bad_tail),
    }


@pytest.mark.parametrize("variant", ["empty", "garbage", "truncated", "header_only", "bad_header",
                                     "trailing", "bad_link", "bad_count", "bad_tail"])
def test_corrupt_index_raises_artifact_error(small, small_index, tmp_path, variant):
    bank, _ = small
    path, _ = small_index
    good = path.read_bytes()
    per_element = int.from_bytes(good[24:32], "little")
    bad = tmp_path / f"{variant}.hnsw"
    bad.write_bytes(_corrupt_variants(good, len(bank), per_element)[variant])
    with pytest.raises(ArtifactError, match=variant):
        HnswSearch(bank, bad)


def test_missing_index_raises_artifact_error(small, tmp_path):
    bank, _ = small
    with pytest.raises(ArtifactError, match="nope.hnsw"):
        HnswSearch(bank, tmp_path / "nope.hnsw")


def test_mismatched_index_raises_artifact_error(small, small_index):
    bank, _ = small
    path, _ = small_index
    with pytest.raises(ArtifactError, match="bank.hnsw"):  # fewer rows
        HnswSearch(bank[:1500], path)
    with pytest.raises(ArtifactError, match="bank.hnsw"):  # other dimension, same row count
        HnswSearch(np.zeros((2000, 16), np.float32) + 1, path)
    other = np.random.default_rng(9).standard_normal(bank.shape).astype(np.float32)
    with pytest.raises(ArtifactError, match="not built from this memory bank"):
        HnswSearch(other, path)


# ------------------------------------------------------------------------------------ selection


def test_choose_backend():
    assert choose_backend(HNSW_CROSSOVER + 1, True) == "hnsw"
    assert choose_backend(HNSW_CROSSOVER, True) == "int8"
    assert choose_backend(10 * HNSW_CROSSOVER, False) == "int8"
    assert choose_backend(10, False) == "int8"
    assert choose_backend(10, False, int8_bank=False) == "exact"  # float banks keep their scores
    assert choose_backend(HNSW_CROSSOVER + 1, True, int8_bank=False) == "hnsw"


def test_make_search_backends(small, small_index, monkeypatch):
    bank, q = small
    path, params = small_index
    ex = make_search(bank, "exact")
    assert isinstance(ex, ExactSearch) and ex.name == "exact"
    assert isinstance(ex, NearestNeighbourSearch)
    hn = make_search(bank, "hnsw", index_path=path, hnsw_params=params, threads=2)
    assert isinstance(hn, HnswSearch) and hn.name == "hnsw" and hn.threads == 2
    assert isinstance(hn, NearestNeighbourSearch)
    assert hn.ef_search == 64
    built = make_search(bank, "HNSW", hnsw_params={"M": 8, "ef_construction": 50, "ef_search": 20})
    assert isinstance(built, HnswSearch) and built.M == 8 and built.ef_search == 20
    # auto: a float bank -> exact even with an index; above the crossover + index -> hnsw
    assert make_search(bank, "auto", index_path=path).name == "exact"
    monkeypatch.setattr(registry, "HNSW_CROSSOVER", 1000)
    assert make_search(bank, "auto", index_path=path, hnsw_params=params).name == "hnsw"
    assert make_search(bank, "auto").name == "exact"  # no index -> exact
    d1, _ = make_search(bank, "auto", index_path=path).query(q)
    d2, _ = ex.query(q)
    assert float(d1.max()) == pytest.approx(float(d2.max()), rel=1e-6)


@pytest.mark.parametrize("backend", ["faiss", "", "annoy"])
def test_make_search_unknown_backend(small, backend):
    bank, _ = small
    with pytest.raises(ConfigError, match="backend"):
        make_search(bank, backend)


def test_make_search_bad_hnsw_params(small):
    bank, _ = small
    with pytest.raises(ConfigError, match="ef_serch"):
        make_search(bank, "hnsw", hnsw_params={"ef_serch": 10})
    with pytest.raises(ConfigError):
        make_search(bank, "hnsw", hnsw_params={"ef_search": "ten"})
    with pytest.raises(ConfigError):
        make_search(bank, "hnsw", hnsw_params={"ef_search": 0})


def test_empty_query_batch(small):
    bank, _ = small
    for s in (ExactSearch(bank), HnswSearch(bank[:200])):
        d, i = s.query(np.zeros((0, 32), np.float32), k=2)
        assert d.shape == i.shape == (0, 2)
