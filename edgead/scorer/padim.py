"""PaDiM scoring (Defard et al.): per-position Gaussian, Mahalanobis distance map.

The image score is the largest value of the smoothed anomaly map over the frame's tiles.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgead.errors import ArtifactError
from edgead.manifest import Manifest, scorer_files
from edgead.scorer.anomaly_map import upsample_and_smooth
from edgead.scorer.protocol import FrameScore
from edgead.scorer.registry import register_scorer


def mahalanobis_map(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """features (d, h, w), mean (h*w, d), precision (h*w, d, d) -> distances (h, w) float32."""
    d, h, w = features.shape
    x = features.reshape(d, h * w).T.astype(np.float32, copy=False)
    delta = x - mean
    tmp = np.matmul(delta[:, None, :], precision)[:, 0, :]
    m2 = np.einsum("pd,pd->p", tmp, delta)
    return np.sqrt(np.clip(m2, 0.0, None)).reshape(h, w).astype(np.float32)


class PadimGaussian:
    """One set of per-position means and precision matrices (float32 in memory)."""

    def __init__(self, mean: np.ndarray, precision: np.ndarray):
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.precision = np.ascontiguousarray(precision, dtype=np.float32)

    @classmethod
    def load(cls, path: Path) -> PadimGaussian:
        try:
            with np.load(path, allow_pickle=False) as g:
                return cls(g["mean"], g["precision"])
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{path}: unreadable ({exc})") from None

    def patch_scores(self, features: np.ndarray) -> np.ndarray:
        return mahalanobis_map(features, self.mean, self.precision)


@register_scorer
class PadimScorer:
    """PaDiM Gaussians of an artifact (shared by every tile, or one per tile position)."""

    method = "padim"
    backend = "mahalanobis"

    def __init__(self, gaussians: list[PadimGaussian], input_size: tuple[int, int], map_sigma: float):
        self.gaussians = gaussians
        self.input_size = tuple(input_size)
        self.map_sigma = float(map_sigma)

    @classmethod
    def from_artifact(cls, model_dir: Path, manifest: Manifest, *, search: str = "auto",
                      threads: int = 1) -> PadimScorer:
        gaussians = [PadimGaussian.load(model_dir / scorer_files(cls.method, t)["gaussian"])
                     for t in manifest.scorer_tiles()]
        return cls(gaussians, manifest.preprocess.input_size, manifest.map_sigma)

    @property
    def nbytes(self) -> int:
        return sum(g.mean.nbytes + g.precision.nbytes for g in self.gaussians)

    def patch_scores(self, feats: np.ndarray) -> np.ndarray:
        gaussians = self.gaussians if len(self.gaussians) > 1 else self.gaussians * len(feats)
        return np.stack([g.patch_scores(f) for g, f in zip(gaussians, feats)])

    def score(self, feats: np.ndarray, *, with_map: bool = True, lazy: bool = False) -> FrameScore:
        t0 = time.perf_counter()
        dists = self.patch_scores(feats)
        t1 = time.perf_counter()
        maps = np.stack([upsample_and_smooth(d, self.input_size, self.map_sigma) for d in dists])
        score = float(maps.max())
        t2 = time.perf_counter()
        return FrameScore(score, maps, (t1 - t0) * 1e3, (t2 - t1) * 1e3)
