"""PatchCore over a frame's tiles: the scorer the inspection model uses for ``method = "patchcore"``.

One :class:`~edgead.scorer.patchcore_bank.PatchCoreBank` shared by every tile (its patches are
searched together), or one per tile position.  Image score: ``reweighted`` takes the largest
over tiles, ``topk_mean`` the mean of the k largest patch distances over all tiles' patches.
When the bank's search can certify the largest distances alone (``partial_top``, the int8
search), ``lazy`` scoring searches only those and leaves the anomaly maps, which need every
patch's nearest neighbour, to a function called when they are wanted.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgead.bank.store import load_bank, load_bank_knn
from edgead.manifest import Manifest, scorer_files
from edgead.scorer.anomaly_map import upsample_and_smooth
from edgead.scorer.patchcore_bank import PatchCoreBank, topk_mean
from edgead.scorer.protocol import FrameScore
from edgead.scorer.registry import register_scorer


def stacked(feats: np.ndarray) -> np.ndarray:
    """(tiles, D, h, w) -> (D, tiles*h, w): every tile's patches, for one search of a shared bank."""
    n, d, h, w = feats.shape
    return feats[0] if n == 1 else feats.transpose(1, 0, 2, 3).reshape(d, n * h, w)


@register_scorer
class PatchCoreScorer:
    """PatchCore banks of an artifact, scoring whole frames (see the module doc)."""

    method = "patchcore"

    def __init__(self, banks: list[PatchCoreBank], input_size: tuple[int, int], map_sigma: float):
        self.banks = banks
        self.input_size = tuple(input_size)
        self.map_sigma = float(map_sigma)

    @property
    def rule(self) -> str:
        """The image score rule (the manifest's, the same for every bank)."""
        return self.banks[0].rule

    @property
    def topk(self) -> int:
        return self.banks[0].topk

    @classmethod
    def from_artifact(cls, model_dir: Path, manifest: Manifest, *, search: str = "auto",
                      threads: int = 1) -> PatchCoreScorer:
        pc = manifest.pc
        banks = []
        for tile in manifest.scorer_tiles():
            files = scorer_files(cls.method, tile)
            index = model_dir / files["index"]
            bank, quantized = load_bank(model_dir, manifest.files, files["tag"], dequantize=False)
            rows = len(bank) if bank is not None else len(quantized[0])
            banks.append(PatchCoreBank(
                bank,
                quantized=quantized,
                bank_knn=load_bank_knn(model_dir, manifest.files, rows, files["tag"]),
                image_score=pc.image_score.model_dump(exclude_none=True),
                num_neighbors=pc.num_neighbors,
                backend=search,
                index_path=index if index.is_file() else None,
                hnsw_params=pc.hnsw.model_dump(exclude_none=True) if pc.hnsw is not None else None,
                threads=threads,
            ))
            del bank, quantized
        return cls(banks, manifest.preprocess.input_size, manifest.map_sigma)

    @property
    def backend(self) -> str:
        return self.banks[0].search.name

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.banks)

    def tile_banks(self, tiles: int) -> list[PatchCoreBank]:
        """The bank of each tile: one per tile position, or the shared one for every tile."""
        return self.banks if len(self.banks) > 1 else self.banks * tiles

    def _groups(self, feats: np.ndarray) -> list[tuple[PatchCoreBank, np.ndarray]]:
        """(bank, its patch features (D, h', w)): the shared bank with every tile's patches, or
        each tile position's bank with its tile."""
        return [(self.banks[0], stacked(feats))] if len(self.banks) == 1 else list(zip(self.banks, feats))

    def tile_patches(self, feats: np.ndarray) -> list[tuple]:
        """Per tile: (bank, patch distances (h, w), NN indices, patches); a shared bank is
        searched once for all tiles' patches."""
        n, d, h, w = feats.shape
        if len(self.banks) > 1:
            return [(b, *b.patch_scores(f)) for b, f in zip(self.banks, feats)]
        bank = self.banks[0]
        dist, idx, patches = bank.patch_scores(stacked(feats))
        dist, idx, patches = dist.reshape(n, h, w), idx.reshape(n, h * w), patches.reshape(n, h * w, d)
        return [(bank, dist[i], idx[i], patches[i]) for i in range(n)]

    def patch_scores(self, feats: np.ndarray) -> np.ndarray:
        return np.stack([t[1] for t in self.tile_patches(feats)])

    def top_distances(self, feats: np.ndarray, k: int | None = None) -> tuple[np.ndarray, float]:
        """The ``k`` (default ``topk``) largest patch distances of the frame (all tiles), exact,
        largest first; ms spent searching."""
        k = k or self.topk
        tops = [b.top_distances(f, k) for b, f in self._groups(feats)]
        return np.sort(np.concatenate([t[0] for t in tops]))[::-1][:k], sum(t[1] for t in tops)

    def _image_score(self, tiles: list[tuple]) -> float:
        """The image score from every tile's full search (``tile_patches``)."""
        if self.rule == "topk_mean":
            return topk_mean(np.concatenate([t[1].reshape(-1) for t in tiles]), self.topk)
        return max(b.image_score(dist, idx, patches) for b, dist, idx, patches in tiles)

    def score_and_patch_scores(self, feats: np.ndarray) -> tuple[float, np.ndarray]:
        """The image score (as ``score`` without ``lazy``) and the patch scores (tiles, h, w)
        from one search of every patch: for callers that want both (the export's INT8 check)."""
        tiles = self.tile_patches(feats)
        return self._image_score(tiles), np.stack([t[1] for t in tiles])

    def _maps(self, dists: list[np.ndarray]) -> np.ndarray:
        return np.stack([upsample_and_smooth(d, self.input_size, self.map_sigma) for d in dists])

    def score(self, feats: np.ndarray, *, with_map: bool = True, lazy: bool = False) -> FrameScore:
        t0 = time.perf_counter()
        if lazy and self.banks[0].search.partial_top:
            # the decision needs the image score only: the largest patch distances, certified
            # without searching every patch; the maps (every patch searched) wait until asked for
            if self.rule == "topk_mean":  # the k largest over the whole frame, all tiles
                tops = [b.top_distances(f) for b, f in self._groups(feats)]
                score = topk_mean(np.concatenate([t[0] for t in tops]), self.topk)
                results = [(score, t[1]) for t in tops]
            else:  # reweighted: per tile, image score = max over tiles
                results = [b.image_score_only(f) for b, f in zip(self.tile_banks(len(feats)), feats)]
                score = max(r[0] for r in results)
            t1 = t0 + sum(r[1] for r in results) / 1e3  # search time; the rest is the reweighting
            maps = (lambda: self._maps([t[1] for t in self.tile_patches(feats)])) if with_map else None
        else:
            tiles = self.tile_patches(feats)
            t1 = time.perf_counter()
            score = self._image_score(tiles)
            dists = [t[1] for t in tiles]
            maps = None if not with_map else (lambda: self._maps(dists)) if lazy else self._maps(dists)
        t2 = time.perf_counter()
        return FrameScore(score, maps, (t1 - t0) * 1e3, (t2 - t1) * 1e3)
