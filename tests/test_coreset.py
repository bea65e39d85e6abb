"""Tests of the coreset (edgead.fit.coreset, numpy; the export uses it too): exact greedy k-center
selection, radii, sizes, determinism."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgead.fit import coreset  # noqa: E402
from edgead.fit.coreset import covering_radius, coreset_size, greedy_coreset, project  # noqa: E402


def clustered(n: int = 3000, dim: int = 32, clusters: int = 30, seed: int = 0) -> np.ndarray:
    """Gaussian clusters of very uneven size and spread."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (clusters, dim))
    weights = rng.dirichlet(np.full(clusters, 0.5))
    labels = rng.choice(clusters, n, p=weights)
    spread = rng.uniform(0.2, 1.5, clusters)
    return (centres[labels] + rng.normal(size=(n, dim)) * spread[labels, None]).astype(np.float32)


def reference_greedy(y: np.ndarray, size: int, start: int) -> list[int]:
    """Textbook greedy k-center in float64: distances from each new centre to all rows."""
    y = y.astype(np.float64)
    mind = ((y - y[start]) ** 2).sum(1)
    selected = [start]
    while len(selected) < size:
        j = int(np.argmax(mind))
        selected.append(j)
        mind = np.minimum(mind, ((y - y[j]) ** 2).sum(1))
    return selected


def greedy_deviations(y: np.ndarray, indices: np.ndarray, rel_tol: float = 1e-5) -> tuple[int, float]:
    """Walk the given selection in float64; every pick must be the farthest row (ties within
    rel_tol allowed and counted). Returns (near-tie deviations, final radius)."""
    y = y.astype(np.float64)
    mind = ((y - y[indices[0]]) ** 2).sum(1)
    deviations = 0
    for step, row in enumerate(indices[1:], start=1):
        best = int(np.argmax(mind))
        if row != best:
            assert mind[row] >= mind[best] * (1 - rel_tol), (
                f"step {step}: picked row {row} at {mind[row]:.6g}, farthest is {best} at {mind[best]:.6g}")
            deviations += 1
        mind = np.minimum(mind, ((y - y[row]) ** 2).sum(1))
    return deviations, float(np.sqrt(mind.max()))


# ----------------------------------------------------------------------------- coreset_size

def test_coreset_size_ratio_and_absolute():
    assert coreset_size(160_000, 0.1) == 16_000
    assert coreset_size(1000, 0.25) == 250
    assert coreset_size(1000, 1.0) == 1000          # float 1.0 is a ratio: everything
    assert coreset_size(1000, 0.0001) == 1          # ratio: at least one row
    assert coreset_size(1000, 1) == 1               # int: absolute count
    assert coreset_size(1000, 50) == 50
    assert coreset_size(1000, 50.0) == 50           # float > 1: absolute count
    assert coreset_size(1000, np.int64(7)) == 7
    assert coreset_size(1000, 5000) == 1000         # capped at n_rows
    assert coreset_size(1000, 1000.0) == 1000


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, -5, float("nan"), float("inf"), True, "0.1", None])
def test_coreset_size_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        coreset_size(1000, bad)


# ----------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("active, chunk, block_rows, block_cols", [
    (None, None, None, None),  # module defaults: one epoch, everything active
    (64, 50, 32, 7),           # many epochs, many refresh rounds, column chunks, parking
    (1, 4096, 1000, 2048),     # one greedy step per epoch: plain lazy greedy
])
@pytest.mark.parametrize("proj_dim", [16, None])
def test_fast_path_matches_reference_greedy(monkeypatch, active, chunk, block_rows, block_cols, proj_dim):
    x = clustered()
    if active is not None:
        monkeypatch.setattr(coreset, "ACTIVE_POINTS", active)
        monkeypatch.setattr(coreset, "REFRESH_CHUNK", chunk)
        monkeypatch.setattr(coreset, "BLOCK_ROWS", block_rows)
        monkeypatch.setattr(coreset, "BLOCK_COLS", block_cols)
        monkeypatch.setattr(coreset, "_COMPACT_EVERY", 4)
    size = 300
    res = greedy_coreset(x, size, proj_dim=proj_dim, seed=3)
    y = project(x, proj_dim, seed=3)
    assert y.shape == (3000, proj_dim or 32)
    assert res.indices.dtype == np.int64 and res.indices.shape == (size,)
    assert len(set(res.indices.tolist())) == size

    ref = reference_greedy(y, size, int(res.indices[0]))
    deviations, radius = greedy_deviations(y, res.indices)
    if deviations == 0:
        assert res.indices.tolist() == ref
    assert deviations <= 2                      # rounding ties only, and rare
    assert res.projected_radius == pytest.approx(radius, rel=1e-5)


def test_exact_rows_know_their_nearest_centre(monkeypatch):
    """Rows brought up to date (stamp == k) hold their exact min-distance and nearest centre;
    stale rows hold an upper bound: the distance to a selected row."""
    monkeypatch.setattr(coreset, "ACTIVE_POINTS", 64)
    monkeypatch.setattr(coreset, "REFRESH_CHUNK", 100)
    y = project(clustered(), 16)
    state = coreset._Greedy(y, 250, 0)
    state.run()
    yy = y.astype(np.float64)
    sel = np.asarray(state.sel)
    d2 = ((yy[:, None, :] - yy[sel][None]) ** 2).sum(-1)
    exact = (state.stamp == len(sel)) & np.isfinite(state.mind)
    assert 0 < exact.sum() < len(yy)            # lazy: some rows were never brought up to date
    assert np.allclose(state.mind[exact], d2[exact].min(1), rtol=1e-4, atol=1e-4)
    assert np.allclose(d2[exact, state.assign[exact]], d2[exact].min(1), rtol=1e-4, atol=1e-4)
    live = np.isfinite(state.mind)
    bound = d2[np.flatnonzero(live), state.assign[live]]
    assert np.all(bound <= state.mind[live] * (1 + 1e-4) + 1e-4)
    assert np.all(bound >= d2[live].min(1) - 1e-4)
    assert math.sqrt(state.mind.max()) == pytest.approx(np.sqrt(d2.min(1).max()), rel=1e-5)


def test_reference_check_catches_a_wrong_pick():
    """The exactness check above is not vacuous: a swapped pick is reported."""
    x = clustered()
    y = project(x, 16, seed=0)
    good = np.asarray(reference_greedy(y, 50, 0))
    bad = good.copy()
    bad[10], bad[20] = bad[20], bad[10]
    assert greedy_deviations(y, good) == (0, pytest.approx(greedy_deviations(y, good)[1]))
    with pytest.raises(AssertionError):
        greedy_deviations(y, bad)


@pytest.mark.parametrize("proj_dim", [8, 24])
def test_covering_radius_matches_brute_force(proj_dim):
    x = clustered(seed=1)
    res = greedy_coreset(x, 200, proj_dim=proj_dim, seed=0)
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[res.indices][None].astype(np.float64)) ** 2).sum(-1))
    exact = d.min(1).max()
    assert res.covering_radius == pytest.approx(exact, rel=1e-5)
    assert covering_radius(x, res.indices) == pytest.approx(exact, rel=1e-5)
    assert covering_radius(x, x[res.indices], chunk=100) == pytest.approx(exact, rel=1e-5)


def test_no_projection_when_proj_dim_not_smaller():
    x = clustered(n=800, dim=16)
    a = greedy_coreset(x, 40, proj_dim=None, seed=5)
    b = greedy_coreset(x, 40, proj_dim=64, seed=5)      # >= D: no projection either
    assert a.indices.tolist() == b.indices.tolist()
    assert a.covering_radius == pytest.approx(a.projected_radius, rel=1e-6)
    assert a.covering_radius == pytest.approx(covering_radius(x, a.indices), rel=1e-5)


# ----------------------------------------------------------------------------- quality

def test_greedy_beats_random_selection_on_clustered_data():
    x = clustered(n=4000, dim=24, clusters=40, seed=2)
    size = 80
    greedy = greedy_coreset(x, size, proj_dim=16, seed=0).covering_radius
    rng = np.random.default_rng(0)
    randoms = [covering_radius(x, rng.choice(len(x), size, replace=False)) for _ in range(5)]
    assert greedy < 0.7 * min(randoms), (greedy, randoms)


# ----------------------------------------------------------------------------- semantics

def test_deterministic_for_a_seed_and_seed_matters():
    x = clustered(n=2000)
    a = greedy_coreset(x, 100, seed=7)
    b = greedy_coreset(x, 100, seed=7)
    assert a.indices.tolist() == b.indices.tolist()
    assert a.covering_radius == b.covering_radius
    others = [greedy_coreset(x, 100, seed=s).indices.tolist() for s in (8, 9)]
    assert any(o != a.indices.tolist() for o in others)


def test_blas_thread_budget_is_restored():
    from threadpoolctl import threadpool_info

    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    greedy_coreset(clustered(n=2000), 150)
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == before


def test_memmapped_features_select_the_same_rows(tmp_path):
    """Teach spills features to disk beyond its memory budget: the selection is the same."""
    x = clustered(n=2000)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    a, b = greedy_coreset(x, 150, proj_dim=16), greedy_coreset(mm, 150, proj_dim=16)
    assert a.indices.tolist() == b.indices.tolist() and a.covering_radius == b.covering_radius


@pytest.mark.parametrize("extra", [0, 5])
def test_size_at_least_n_returns_all_rows(extra):
    x = clustered(n=300)
    res = greedy_coreset(x, 300 + extra)
    assert res.indices.tolist() == list(range(300))
    assert res.indices.dtype == np.int64
    assert res.covering_radius == 0.0 and res.projected_radius == 0.0


def test_duplicate_rows_are_never_selected_twice():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(50, 8)).astype(np.float32)
    x = np.repeat(distinct, 20, axis=0)[rng.permutation(1000)]
    res = greedy_coreset(x, 60, proj_dim=None)
    assert len(set(res.indices.tolist())) == 60
    assert len({tuple(r) for r in x[res.indices[:50]]}) == 50     # all distinct rows first
    assert res.covering_radius == pytest.approx(0.0, abs=1e-3)


def test_progress_bar_goes_to_stderr(capsys):
    pytest.importorskip("tqdm")  # the export's progress bars (a Pi's install has no tqdm; teach shows none)
    greedy_coreset(clustered(n=500), 20, progress=True)
    captured = capsys.readouterr()
    assert "coreset" in captured.err and captured.out == ""


@pytest.mark.parametrize("bad", [np.zeros(10, np.float32), np.zeros((0, 4), np.float32)])
def test_rejects_bad_shapes(bad):
    with pytest.raises(ValueError):
        greedy_coreset(bad, 1)


def test_rejects_bad_proj_dim_and_bad_selection():
    x = clustered(n=200)
    with pytest.raises(ValueError):
        greedy_coreset(x, 10, proj_dim=-4)
    with pytest.raises(ValueError):
        covering_radius(x, np.array([0.0, 3.0]))     # float indices: ambiguous
    with pytest.raises(ValueError):
        covering_radius(x, np.zeros((3, 5), np.float32))


def test_rejects_non_finite_features_and_bad_size():
    x = clustered(n=200)
    with pytest.raises(ValueError):
        greedy_coreset(x, 0)
    x[7, 3] = np.nan
    with pytest.raises(ValueError):
        greedy_coreset(x, 10)


def test_grow_bank_adds_only_what_the_bank_does_not_cover():
    """Folding patches into a bank: covered ones add nothing; uncovered ones join until every new
    patch is within the radius; max_rows bounds it."""
    from edgead.fit.scorers import grow_bank

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(200, 16)).astype(np.float32)
    near = bank[:50] + 0.01 * rng.normal(size=(50, 16)).astype(np.float32)
    grown, r = grow_bank(bank, near, radius=0.5)
    assert len(grown) == 200 and r < 0.5
    far = rng.normal(loc=10.0, size=(300, 16)).astype(np.float32)
    grown, r = grow_bank(bank, far, radius=0.5)
    assert len(grown) > 200 and r <= 0.5
    d = np.sqrt(((far[:, None] - grown[None]) ** 2).sum(-1)).min(1)
    assert d.max() <= 0.5 + 1e-4
    capped, r_cap = grow_bank(bank, far, radius=0.5, max_rows=210)
    assert len(capped) == 210 and r_cap > 0.5
