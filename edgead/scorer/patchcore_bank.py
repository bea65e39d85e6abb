"""One PatchCore memory bank (Roth et al.): nearest-neighbour patch distances and the image score.

:class:`edgead.scorer.patchcore.PatchCoreScorer` holds one of these per bank (shared by every
tile, or one per tile position) and combines them over a frame's tiles.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgead.errors import ArtifactError
from edgead.scorer.search.base import NearestNeighbourSearch
from edgead.scorer.search.registry import make_search


def softmax_reweight(test_to_support: np.ndarray) -> float:
    """Weight ``1 - softmax(d)[0]`` from the distances of the test patch m_test* to the support set
    N_b(m*) (m* first, then its nearest memory-bank neighbours), as in the paper's eq. 7."""
    d = np.asarray(test_to_support, dtype=np.float64)
    e = np.exp(d - d.max())
    return float(1.0 - e[0] / e.sum())


IMAGE_SCORE_RULES = ("reweighted", "topk_mean")


def topk_mean(distances: np.ndarray, k: int) -> float:
    """The mean of the ``k`` largest patch distances (all of them when there are fewer)."""
    flat = np.asarray(distances).reshape(-1)
    k = min(int(k), flat.size)
    return float(np.mean(np.partition(flat, flat.size - k)[flat.size - k:], dtype=np.float64))


class PatchCoreBank:
    """Scores a (D, h, w) feature map against a memory bank."""

    def __init__(self, bank: np.ndarray | None, *, num_neighbors: int = 9, backend: str = "auto",
                 index_path: Path | None = None, hnsw_params: dict | None = None, threads: int = 1,
                 quantized: tuple | None = None, bank_knn: np.ndarray | None = None,
                 image_score: dict | None = None):
        """``quantized``: the int8 (codes, scale, mean) the bank was stored as, if it was
        (edgead.bank.store); the int8 search then multiplies with them as they are, and
        ``bank`` may be None (dequantized only for the exact and hnsw backends).
        ``bank_knn``: each row's nearest bank rows (itself first), from export; without it the
        support set of the reweighting is searched per frame.  ``image_score``: the manifest's
        rule, ``{"rule": "reweighted"}`` (the paper's, default) or ``{"rule": "topk_mean",
        "k": 10}`` (mean of the k largest patch distances)."""
        rule = dict(image_score or {"rule": "reweighted"})
        if rule.get("rule") not in IMAGE_SCORE_RULES:
            raise ArtifactError(f"unknown PatchCore image score rule {rule.get('rule')!r}: expected one of "
                                f"{', '.join(IMAGE_SCORE_RULES)}")
        self.rule = rule["rule"]
        self.topk = max(1, int(rule.get("k", 10)))
        # the search holds the bank (a float32 view for exact/hnsw, only the int8 codes for int8):
        # the caller's arrays can be freed, one bank in memory
        if bank is not None:
            bank = np.ascontiguousarray(bank, dtype=np.float32)
        elif quantized is None:
            raise ArtifactError("PatchCore needs a memory bank (float or int8)")
        self.search: NearestNeighbourSearch = make_search(
            bank, backend=backend, index_path=index_path, hnsw_params=hnsw_params, threads=threads,
            quantized=quantized, bank_knn=bank_knn,
        )
        self.bank_rows = int(bank.shape[0] if bank is not None else quantized[0].shape[0])
        del bank
        use_knn = bank_knn is not None and bank_knn.shape[1] >= min(int(num_neighbors), self.bank_rows)
        self.bank_knn = bank_knn if use_knn else None
        self.num_neighbors = max(1, min(int(num_neighbors), self.bank_rows))

    def patch_scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """features (D, h, w) -> (patch NN distances (h, w), NN indices (h*w,), patches (h*w, D))."""
        _, h, w = features.shape
        patches = self._patches(features)
        # the image score's distances exact (the top-k mean's k, the reweighted maximum's one)
        dist, idx = self.search.query(patches, k=1, certify=self.topk if self.rule == "topk_mean" else 1)
        return dist[:, 0].reshape(h, w), idx[:, 0], patches

    def image_score(self, patch_dist: np.ndarray, nn_index: np.ndarray, patches: np.ndarray) -> float:
        """reweighted: s = (1 - softmax weight) * max patch distance; the weight uses the b nearest
        memory-bank neighbours of m* (the bank row nearest to the most anomalous patch).
        topk_mean: the mean of the k largest patch distances."""
        if self.rule == "topk_mean":
            return topk_mean(patch_dist, self.topk)
        flat = patch_dist.reshape(-1)
        i_star = int(np.argmax(flat))
        return self._reweighted(patches, i_star, float(flat[i_star]), int(nn_index[i_star]))

    def image_score_only(self, features: np.ndarray) -> tuple[float, float]:
        """features (D, h, w) -> (the same image score as :meth:`image_score`, ms spent searching),
        from the largest patch distances alone (``topk_nn``: a search with ``partial_top``
        certifies them without searching every patch); the anomaly map needs :meth:`patch_scores`."""
        if self.rule == "topk_mean":
            top, search_ms = self.top_distances(features)
            return topk_mean(top, self.topk), search_ms
        patches, t0 = self._patches(features), time.perf_counter()
        top, dist, rows = self.search.topk_nn(patches, 1)
        search_ms = (time.perf_counter() - t0) * 1e3
        return self._reweighted(patches, int(top[0]), float(dist[0]), int(rows[0])), search_ms

    def top_distances(self, features: np.ndarray, k: int | None = None) -> tuple[np.ndarray, float]:
        """features (D, h, w) -> (the ``k`` (default ``topk``) largest patch NN distances, exact,
        largest first; ms spent searching)."""
        patches, t0 = self._patches(features), time.perf_counter()
        dist = self.search.topk_nn(patches, min(k or self.topk, len(patches)))[1]
        return dist, (time.perf_counter() - t0) * 1e3

    @property
    def nbytes(self) -> int:
        return int(self.search.nbytes + (self.bank_knn.nbytes if self.bank_knn is not None else 0))

    @staticmethod
    def _patches(features: np.ndarray) -> np.ndarray:
        d, h, w = features.shape
        return np.ascontiguousarray(features.reshape(d, h * w).T, dtype=np.float32)

    def _reweighted(self, patches: np.ndarray, i_star: int, s_star: float, m_star: int) -> float:
        if self.num_neighbors == 1:
            return s_star
        if self.bank_knn is not None:
            support = self.bank_knn[m_star, : self.num_neighbors]
        else:
            _, support = self.search.query(self.search.vectors(np.array([m_star])), k=self.num_neighbors)
            support = support[0]
        # m* first (it is its own nearest neighbour unless duplicates tie)
        support = np.concatenate(([m_star], support[support != m_star]))[: self.num_neighbors]
        test_to_support = self.search.distances_to(patches[i_star], support)
        return softmax_reweight(test_to_support) * s_star
