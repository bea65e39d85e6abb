"""PaDiM scoring (Defard et al.): per-position Gaussian, Mahalanobis distance map."""

from __future__ import annotations

import numpy as np


def mahalanobis_map(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """features (d, h, w), mean (h*w, d), precision (h*w, d, d) -> distances (h, w) float32."""
    d, h, w = features.shape
    x = features.reshape(d, h * w).T.astype(np.float32, copy=False)
    delta = x - mean
    tmp = np.matmul(delta[:, None, :], precision)[:, 0, :]
    m2 = np.einsum("pd,pd->p", tmp, delta)
    return np.sqrt(np.clip(m2, 0.0, None)).reshape(h, w).astype(np.float32)


class PadimScorer:
    """Holds means and precision matrices (float32 in memory)."""

    method = "padim"

    def __init__(self, mean: np.ndarray, precision: np.ndarray):
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.precision = np.ascontiguousarray(precision, dtype=np.float32)

    def patch_scores(self, features: np.ndarray) -> np.ndarray:
        return mahalanobis_map(features, self.mean, self.precision)
