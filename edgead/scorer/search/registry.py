"""Which nearest-neighbour backend searches a memory bank, and building it.

``backend="auto"`` (:func:`choose_backend`): the int8 search for a bank stored as int8 (export's
default), the exact float32 search for a float16/float32 bank (older artifacts: int8 would
first quantize it and move their calibrated scores a little), and the HNSW graph above
:data:`HNSW_CROSSOVER` rows when the artifact has an index.  A new backend is one new file
beside this one implementing :class:`~edgead.scorer.search.base.NearestNeighbourSearch`, and
one entry in :data:`BACKENDS` and :func:`make_search`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgead.bank.codes import dequantize_bank
from edgead.errors import ConfigError
from edgead.scorer.search.base import NearestNeighbourSearch
from edgead.scorer.search.exact import ExactSearch
from edgead.scorer.search.hnsw import DEFAULT_HNSW_PARAMS, HnswSearch
from edgead.scorer.search.int8 import Int8Search

log = logging.getLogger(__name__)

# Bank size (rows) above which backend="auto" uses the HNSW index (when the artifact has one),
# and export builds one.  Below it the int8 search is at least as fast as the graph, with its
# image scores exact and its maps near-exact, where the graph's maps drift on large banks (see
# the benchmarks page).  export's --coreset-max keeps default banks well below it.
HNSW_CROSSOVER: int = 100_000

# The values of make_search(backend=...): "auto" picks with choose_backend.
BACKENDS = ("auto", "int8", "exact", "hnsw")

_HNSW_PARAM_KEYS = tuple(DEFAULT_HNSW_PARAMS)


def choose_backend(bank_rows: int, has_index: bool, int8_bank: bool = True) -> str:
    """Backend for ``backend="auto"``: "hnsw" when an index exists and the bank has more than
    :data:`HNSW_CROSSOVER` rows; else "int8" (:class:`~edgead.scorer.search.int8.Int8Search`) for
    a bank stored as int8 (export's default), "exact" for a float16/float32 bank (older
    artifacts: int8 would first quantize it and move their calibrated scores a little)."""
    if has_index and int(bank_rows) > HNSW_CROSSOVER:
        return "hnsw"
    return "int8" if int8_bank else "exact"


def hnsw_kwargs(hnsw_params: dict | None) -> dict:
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
    uses to choose its bounding prefix (:func:`edgead.scorer.search.int8_layout.prefix_order`).
    """
    choice = str(backend).strip().lower() if isinstance(backend, str) else backend
    if choice not in BACKENDS:
        raise ConfigError(f"unknown nearest-neighbour backend {backend!r}: "
                          f"expected one of {', '.join(repr(b) for b in BACKENDS)}")
    params = hnsw_kwargs(hnsw_params)
    if bank is None and quantized is not None:
        rows = int(quantized[0].shape[0])
    else:
        rows = int(np.shape(bank)[0]) if np.ndim(bank) >= 1 else 0
    if choice == "auto":
        choice = choose_backend(rows, index_path is not None, quantized is not None)
    from_codes = bank is None and quantized is not None  # the float bank is exactly the codes' dequantization
    if bank is None and choice != "int8":  # exact and hnsw search float32 rows
        bank = dequantize_bank(*quantized)
    if choice == "exact":
        return ExactSearch(bank)
    if choice == "int8":
        return Int8Search(None if quantized is not None else bank, quantized=quantized, threads=threads,
                          bank_knn=bank_knn)
    if index_path is None:
        log.warning("no HNSW index in the artifact: building one for %d bank rows at start-up "
                    "(M=%d, ef_construction=%d)", rows, params["M"], params["ef_construction"])
    return HnswSearch(bank, index_path, M=params["M"], ef_construction=params["ef_construction"],
                      ef_search=params["ef_search"], threads=threads, seed=params["seed"],
                      quantized=quantized if from_codes else None)  # re-checked over the codes
