"""Fitting the scorers from training features: PatchCore memory bank, PaDiM Gaussians."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgead_export.coreset import coreset_size, greedy_coreset


@dataclass
class PatchCoreFit:
    bank: np.ndarray  # (M, D) float32
    patches: int
    covering_radius: float
    coreset_seconds: float


def fit_patchcore(features: np.ndarray, coreset: float | int = 0.1, proj_dim: int | None = 128,
                  seed: int = 0, progress: bool = False, max_size: int | None = None) -> PatchCoreFit:
    """features (N, D, h, w) -> coreset-subsampled memory bank of patch features, at most
    ``max_size`` rows (the absolute cap keeps banks of tiled / high-resolution models bounded)."""
    n, d, h, w = features.shape
    patches = np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(-1, d), dtype=np.float32)
    size = coreset_size(len(patches), coreset)
    if max_size is not None:
        size = min(size, max(1, int(max_size)))
    result = greedy_coreset(patches, size, proj_dim=proj_dim, seed=seed, progress=progress)
    # greedy order: every prefix of the bank is itself a k-center cover of the rest (the int8
    # search bounds the image score with the first rows, edgead.scorer.search.int8.Int8Search.max_nn)
    bank = patches[result.indices]
    return PatchCoreFit(bank, len(patches), result.covering_radius, result.seconds)


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
