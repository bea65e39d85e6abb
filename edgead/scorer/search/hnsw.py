"""Approximate nearest neighbours with an hnswlib HNSW graph (``'l2'`` space), for large banks.

The index is normally built on the workstation (:func:`build_hnsw_index`) and shipped in the
artifact (links-only, :mod:`edgead.bank.hnsw_file`); it is validated against the bank before
use.  hnswlib is an optional dependency (``pip install edgead[hnsw]``, or Debian's
``python3-hnswlib``): it is imported only when an HNSW search is built, which the default
backend choice does only above :data:`edgead.scorer.search.registry.HNSW_CROSSOVER` bank rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgead.bank.hnsw_file import check_links, expanded_index, read_header
from edgead.errors import ArtifactError, ConfigError
from edgead.scorer.search.base import (
    as_bank,
    as_queries,
    as_rows,
    certify_top,
    check_k,
    direct_distances,
    top_by_query,
)
from edgead.scorer.search.exact import ExactSearch
from edgead.scorer.search.int8 import Int8Search

# Defaults for build_hnsw_index / HnswSearch.  With the exact re-check of the largest distances
# (exact_max) the image score no longer depends on ef_search, which then only trades speed
# against anomaly-map fidelity: a small ef_search.  Smaller M lost recall on clustered banks,
# larger M was slower at equal recall.
DEFAULT_HNSW_PARAMS: dict = {"M": 16, "ef_construction": 200, "ef_search": 16, "seed": 0}

# exact_max: queries re-searched exactly in the first certification round (a small share of a
# brute-force frame; on real features it sufficed)
_REFINE_FIRST = 16

HNSW_EXTRA = "pip install 'edgead[hnsw]' (or apt install python3-hnswlib on a Pi)"


def _hnswlib():
    """hnswlib, imported on first use: a Pi that serves banks below the crossover needs none."""
    try:
        import hnswlib  # the one deliberate lazy import: an optional extra
    except ImportError as exc:
        raise ArtifactError(f"this model searches its memory bank with an HNSW index, which needs hnswlib: "
                            f"{HNSW_EXTRA} ({exc})") from None
    return hnswlib


class HnswSearch:
    """Approximate nearest neighbours with an hnswlib HNSW graph ('l2' space).

    With ``index_path`` the index is loaded and checked against ``bank`` (header, graph links,
    element count, dimension, labels 0..N-1, and a sample of stored vectors); any mismatch or
    unreadable file raises :class:`ArtifactError` naming the file.  Without it the index is built
    here (slow on a Pi for a large bank: build it on the workstation with
    :func:`build_hnsw_index`).  ``threads`` is the number of hnswlib query threads (1: the
    calling thread does the work).

    ``exact_max`` (default): for ``k == 1`` the largest distances of each query batch -- the
    PatchCore image score -- and their neighbours are made exact: a graph search that gets stuck
    far from the true neighbour (rare, but it happens on clustered banks, and the image score is
    a max over hundreds of patches, so one bad patch decides it) can only *over*-estimate a
    distance, so the patches with the largest HNSW distances are re-searched by brute force
    until the maximum is certified (:func:`~edgead.scorer.search.base.certify_top`; one pass of
    a few patches usually suffices).  Other patches keep their HNSW distances (anomaly map).
    The re-check is brute force over the float32 bank, kept in memory next to the index's own
    copy (a view if the caller's bank already is float32, else a converted copy of 4*N*D
    bytes); with ``quantized`` = the int8 (codes, scale, mean) that ``bank`` is the
    dequantization of (an export's bank), it is
    :meth:`edgead.scorer.search.int8.Int8Search.exact_nn` over those codes instead: the same
    answers, faster, and no float32 copy.  ``exact_max=False`` keeps neither.
    """

    name = "hnsw"
    partial_top = False  # the graph search visits every query

    def __init__(self, bank: np.ndarray, index_path: str | Path | None = None, *,
                 M: int = DEFAULT_HNSW_PARAMS["M"],
                 ef_construction: int = DEFAULT_HNSW_PARAMS["ef_construction"],
                 ef_search: int = DEFAULT_HNSW_PARAMS["ef_search"],
                 threads: int = 1, seed: int = DEFAULT_HNSW_PARAMS["seed"],
                 exact_max: bool = True, quantized: tuple | None = None):
        hnswlib = _hnswlib()
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
        bank32 = as_bank(arr)  # validates; float32 copy if the bank is float16
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
        with expanded_index(path, bank) as full:  # links-only files (export's default): the full file
            try:
                self._load_full(full, bank)
            except ArtifactError as exc:  # name the artifact's file, not the temporary copy
                raise ArtifactError(str(exc).replace(str(full), str(path))) from None

    def _load_full(self, path: Path, bank: np.ndarray) -> None:
        header = read_header(path)
        if header["count"] != self.rows:
            raise ArtifactError(f"HNSW index {path} holds {header['count']} vectors but the memory "
                                f"bank has {self.rows} rows: index and bank do not belong together")
        if header["data_bytes"] != 4 * self.dim:
            raise ArtifactError(f"HNSW index {path} has dimension {header['data_bytes'] / 4:g} but "
                                f"the memory bank has dimension {self.dim}")
        check_links(path, header)
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
        q = as_queries(queries, self.dim)
        k = check_k(k, self.rows)
        if q.shape[0] == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        labels, sq = self.index.knn_query(q, k=k, num_threads=self.threads)
        dist = np.sqrt(np.maximum(sq, 0.0, dtype=np.float32)).astype(np.float32, copy=False)
        idx = labels.astype(np.int64, copy=False)
        self.last_refined = 0
        if k == 1 and self.exact_max and self._recheck is not None:
            self.last_refined = certify_top(lambda rows: tuple(a[:, 0] for a in self._recheck(q[rows], 1)),
                                            dist[:, 0], idx[:, 0], k=certify, first=_REFINE_FIRST)
        return dist, idx

    def distances_to(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        q = as_queries(query, self.dim)[0]
        r = as_rows(rows, self.rows)
        if r.size == 0:
            return np.empty(0, np.float32)
        return direct_distances(q, self.vectors(r))

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        r = np.asarray(rows)
        if self._exact is not None:
            return self._exact.bank[r]
        if self._refine is not None:  # the dequantized rows: the bank itself
            return self._refine.vectors(r.reshape(-1)).reshape(*r.shape, self.dim)
        return np.asarray(self.index.get_items(r.reshape(-1)), dtype=np.float32).reshape(*r.shape, self.dim)

    def topk_nn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return top_by_query(self, queries, k)

    @property
    def nbytes(self) -> int:
        """The graph links and the index's float32 copy of the bank, and the re-check's bank."""
        recheck = self._exact.nbytes if self._exact is not None else \
            self._refine.nbytes if self._refine is not None else 0
        # level 0 per element (hnswlib's layout): a link count, 2*M links, the vector, the label
        return int(self.rows * (4 + 8 * self.M + 4 * self.dim + 8) + recheck)


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

