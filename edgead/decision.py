"""The decision stage: threshold -> ok / reject, and the normalised score (1.0 = threshold)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from edgead.errors import ConfigError
from edgead.result import ScoreResult


class Decision:
    """A fixed threshold on the raw anomaly score."""

    def __init__(self, threshold: float):
        threshold = float(threshold)
        if not math.isfinite(threshold) or threshold <= 0:
            raise ConfigError(f"threshold {threshold}: must be a positive finite number")
        self.threshold = threshold

    def normalize(self, score: float) -> float:
        return float(score) / self.threshold

    def result(self, score: float, anomaly_map: np.ndarray | None, timings: dict,
               map_fn: Callable[[], np.ndarray] | None = None) -> ScoreResult:
        return ScoreResult(
            score=float(score),
            normalized_score=self.normalize(score),
            threshold=self.threshold,
            is_anomaly=bool(score > self.threshold),
            anomaly_map=anomaly_map,
            timings_ms=timings,
            map_fn=map_fn,
        )
