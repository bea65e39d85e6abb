"""SimpleNet scoring (Liu et al.): the backbone graph already ends in the discriminator.

The exported graph outputs one anomaly score per patch (``softplus(-D)`` of the adapted
feature): no memory bank and no search, the scorer only reads the map.  Image score: the
maximum of the smoothed map (the paper's) or the mean of the k largest patch scores.
"""

from __future__ import annotations

import numpy as np

from edgead.errors import ArtifactError
from edgead.scorer.patchcore import topk_mean

RULES = ("max", "topk_mean")


class SimpleNetScorer:
    method = "simplenet"

    def __init__(self, image_score: dict | None = None):
        rule = dict(image_score or {"rule": "max"})
        if rule.get("rule") not in RULES:
            raise ArtifactError(f"unknown SimpleNet image score rule {rule.get('rule')!r}: expected one of "
                                f"{', '.join(RULES)}")
        self.rule = rule["rule"]
        self.topk = max(1, int(rule.get("k", 10)))

    def patch_scores(self, scores: np.ndarray) -> np.ndarray:
        """The graph's output for one tile (1, h, w) -> patch scores (h, w)."""
        if scores.ndim != 3 or scores.shape[0] != 1:
            raise ArtifactError(f"SimpleNet expects the graph to output 1 score channel, got shape {scores.shape}")
        return scores[0]

    def image_score(self, patch_scores: list[np.ndarray], maps: np.ndarray) -> float:
        """Every tile's patch scores and smoothed maps -> the image score."""
        if self.rule == "topk_mean":
            return topk_mean(np.concatenate([p.reshape(-1) for p in patch_scores]), self.topk)
        return float(maps.max())
