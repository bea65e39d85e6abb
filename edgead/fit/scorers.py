"""Fitting the scorers from training features: PatchCore memory bank, PaDiM Gaussians."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgead.fit.coreset import coreset_size, greedy_coreset
from edgead.scorer.padim import PadimGaussian, PadimScorer
from edgead.scorer.search.base import direct_distances
from edgead.scorer.search.exact import ExactSearch


@dataclass
class PatchCoreFit:
    bank: np.ndarray  # (M, D) float32
    patches: int
    covering_radius: float
    coreset_seconds: float
    indices: np.ndarray  # (M,) the bank's rows as indices into the training patch rows


def select_bank(patches: np.ndarray, coreset: float | int = 0.1, proj_dim: int | None = 128, seed: int = 0,
                progress: bool = False, max_size: int | None = None) -> PatchCoreFit:
    """Patch rows (N, D) (an array or a memmap) -> coreset-subsampled memory bank, at most
    ``max_size`` rows (the absolute cap keeps banks of tiled / high-resolution models bounded)."""
    size = coreset_size(len(patches), coreset)
    if max_size is not None:
        size = min(size, max(1, int(max_size)))
    result = greedy_coreset(patches, size, proj_dim=proj_dim, seed=seed, progress=progress)
    # greedy order: every prefix of the bank is itself a k-center cover of the rest (the int8
    # search bounds the image score with the first rows, edgead.scorer.search.int8.Int8Search.max_nn)
    bank = np.asarray(patches[result.indices], dtype=np.float32)
    return PatchCoreFit(bank, len(patches), result.covering_radius, result.seconds, result.indices)


def patch_rows(features: np.ndarray) -> np.ndarray:
    """(N, D, h, w) feature maps -> (N*h*w, D) float32 patch rows, image-major then row-major."""
    n, d, h, w = features.shape
    return np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(-1, d), dtype=np.float32)


def fit_patchcore(features: np.ndarray, coreset: float | int = 0.1, proj_dim: int | None = 128,
                  seed: int = 0, progress: bool = False, max_size: int | None = None) -> PatchCoreFit:
    """features (N, D, h, w) -> the memory bank (:func:`select_bank` of their patch rows)."""
    return select_bank(patch_rows(features), coreset, proj_dim, seed, progress, max_size)


def padim_channel_index(total: int, d: int, seed: int = 0) -> list[int]:
    """Seeded random subset of d channels (sorted), as in PaDiM."""
    if d >= total:
        return list(range(total))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(total, size=d, replace=False))


def fit_padim(features: np.ndarray, eps: float = 0.01, dtype: str = "float16") -> tuple[np.ndarray, np.ndarray]:
    """features (N, d, h, w) -> mean (h*w, d) float32, precision (h*w, d, d) of cov + eps*I."""
    n, d, h, w = features.shape
    if n < 2:
        raise ValueError("PaDiM needs at least 2 training images")
    x = features.reshape(n, d, h * w).transpose(2, 0, 1).astype(np.float64)  # (P, N, d)
    mean = x.mean(axis=1)
    xc = x - mean[:, None, :]
    cov = np.einsum("pni,pnj->pij", xc, xc) / (n - 1)
    cov += eps * np.eye(d)[None]
    precision = np.linalg.inv(cov)
    return mean.astype(np.float32), precision.astype(dtype)


def padim_scorer(groups: list[np.ndarray], input_size: tuple[int, int], map_sigma: float,
                 dtype: str = "float16") -> PadimScorer:
    """A frame scorer from PaDiM Gaussians fitted on each group's features (N, d, h, w): one
    shared group, or one per tile position."""
    return PadimScorer([PadimGaussian(*fit_padim(f, dtype=dtype)) for f in groups], input_size, map_sigma)


def tile_groups(feats: np.ndarray, tiling) -> list[tuple[int | None, np.ndarray]]:
    """Training features (images x tiles, D, h, w) -> [(tile position or None, its features)]:
    one group for a shared bank, one per tile position otherwise (``tiling``: edgead.tiling.TilingConfig)."""
    if tiling.bank_count == 1:
        return [(None, feats)]
    per_image = feats.reshape(-1, tiling.count, *feats.shape[1:])
    return [(t, per_image[:, t]) for t in range(tiling.count)]


def grow_bank(bank: np.ndarray, new: np.ndarray, radius: float,
              max_rows: int | None = None) -> tuple[np.ndarray, float]:
    """Fold new good patches into a memory bank: the greedy k-center step continued from the
    bank's rows as fixed centres, adding the new patch farthest from the bank until every new
    patch lies within ``radius`` or the bank holds ``max_rows``.

    A marked false reject's patches that the bank already covers add nothing; the ones it does
    not cover join it, so the same part then scores like the training parts. Returns (the grown
    bank, the new patches' covering radius)."""
    bank = np.asarray(bank, dtype=np.float32)
    new = np.ascontiguousarray(new, dtype=np.float32)
    if len(new) == 0:
        return bank, 0.0
    dist = ExactSearch(bank).query(new, k=1)[0][:, 0]   # each new patch's distance to the bank
    room = len(new) if max_rows is None else max(0, int(max_rows) - len(bank))
    chosen: list[int] = []
    while len(chosen) < room:
        i = int(np.argmax(dist))
        if dist[i] <= radius:
            break
        chosen.append(i)
        np.minimum(dist, direct_distances(new[i], new), out=dist)
    grown = np.concatenate([bank, new[chosen]]) if chosen else bank
    return grown, float(dist.max())


def bank_spacing(bank: np.ndarray, sample: int = 2048, seed: int = 0) -> float:
    """Median distance from a bank row to its nearest other row (on a seeded sample of rows): how
    far apart the bank's rows typically are, the scale at which a new patch counts as covered."""
    bank = np.asarray(bank, dtype=np.float32)
    if len(bank) < 2:
        return 0.0
    rows = np.random.default_rng(seed).choice(len(bank), size=min(sample, len(bank)), replace=False)
    nearest = ExactSearch(bank).query(bank[rows], k=2)[0][:, 1]   # the first is the row itself
    return float(np.median(nearest))
