"""SPADE scoring (Cohen & Hoshen, "Sub-Image Anomaly Detection with Deep Pyramid Correspondences").

Image score: the mean distance of the frame's global feature (its patch features averaged over
the grid) to the ``k`` nearest training images' global features.  Anomaly map: each patch's
distance to its nearest patch feature among the ``map_images`` nearest training images' feature
maps (any position: the pyramid correspondence), searched with the runtime's exact search.

The decision needs the global kNN alone (N training images: microseconds); the map, which
searches ``map_images x h x w`` rows per patch, is computed when asked for.  Every training
image's feature map is kept, as int8 codes with one scale per row (edgead.scorer.int8_search's
quantization): memory grows with the training set, N x h x w x D bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.errors import ArtifactError
from edgead.scorer.int8_search import dequantize_bank, quantize_bank
from edgead.scorer.nn_search import ExactSearch

KEYS = ("globals", "codes", "scale", "mean", "grid")


def gallery_arrays(features: np.ndarray) -> dict[str, np.ndarray]:
    """Training features (N, D, h, w) -> the arrays of a SPADE gallery file."""
    n, d, h, w = features.shape
    codes, scale, mean = quantize_bank(features.transpose(0, 2, 3, 1).reshape(-1, d))
    return {"globals": features.mean(axis=(2, 3), dtype=np.float64).astype(np.float32), "codes": codes,
            "scale": scale, "mean": mean, "grid": np.array([h, w], dtype=np.int64)}


class SpadeScorer:
    method = "spade"

    def __init__(self, arrays: dict[str, np.ndarray], k: int = 50, map_images: int = 5):
        self.globals = np.ascontiguousarray(arrays["globals"], dtype=np.float32)
        n, d = self.globals.shape
        h, w = (int(v) for v in arrays["grid"])
        if arrays["codes"].shape != (n * h * w, d) or arrays["scale"].shape != (n * h * w,) or n < 1:
            raise ArtifactError(f"SPADE gallery: {n} images of {h}x{w} patches x {d} do not match codes "
                                f"{arrays['codes'].shape}, scale {arrays['scale'].shape}")
        self.codes = arrays["codes"].reshape(n, h * w, d)
        self.scale = arrays["scale"].reshape(n, h * w)
        self.mean = arrays["mean"]
        self.k, self.map_images = min(int(k), n), min(int(map_images), n)
        self.images = ExactSearch(self.globals)

    @classmethod
    def load(cls, path: Path, k: int, map_images: int) -> "SpadeScorer":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {key: z[key] for key in KEYS}
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{path}: unreadable ({exc})") from None
        return cls(arrays, k, map_images)

    @property
    def nbytes(self) -> int:
        return self.globals.nbytes + self.codes.nbytes + self.scale.nbytes

    def nearest_images(self, features: np.ndarray) -> tuple[float, np.ndarray]:
        """features (D, h, w) -> (image score: mean distance to the k nearest global features,
        the ``map_images`` nearest training images)."""
        g = features.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)[None]
        dist, idx = self.images.query(g, k=self.k)
        return float(dist[0].mean()), idx[0, : self.map_images]

    def patch_scores(self, features: np.ndarray, images: np.ndarray) -> np.ndarray:
        """features (D, h, w) -> each patch's distance to the nearest patch of ``images``' maps (h, w)."""
        d, h, w = features.shape
        gallery = dequantize_bank(self.codes[images].reshape(-1, d), self.scale[images].reshape(-1), self.mean)
        patches = np.ascontiguousarray(features.reshape(d, h * w).T, dtype=np.float32)
        return ExactSearch(gallery).query(patches, k=1)[0][:, 0].reshape(h, w)
