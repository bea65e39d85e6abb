"""Writing a fitted scorer into an artifact's staging directory: one function for the export and
teach, so that both ship the same files for the same fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.bank.hnsw_file import strip_vectors
from edgead.bank.store import save_bank, save_bank_knn
from edgead.fit.oof import FoldSource, row_images
from edgead.fit.scorers import PatchCoreFit, fit_padim
from edgead.manifest import scorer_files
from edgead.scorer.search.exact import ExactSearch
from edgead.scorer.search.hnsw import build_hnsw_index
from edgead.scorer.search.registry import HNSW_CROSSOVER, choose_backend


def write_patchcore_bank(staging: Path, bank: np.ndarray, tile: int | None, *, bank_dtype: str,
                         num_neighbors: int, reweighted: bool, hnsw: str, seed: int) -> tuple[np.ndarray, dict | None]:
    """Write one memory bank (and its k-NN table / HNSW links when the scoring uses them);
    returns (the bank as the runtime will load it, the HNSW parameters or None)."""
    files = scorer_files("patchcore", tile)
    # the bank as the runtime will load it (dequantized int8 by default): fit and serve agree
    _, served = save_bank(staging, bank, bank_dtype, files["tag"])
    if num_neighbors > 1 and reweighted:  # support sets, looked up
        k = max(1, min(num_neighbors, len(served)))
        save_bank_knn(staging, ExactSearch(served).query(served, k=k)[1], files["tag"])
    params = None
    if hnsw == "yes" or (hnsw == "auto" and served.shape[0] > HNSW_CROSSOVER):
        params = build_hnsw_index(served, staging / files["index"], seed=seed)
        strip_vectors(staging / files["index"], served)  # the bank is in its own file already
    return served, params


def add_patchcore_bank(staging: Path, pc: dict, fit: PatchCoreFit, tile: int | None, *, bank_dtype: str,
                       num_neighbors: int, reweighted: bool, hnsw: str, seed: int,
                       patches_per_map: int, maps_per_image: int) -> FoldSource:
    """Write one fitted bank and record it in the manifest's ``patchcore`` section ``pc``
    (covering radius and coreset time accumulate over the banks of a tiled model); returns what
    its out-of-fold scorers are built from."""
    bank, params = write_patchcore_bank(staging, fit.bank, tile, bank_dtype=bank_dtype, num_neighbors=num_neighbors,
                                        reweighted=reweighted, hnsw=hnsw, seed=seed)
    pc["covering_radius"] = max(pc["covering_radius"], fit.covering_radius)
    pc["coreset_seconds"] = round(pc["coreset_seconds"] + fit.coreset_seconds, 2)
    if params is not None:
        pc["hnsw"], pc["hnsw_file"] = params, "links-only"
    return FoldSource(bank=bank, row_image=row_images(fit.indices, patches_per_map, maps_per_image))


def record_search(pc: dict, rows_per_bank: int, bank_dtype: str) -> None:
    """The search backend the runtime picks by default for banks of this size (manifest ``search``)."""
    pc["search"] = {"auto": choose_backend(rows_per_bank, "hnsw" in pc, bank_dtype == "int8"),
                    "hnsw_crossover_rows": HNSW_CROSSOVER}


def write_padim_gaussians(staging: Path, groups: list[tuple[int | None, np.ndarray]], dtype: str) -> dict:
    """Fit and write PaDiM's Gaussians per tile group; returns the manifest's ``padim`` section
    plus ``positions`` (the bank size)."""
    size = positions = 0
    for tile, feats in groups:
        mean, precision = fit_padim(feats, dtype=dtype)
        np.savez(staging / scorer_files("padim", tile)["gaussian"], mean=mean, precision=precision)
        size += mean.nbytes + precision.nbytes
        positions += mean.shape[0]
    return {"d": int(mean.shape[1]), "positions": int(positions), "eps": 0.01,
            "precision_dtype": dtype, "bytes": int(size)}
