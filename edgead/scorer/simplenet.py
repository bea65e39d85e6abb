"""SimpleNet scoring (Liu et al.): the backbone graph already ends in the discriminator.

The exported graph outputs one anomaly score per patch (``softplus(-D)`` of the adapted
feature): no memory bank and no search, the scorer only reads the map.  Image score: the
maximum of the smoothed map (the paper's) or the mean of the k largest patch scores.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgead.errors import ArtifactError
from edgead.manifest import Manifest, MapScoreRule
from edgead.scorer.anomaly_map import upsample_and_smooth
from edgead.scorer.patchcore_bank import topk_mean
from edgead.scorer.protocol import FrameScore
from edgead.scorer.registry import register_scorer


@register_scorer
class SimpleNetScorer:
    method = "simplenet"
    backend = "none"  # no search: the discriminator is in the backbone graph
    nbytes = 0

    def __init__(self, image_score: MapScoreRule | None = None, input_size: tuple[int, int] = (224, 224),
                 map_sigma: float = 4.0):
        """``image_score``: the manifest's rule (validated there)."""
        self.input_size, self.map_sigma = tuple(input_size), float(map_sigma)
        rule = image_score or MapScoreRule()
        self.rule, self.topk = rule.rule, rule.k

    @classmethod
    def from_artifact(cls, model_dir: Path, manifest: Manifest, *, search: str = "auto",
                      threads: int = 1) -> SimpleNetScorer:
        section = manifest.simplenet
        rule = section.image_score if section is not None else MapScoreRule()
        return cls(rule, manifest.preprocess.input_size, manifest.map_sigma)

    def patch_scores(self, feats: np.ndarray) -> np.ndarray:
        """The graph's output (tiles, 1, h, w) -> patch scores (tiles, h, w)."""
        if feats.ndim != 4 or feats.shape[1] != 1:
            raise ArtifactError(f"SimpleNet expects the graph to output 1 score channel, got shape {feats.shape}")
        return feats[:, 0]

    def score(self, feats: np.ndarray, *, with_map: bool = True, lazy: bool = False) -> FrameScore:
        t0 = time.perf_counter()
        patch = self.patch_scores(feats)
        if self.rule == "topk_mean":  # the decision without the map
            score = topk_mean(patch, self.topk)
            maps = self._maps(patch) if with_map and not lazy else (lambda: self._maps(patch)) if with_map else None
        else:  # the paper's: the maximum of the smoothed map
            maps = self._maps(patch)
            score = float(maps.max())
            maps = maps if with_map else None
        return FrameScore(score, maps, 0.0, (time.perf_counter() - t0) * 1e3)

    def _maps(self, patch: np.ndarray) -> np.ndarray:
        return np.stack([upsample_and_smooth(p, self.input_size, self.map_sigma) for p in patch])
