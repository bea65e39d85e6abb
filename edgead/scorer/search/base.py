"""What every nearest-neighbour backend of the PatchCore memory bank offers, and what they share.

A backend is one file beside this one (``exact``, ``int8``, ``hnsw``); :mod:`.registry` chooses
one.  Each implements :class:`NearestNeighbourSearch`: distances returned are Euclidean (not
squared), float32; indices are int64 rows of the bank.  The input checks and the certification
of the largest distances (:func:`certify_top`, the PatchCore image score made exact on an
approximate search) live here so that every backend gives the same errors and the same answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from edgead.errors import ArtifactError

__all__ = [
    "NearestNeighbourSearch",
    "as_bank",
    "as_queries",
    "as_rows",
    "certify_top",
    "check_k",
    "direct_distances",
    "top_by_query",
]


@runtime_checkable
class NearestNeighbourSearch(Protocol):
    """What the scorer needs from a nearest-neighbour backend."""

    name: str  # the backend's registry name: "exact", "int8" or "hnsw"
    rows: int  # bank rows
    dim: int  # feature dimension
    # True when topk_nn searches fewer (query, row) pairs than query(): the image score alone is
    # then cheaper than the anomaly map, and the map is best computed only when it is asked for
    partial_top: bool

    def query(self, queries: np.ndarray, k: int = 1, certify: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """queries float32 (Q, D) -> (distances (Q, k) float32 Euclidean, indices (Q, k) int64),
        each row sorted ascending.  An approximate backend makes the ``certify`` largest
        nearest-neighbour distances of the batch exact (k == 1): the PatchCore image score."""
        ...

    def topk_nn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``k`` queries with the largest nearest-neighbour distances: (query indices,
        distances, neighbour rows), largest first, exactly as brute force gives them."""
        ...

    def distances_to(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Euclidean distances from one query (D,) to bank rows ``rows`` -> float32 (len(rows),)."""
        ...

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Bank rows ``rows`` as float32 (len(rows), D)."""
        ...

    @property
    def nbytes(self) -> int:
        """Bytes of the bank arrays this search holds in numpy (the libraries' own copies aside)."""
        ...


# --------------------------------------------------------------------------------------------
# input checks


def as_bank(bank: np.ndarray) -> np.ndarray:
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


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q.reshape(1, -1)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (Q, {dim}), got {np.shape(queries)}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise ValueError("queries contain non-finite values (inf/nan)")
    return q


def check_k(k: int, rows: int) -> int:
    k = int(k)
    if k < 1 or k > rows:
        raise ValueError(f"k must be in [1, {rows}] (bank rows), got {k}")
    return k


def as_rows(rows: np.ndarray, n: int) -> np.ndarray:
    r = np.asarray(rows).reshape(-1)
    if r.size and not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"rows must be integers, got dtype {r.dtype}")
    r = r.astype(np.int64, copy=False)
    if r.size and (r.min() < 0 or r.max() >= n):
        raise IndexError(f"bank row index out of range [0, {n})")
    return r


def direct_distances(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Euclidean distances ``||vectors - query||`` along the last axis, float32, no cancellation."""
    diff = vectors - query
    return np.sqrt(np.einsum("...d,...d->...", diff, diff)).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# the largest distances, exact


def certify_top(measure: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], dist: np.ndarray,
                idx: np.ndarray, *, k: int = 1, exact: np.ndarray | None = None,
                first: int, later: int | None = None) -> int:
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


def top_by_query(search: NearestNeighbourSearch, queries: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`NearestNeighbourSearch.topk_nn` for a backend that searches every query anyway:
    one :meth:`~NearestNeighbourSearch.query` certifying the ``k`` largest, then the ``k`` largest."""
    q = as_queries(queries, search.dim)
    if q.shape[0] == 0:
        raise ValueError("topk_nn needs at least one query")
    k = max(1, min(int(k), q.shape[0]))
    dist, idx = search.query(q, k=1, certify=k)
    top = np.argsort(-dist[:, 0], kind="stable")[:k]
    return top, dist[top, 0], idx[top, 0]
