"""SPADE scoring (Cohen & Hoshen, "Sub-Image Anomaly Detection with Deep Pyramid Correspondences").

Image score: the mean distance of the frame's global feature (its patch features averaged over
the grid) to the ``k`` nearest training images' global features.  Anomaly map: each patch's
distance to its nearest patch feature among the ``map_images`` nearest training images' feature
maps (any position: the pyramid correspondence), searched with the runtime's exact search.

The decision needs the global kNN alone (N training images: microseconds); the map, which
searches ``map_images x h x w`` rows per patch, is computed when asked for.  Every training
image's feature map is kept, as int8 codes with one scale per row (edgead.bank.codes): memory grows with the training set, N x h x w x D bytes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgead.bank.codes import dequantize_bank, quantize_bank
from edgead.errors import ArtifactError
from edgead.manifest import Manifest, SpadeInfo, scorer_files
from edgead.scorer.anomaly_map import upsample_and_smooth
from edgead.scorer.protocol import FrameScore
from edgead.scorer.registry import register_scorer
from edgead.scorer.search.exact import ExactSearch

KEYS = ("globals", "codes", "scale", "mean", "grid")


def gallery_arrays(features: np.ndarray) -> dict[str, np.ndarray]:
    """Training features (N, D, h, w) -> the arrays of a SPADE gallery file."""
    _, d, h, w = features.shape
    codes, scale, mean = quantize_bank(features.transpose(0, 2, 3, 1).reshape(-1, d))
    return {"globals": features.mean(axis=(2, 3), dtype=np.float64).astype(np.float32), "codes": codes,
            "scale": scale, "mean": mean, "grid": np.array([h, w], dtype=np.int64)}


class SpadeGallery:
    """Every training image's global feature and int8 feature map."""

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
    def load(cls, path: Path, k: int, map_images: int) -> SpadeGallery:
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


@register_scorer
class SpadeScorer:
    """SPADE over whole frames (export refuses tiles for it)."""

    method = "spade"
    backend = "exact"

    def __init__(self, gallery: SpadeGallery, input_size: tuple[int, int], map_sigma: float):
        self.gallery = gallery
        self.input_size, self.map_sigma = tuple(input_size), float(map_sigma)

    @classmethod
    def from_artifact(cls, model_dir: Path, manifest: Manifest, *, search: str = "auto",
                      threads: int = 1) -> SpadeScorer:
        section = manifest.spade or SpadeInfo()
        gallery = SpadeGallery.load(model_dir / scorer_files(cls.method)["gallery"], section.k, section.map_images)
        return cls(gallery, manifest.preprocess.input_size, manifest.map_sigma)

    @property
    def nbytes(self) -> int:
        return self.gallery.nbytes

    def patch_scores(self, feats: np.ndarray) -> np.ndarray:
        return np.stack([self.gallery.patch_scores(f, self.gallery.nearest_images(f)[1]) for f in feats])

    def score(self, feats: np.ndarray, *, with_map: bool = True, lazy: bool = False) -> FrameScore:
        """The decision from the global kNN alone; the map (the patch search) now or when asked."""
        t0 = time.perf_counter()
        score, images = self.gallery.nearest_images(feats[0])
        t1 = time.perf_counter()

        def maps() -> np.ndarray:
            patch = self.gallery.patch_scores(feats[0], images)
            return upsample_and_smooth(patch, self.input_size, self.map_sigma)[None]

        out = None if not with_map else maps if lazy else maps()
        return FrameScore(score, out, (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3)
